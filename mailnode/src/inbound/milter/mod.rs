//! Milters: content filters over the Sendmail/Postfix milter protocol (version 6), a generic
//! hook for any filter that speaks it (rspamd's proxy, OpenDKIM, ClamAV's clamav-milter…).

pub mod client;
pub mod codec;

pub use client::{Client, MilterConfig};
