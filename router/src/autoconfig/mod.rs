//! Autoconfiguration: the router's HTTPS listener that tells mail clients how to reach the
//! cluster, and sending servers which MX names to expect TLS from. Every document is rendered
//! from one [`Offer`] (the public host name and the router's `[listen]` ports), and only for
//! domains the cluster hosts, read from the directory on each request (a domain added with
//! `sirms ctl domains add` is answered at once). Whether a user exists is never told.
//!
//! | request | answer |
//! |---|---|
//! | `GET /mail/config-v1.1.xml?emailaddress=A` (Host `autoconfig.DOMAIN`), `GET /.well-known/autoconfig/mail/config-v1.1.xml` | Thunderbird's document ([`thunderbird`]); without `emailaddress`, the domain is the Host's |
//! | `POST /autodiscover/autodiscover.xml` (any case) | Outlook's Autodiscover POX response ([`autodiscover`]) |
//! | `GET /apple/mobileconfig?emailaddress=A` | an Apple configuration profile ([`apple`]) |
//! | `GET /.well-known/mta-sts.txt` (Host `mta-sts.DOMAIN`) | the MTA-STS policy ([`mta_sts`]) |
//!
//! A domain the cluster does not host is 404, a malformed address 400, another path 404,
//! another method 405. HTTP itself (limits, parsing, one request per connection) is
//! `sirms_telemetry::http`, shared with the metrics endpoint; the certificate is loaded and
//! renewed as the nodes' are (`sirms_proto::public_tls`).

pub mod apple;
pub mod autodiscover;
pub mod mta_sts;
pub mod offer;
pub mod thunderbird;
mod xml;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sirms_proto::public_tls::{self, TlsError};
use sirms_telemetry::http::{self, Handler, Request, Response, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{AutoconfigConfig, PublicListen};
use crate::directory::ClusterDirectory;
pub use offer::Offer;

/// What one client may send and for how long: an Autodiscover request is well under 1 KiB.
pub const LIMITS: http::Limits = http::Limits {
    request: http::request::Limits { max_head: 8 * 1024, max_body: 16 * 1024 },
    io_timeout: Duration::from_secs(10),
    max_concurrent: 64,
};

const XML: &str = "text/xml; charset=utf-8";

/// Which domains the cluster hosts.
pub trait Domains: Send + Sync + 'static {
    /// Whether `domain` (lower case) is one of them.
    fn hosts(&self, domain: &str) -> bool;
}

impl Domains for Arc<ClusterDirectory> {
    fn hosts(&self, domain: &str) -> bool {
        self.current().has_domain(domain)
    }
}

/// Why a request gets no document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("the request names no address or domain")]
    NoDomain,
    #[error("{0:?} is not an email address")]
    BadAddress(String),
    #[error("{0} is not a domain of this cluster")]
    UnknownDomain(String),
    #[error("{0}")]
    Autodiscover(#[from] autodiscover::RequestError),
}

impl LookupError {
    fn response(&self) -> Response {
        let status = match self {
            LookupError::UnknownDomain(_) | LookupError::Autodiscover(autodiscover::RequestError::Schema(_)) => 404,
            _ => 400,
        };
        Response::text(status, &self.to_string())
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("[autoconfig.tls]: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} (autoconfig): {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// The documents, for the domains `D` hosts.
pub struct Autoconfig<D> {
    offer: Offer,
    policy: mta_sts::Policy,
    domains: D,
}

/// The documents served, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    Thunderbird,
    Autodiscover,
    Apple,
    MtaSts,
}

impl Document {
    fn of(path: &str) -> Option<Document> {
        if thunderbird::PATHS.contains(&path) {
            Some(Document::Thunderbird)
        } else if autodiscover::PATHS.iter().any(|p| p.eq_ignore_ascii_case(path)) {
            Some(Document::Autodiscover)
        } else if path == apple::PATH {
            Some(Document::Apple)
        } else if path == mta_sts::PATH {
            Some(Document::MtaSts)
        } else {
            None
        }
    }

    /// The methods it is asked with (HEAD with GET, as HTTP wants).
    fn allows(self, method: &str) -> bool {
        match self {
            Document::Autodiscover => method == "POST",
            _ => method == "GET" || method == "HEAD",
        }
    }

    fn allow_header(self) -> &'static str {
        if self == Document::Autodiscover { "POST" } else { "GET, HEAD" }
    }
}

impl<D: Domains> Autoconfig<D> {
    /// The documents `config` describes, for a router listening on `listen`.
    pub fn new(config: &AutoconfigConfig, listen: &PublicListen, domains: D) -> Autoconfig<D> {
        Autoconfig {
            offer: Offer::new(&config.hostname, config.display_name.as_deref(), listen),
            policy: mta_sts::Policy::new(&config.mta_sts, &config.hostname),
            domains,
        }
    }

