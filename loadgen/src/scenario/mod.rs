//! The benchmarks themselves, one file each: SMTP delivery, IMAP fetch, POP3 retrieve. Each
//! runs the protocol clients, keeps the time and returns its report.

pub mod deliver;
pub mod imap_fetch;
pub mod pop3_retr;
