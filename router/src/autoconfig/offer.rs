//! What the cluster offers mail clients: one host name and, per protocol, the public ports in
//! the order clients should prefer them. Every document (Thunderbird, Autodiscover, Apple) is
//! rendered from this one list, so they cannot disagree.
//!
//! The rules, from what the nodes serve behind the router's `[listen]` ports:
//! - implicit TLS first (IMAPS, POP3S, submissions), then the cleartext port with STARTTLS
//!   (IMAP `STARTTLS`, POP3 `STLS`, submission `STARTTLS`): every node offers both;
//! - never a cleartext login: nodes refuse AUTH before TLS unless `allow_plaintext_auth`,
//!   which is for closed networks and tests;
//! - never port 25: it is the MX, for other servers' mail, not for clients' submissions;
//! - the login is the whole address and the password is sent as is inside TLS (IMAP LOGIN
//!   and AUTH=PLAIN, POP3 USER/PASS, SMTP AUTH PLAIN and LOGIN).

use crate::config::PublicListen;

/// A mail protocol clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
    /// Submission (RFC 6409), on the submission and submissions ports.
    Smtp,
}

/// How a port's connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (RFC 8314).
    Tls,
    /// Cleartext until the client's STARTTLS (STLS for POP3).
    StartTls,
}

/// One way in: a protocol on a public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub port: u16,
    pub security: Security,
}

/// The host and endpoints every document describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The public host name clients connect to.
    pub hostname: String,
    /// The provider's name, if the config gives one (else each document uses the domain).
    pub display_name: Option<String>,
    /// Every endpoint, in order of preference within each protocol.
    pub endpoints: Vec<Endpoint>,
}

impl Offer {
    /// The offer of a router listening on `listen`, known to clients as `hostname`.
    pub fn new(hostname: &str, display_name: Option<&str>, listen: &PublicListen) -> Offer {
        let endpoint = |protocol, port: u16, security| Endpoint { protocol, port, security };
        Offer {
            hostname: hostname.to_ascii_lowercase(),
            display_name: display_name.map(str::to_string),
            endpoints: vec![
                endpoint(Protocol::Imap, listen.imaps.port(), Security::Tls),
                endpoint(Protocol::Imap, listen.imap.port(), Security::StartTls),
                endpoint(Protocol::Pop3, listen.pop3s.port(), Security::Tls),
                endpoint(Protocol::Pop3, listen.pop3.port(), Security::StartTls),
                endpoint(Protocol::Smtp, listen.submissions.port(), Security::Tls),
                endpoint(Protocol::Smtp, listen.submission.port(), Security::StartTls),
            ],
        }
    }

    /// The endpoints of `protocol`, preferred first.
    pub fn of(&self, protocol: Protocol) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(move |e| e.protocol == protocol)
    }

    /// The preferred endpoint of `protocol`, for formats that take one per protocol.
    pub fn preferred(&self, protocol: Protocol) -> Option<&Endpoint> {
        self.of(protocol).next()
    }

    /// The name to show for `domain`'s accounts.
    pub fn display_name<'a>(&'a self, domain: &'a str) -> &'a str {
        self.display_name.as_deref().unwrap_or(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_tls_first_and_never_port_25() {
        let offer = Offer::new("Mail.Example.com", None, &PublicListen::default());
        assert_eq!(offer.hostname, "mail.example.com");
        let imap: Vec<_> = offer.of(Protocol::Imap).map(|e| (e.port, e.security)).collect();
        assert_eq!(imap, [(2993, Security::Tls), (2143, Security::StartTls)]);
        assert_eq!(offer.preferred(Protocol::Smtp).map(|e| e.port), Some(2465));
        assert!(offer.endpoints.iter().all(|e| e.port != PublicListen::default().smtp.port()));
        assert_eq!(offer.display_name("example.com"), "example.com");
    }
}