    /// The MTA-STS policy served.
    pub fn policy(&self) -> &mta_sts::Policy {
        &self.policy
    }

    /// The answer to `request`.
    pub fn answer(&self, request: &Request) -> Response {
        let Some(document) = Document::of(&request.path) else {
            return Response::text(404, "not found");
        };
        if !document.allows(&request.method) {
            return Response::text(405, "method not allowed").with_header("Allow", document.allow_header());
        }
        let answered = match document {
            Document::Thunderbird => self.thunderbird(request),
            Document::Autodiscover => self.autodiscover(request),
            Document::Apple => self.apple(request),
            Document::MtaSts => self.mta_sts(request),
        };
        answered.unwrap_or_else(|e| {
            tracing::debug!(path = %request.path, error = %e, "autoconfig: no document");
            e.response()
        })
    }

    fn thunderbird(&self, request: &Request) -> Result<Response, LookupError> {
        let domain = match request.query_param("emailaddress") {
            Some(address) => self.account(&address)?.1,
            None => self.hosted(host_domain(request, "autoconfig.").ok_or(LookupError::NoDomain)?)?,
        };
        Ok(Response::ok(XML, thunderbird::config(&self.offer, &domain)))
    }

    fn autodiscover(&self, request: &Request) -> Result<Response, LookupError> {
        let (address, domain) = self.account(&autodiscover::email_address(&request.body)?)?;
        Ok(Response::ok(XML, autodiscover::response(&self.offer, &address, &domain)))
    }

    fn apple(&self, request: &Request) -> Result<Response, LookupError> {
        let address = request.query_param("emailaddress").ok_or(LookupError::NoDomain)?;
        let (address, domain) = self.account(&address)?;
        let disposition = format!("attachment; filename=\"{domain}.mobileconfig\"");
        Ok(Response::ok(apple::CONTENT_TYPE, apple::profile(&self.offer, &address, &domain))
            .with_header("Content-Disposition", disposition))
    }

    fn mta_sts(&self, request: &Request) -> Result<Response, LookupError> {
        // Senders fetch it from `mta-sts.DOMAIN` only (RFC 8461 §3.3); any other name is not
        // a policy host of ours.
        let host = request.host.as_deref().unwrap_or_default();
        let domain = host.strip_prefix("mta-sts.").ok_or_else(|| LookupError::UnknownDomain(host.to_string()))?;
        self.hosted(domain.to_string())?;
        Ok(Response::ok("text/plain", self.policy.text()))
    }

    /// An address and its domain, both lower case, if the domain is ours.
    fn account(&self, address: &str) -> Result<(String, String), LookupError> {
        let (local, domain) =
            crate::directory::canonical_address(address).map_err(|_| LookupError::BadAddress(address.to_string()))?;
        let domain = self.hosted(domain)?;
        Ok((format!("{local}@{domain}"), domain))
    }

    fn hosted(&self, domain: String) -> Result<String, LookupError> {
        if self.domains.hosts(&domain) { Ok(domain) } else { Err(LookupError::UnknownDomain(domain)) }
    }
}

/// The domain a request's Host names, `prefix` (`autoconfig.`) taken off if there.
fn host_domain(request: &Request, prefix: &str) -> Option<String> {
    let host = request.host.as_deref()?;
    Some(host.strip_prefix(prefix).unwrap_or(host).to_string())
}

impl<D: Domains> Handler for Autoconfig<D> {
    async fn handle(&self, request: Request) -> Response {
        self.answer(&request)
    }
}

/// TLS over each accepted connection.
struct Tls(TlsAcceptor);

impl Transport for Tls {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;
    async fn open(&self, tcp: TcpStream) -> std::io::Result<Self::Stream> {
        self.0.accept(tcp).await
    }
}

/// Binds `config.listen` and serves the documents over HTTPS until `shutdown` turns true.
pub async fn start(
    config: &AutoconfigConfig,
    listen: &PublicListen,
    directory: Arc<ClusterDirectory>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let (acceptor, _certificates) = public_tls::acceptor(&config.tls, &config.hostname)?;
    if config.tls.cert.is_none() {
        tracing::warn!("[autoconfig.tls] has no cert: serving a self-signed certificate, which mail clients refuse");
    }
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let autoconfig = Autoconfig::new(config, listen, directory);
    tracing::info!(
        addr = %config.listen,
        hostname = %config.hostname,
        mta_sts = %format!("_mta-sts.DOMAIN TXT \"v=STSv1; id={}\"", autoconfig.policy().id()),
        "autoconfig over HTTPS; publish the MTA-STS record for each domain"
    );
    tokio::spawn(http::serve_with(listener, Arc::new(Tls(acceptor)), Arc::new(autoconfig), LIMITS, shutdown));
    Ok(())
}

/// Whether `name` is a DNS host name: dot-separated labels of letters, digits and inner
/// hyphens, each 1–63 long, 253 in all.
pub fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MtaStsConfig;
    use sirms_telemetry::http::request::{Parsed, parse};

