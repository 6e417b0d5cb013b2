//! `sirms bench`: a load generator that reproduces the paper's experiment against any SMTP,
//! IMAP or POP3 endpoint. So far: the protocol clients over bounded, deadline-bound line
//! I/O, with their parsing as plain functions over bytes; the messages and recipients of a
//! run; CPU accounting from /proc and latency statistics.

pub mod cpu;
pub mod error;
pub mod imap;
pub mod message;
pub mod pop3;
pub mod recipients;
pub mod rng;
pub mod smtp;
pub mod sources;
pub mod stats;
pub mod wire;

pub use error::Error;
