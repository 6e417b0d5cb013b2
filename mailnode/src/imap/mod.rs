//! IMAP4rev1 (RFC 3501) with IDLE, UIDPLUS, MOVE, CONDSTORE and the other extensions mail
//! clients rely on, over a `MailStore`.
//!
//! [`session::Session`] holds the protocol state and runs commands against the store; it
//! writes responses to any `AsyncWrite`, so it is tested without a network.
//! [`connection`] is the socket loop around it: framing with imap-codec's `Fragmentizer`,
//! literal limits, STARTTLS, AUTHENTICATE continuations, IDLE and COMPRESS ([`compress`]). [`extension`] decodes
//! commands: imap-codec, after cutting out the extension syntax it does not know.

pub mod command;
pub mod compress;
pub mod connection;
pub mod error;
pub mod extension;
pub mod flags;
pub mod literal;
pub mod mime;
pub mod mutf7;
pub mod response;
pub mod selected;
pub mod session;

pub use connection::ImapService;
pub use session::{Next, Phase, Session, SessionConfig};
