//! The services the router watches: the mail services it forwards (their names, the
//! router's listening address for each and the node's port for each), and the Store service
//! of storage nodes, which it only probes.

use std::net::{IpAddr, SocketAddr};

use sirms_proto::cluster::Node;

use crate::config::PublicListen;

/// The mail services the router forwards, each to the same service on the chosen node, and
/// the Store service it probes on storage nodes.
// Ord and Hash: health is kept per (node, service), in ordered maps so status lists are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Smtp,
    Submission,
    Submissions,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    /// ManageSieve.
    Sieve,
    /// A storage node's Store gRPC service: probed for failover, never forwarded. Last, and
    /// not in [`Service::ALL`], so that the forwarded services index per-service arrays.
    Store,
}

impl Service {
    /// Every forwarded service (not [`Service::Store`]).
    pub const ALL: [Service; 8] = [
        Service::Smtp,
        Service::Submission,
        Service::Submissions,
        Service::Imap,
        Service::Imaps,
        Service::Pop3,
        Service::Pop3s,
        Service::Sieve,
    ];

    /// How many services there are, [`Service::Store`] included: the length of arrays indexed
    /// by `service as usize`, so that no service can index past one.
    pub const COUNT: usize = Service::ALL.len() + 1;

    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Submissions => "submissions",
            Service::Imap => "imap",
            Service::Imaps => "imaps",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
            Service::Sieve => "sieve",
            Service::Store => "store",
        }
    }

    /// The node's port for this service; 0 if it does not offer it (the Store service is
    /// reached at the node's `store_endpoint`, a URL, not at a port of its host).
    pub fn port(self, node: &Node) -> u32 {
        match self {
            Service::Smtp => node.smtp_port,
            Service::Submission => node.submission_port,
            Service::Submissions => node.submissions_port,
            Service::Imap => node.imap_port,
            Service::Imaps => node.imaps_port,
            Service::Pop3 => node.pop3_port,
            Service::Pop3s => node.pop3s_port,
            Service::Sieve => node.sieve_port,
            Service::Store => 0,
        }
    }

    /// The node's listener for this service at `ip`; `None` if it does not offer it.
    pub fn addr(self, node: &Node, ip: IpAddr) -> Option<SocketAddr> {
        let port = u16::try_from(self.port(node)).ok().filter(|p| *p != 0)?;
        Some(SocketAddr::new(ip, port))
    }

    /// Where the router listens for it; `None` for the Store service, which it does not forward.
    pub fn listen(self, listen: &PublicListen) -> Option<SocketAddr> {
        match self {
            Service::Smtp => Some(listen.smtp),
            Service::Submission => Some(listen.submission),
            Service::Submissions => Some(listen.submissions),
            Service::Imap => Some(listen.imap),
            Service::Imaps => Some(listen.imaps),
            Service::Pop3 => Some(listen.pop3),
            Service::Pop3s => Some(listen.pop3s),
            Service::Sieve => listen.sieve,
            Service::Store => None,
        }
    }
}
