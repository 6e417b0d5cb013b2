//! POP3 (RFC 1939, RFC 2449, RFC 2595 STLS, RFC 5034 AUTH PLAIN) as a sans-I/O protocol core.
//!
//! [`Session`] turns command lines into response bytes and [`Action`]s for the driver that owns the socket and the
//! store, so every protocol rule can be tested and fuzzed without a network. See [`session`] for the driver contract.

pub mod command;
pub mod connection;
mod maildrop;
mod reply;
pub mod session;
mod top;

pub use command::{Command, CommandError, MAX_ARGUMENT, MAX_COMMAND_LINE, Secret};
pub use maildrop::MaildropEntry;
pub use session::{Action, MAX_SASL_RESPONSE, Next, Outcome, Phase, Session, SessionConfig};
