//! `sirms bench`: a load generator that reproduces the paper's experiment against any SMTP,
//! IMAP or POP3 endpoint. This layer: the protocol clients over bounded, deadline-bound line
//! I/O, with their parsing as plain functions over bytes.

pub mod error;
pub mod imap;
pub mod pop3;
pub mod smtp;
pub mod sources;
pub mod wire;

pub use error::Error;