    struct Hosted;
    impl Domains for Hosted {
        fn hosts(&self, domain: &str) -> bool {
            domain == "example.com"
        }
    }

    fn autoconfig() -> Autoconfig<Hosted> {
        let config = AutoconfigConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            hostname: "mail.example.com".into(),
            display_name: None,
            tls: Default::default(),
            mta_sts: MtaStsConfig::default(),
        };
        Autoconfig::new(&config, &PublicListen::default(), Hosted)
    }

    fn answer(raw: &[u8]) -> Response {
        match parse(raw, LIMITS.request) {
            Parsed::Complete(request) => autoconfig().answer(&request),
            other => panic!("{other:?}"),
        }
    }

    fn body(response: &Response) -> String {
        String::from_utf8(response.body.clone()).expect("utf-8")
    }

    #[test]
    fn thunderbird_by_address_or_by_host() {
        let r = answer(b"GET /mail/config-v1.1.xml?emailaddress=alice%40Example.com HTTP/1.1\r\nHost: autoconfig.example.com\r\n\r\n");
        assert_eq!(r.status, 200, "{}", body(&r));
        assert!(body(&r).contains("<emailProvider id=\"example.com\">"));
        let r = answer(b"GET /.well-known/autoconfig/mail/config-v1.1.xml HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(answer(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.example.com\r\n\r\n").status, 200);
        assert_eq!(answer(b"GET /mail/config-v1.1.xml?emailaddress=a%40other.com HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(answer(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.other.com\r\n\r\n").status, 404);
        assert_eq!(answer(b"GET /mail/config-v1.1.xml?emailaddress=nobody HTTP/1.1\r\n\r\n").status, 400);
        assert_eq!(answer(b"GET /mail/config-v1.1.xml HTTP/1.0\r\n\r\n").status, 400);
    }

    #[test]
    fn autodiscover_takes_a_post_with_the_address() {
        let post = |body: &str| {
            let raw =
                format!("POST /Autodiscover/Autodiscover.xml HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            answer(raw.as_bytes())
        };
        let r = post("<Request><EMailAddress>Alice@example.com</EMailAddress></Request>");
        assert_eq!(r.status, 200);
        assert!(body(&r).contains("<LoginName>alice@example.com</LoginName>"));
        assert_eq!(post("<Request><EMailAddress>a@other.com</EMailAddress></Request>").status, 404);
        assert_eq!(post("<Request/>").status, 400);
        let get = answer(b"GET /autodiscover/autodiscover.xml HTTP/1.1\r\n\r\n");
        assert_eq!(get.status, 405);
        assert_eq!(get.headers, [("Allow", "POST".to_string())]);
    }

    #[test]
    fn apple_needs_the_address() {
        let r = answer(b"GET /apple/mobileconfig?emailaddress=alice%40example.com HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, apple::CONTENT_TYPE);
        assert!(r.headers.iter().any(|(n, v)| *n == "Content-Disposition" && v.contains("example.com.mobileconfig")));
        assert_eq!(answer(b"GET /apple/mobileconfig HTTP/1.1\r\nHost: example.com\r\n\r\n").status, 400);
    }

    #[test]
    fn mta_sts_only_at_the_policy_host_of_a_hosted_domain() {
        let r = answer(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n");
        assert_eq!((r.status, r.content_type), (200, "text/plain"));
        assert_eq!(body(&r), "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 604800\r\n");
        assert_eq!(answer(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.other.com\r\n\r\n").status, 404);
        assert_eq!(answer(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: example.com\r\n\r\n").status, 404);
        assert_eq!(answer(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(answer(b"GET /elsewhere HTTP/1.1\r\n\r\n").status, 404);
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("mail.example.com"));
        assert!(is_dns_name("localhost"));
        for bad in ["", "a..b", "-a.b", "a b", "a_b.c", &"a".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }
}
