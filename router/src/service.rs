//! The mail services the router forwards: their names, the router's listening address for
//! each and the node's port for each.

use std::net::SocketAddr;

use sirms_proto::cluster::Node;

use crate::config::PublicListen;

/// The mail services the router forwards, each to the same service on the chosen node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Smtp,
    Submission,
    Submissions,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
}

impl Service {
    /// Every service.
    pub const ALL: [Service; 7] = [
        Service::Smtp,
        Service::Submission,
        Service::Submissions,
        Service::Imap,
        Service::Imaps,
        Service::Pop3,
        Service::Pop3s,
    ];

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
        }
    }

    /// The node's port for this service; 0 if it does not offer it.
    pub fn port(self, node: &Node) -> u32 {
        match self {
            Service::Smtp => node.smtp_port,
            Service::Submission => node.submission_port,
            Service::Submissions => node.submissions_port,
            Service::Imap => node.imap_port,
            Service::Imaps => node.imaps_port,
            Service::Pop3 => node.pop3_port,
            Service::Pop3s => node.pop3s_port,
        }
    }

    /// Where the router listens for it.
    pub fn listen(self, listen: &PublicListen) -> SocketAddr {
        match self {
            Service::Smtp => listen.smtp,
            Service::Submission => listen.submission,
            Service::Submissions => listen.submissions,
            Service::Imap => listen.imap,
            Service::Imaps => listen.imaps,
            Service::Pop3 => listen.pop3,
            Service::Pop3s => listen.pop3s,
        }
    }
}
