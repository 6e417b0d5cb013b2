//! The mail node: SMTP (MX and submission), IMAP, POP3 and the outbound queue, all over a `MailStore`.

pub mod auth;
pub mod calendar;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod directory;
pub mod header_block;
pub mod hex_escape;
pub mod imap;
pub mod import;
pub mod inbound;
pub mod managesieve;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod pop3;
pub mod proxy;
pub mod queue;
pub mod quota;
pub mod role;
pub mod sieve;
pub mod smtp;
pub mod spill;
pub mod stuffing;
