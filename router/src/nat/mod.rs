//! NAT mode: the router rewrites packets, as the paper's modified kernel did (its Figure 4),
//! in user space, reading them from and writing them to a TUN device.
//!
//! * [`checksum`] — the Internet checksum and its incremental update (RFC 1071, RFC 1624);
//! * [`packet`] — IPv4/TCP/UDP/ICMP parsing, in-place rewriting, the resets the router sends;
//! * [`conntrack`] — the flow table: both directions of each flow, TCP-aware expiry, a limit;
//! * [`translate`] — the decisions over them, with the same table and hashing as proxy mode;
//! * [`tun`] — the device and the loop that drives the translator, the only I/O here.
//!
//! All but `tun` is pure: it takes bytes and the time and returns bytes, so it is
//! unit-tested and fuzzed without a device. How to set up the addresses and routes around
//! the device is in `docs/NAT.md`.

pub mod checksum;
pub mod conntrack;
pub mod packet;
pub mod translate;
pub mod tun;

pub use conntrack::Timeouts;
pub use translate::{Counters, Discard, NatNode, NatView, Translator, Verdict};
