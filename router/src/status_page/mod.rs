//! The status page: a read-only HTML page for people, on its own plain-HTTP listener
//! (`[status] listen`), behind the cluster admin token.
//!
//! A request goes:
//!
//! 1. the shared HTTP server (`sirms_telemetry::http`) reads it within [`LIMITS`];
//! 2. [`authorize`]: HTTP Basic, any user name, the password the router's `token`, compared
//!    without an early exit; anything else is 401 with a Basic challenge, so a browser asks;
//! 3. [`route`]: `GET` or `HEAD` of `/` is the page, another path 404, another method 405;
//! 4. [`gather`] reads what the Admin `Status` call answers (`Router::cluster_status`, after
//!    the same directory catch-up), so the page and `sirms ctl status --json` agree, plus the
//!    route table with each entry's current choice, replica state and [`errors`];
//! 5. [`render::page`] turns that into HTML, sent with a Content-Security-Policy that allows
//!    no script and nothing loaded from elsewhere.
//!
//! Plain HTTP carries the token readably: listen on loopback or a private management network
//! only (the router refuses a non-loopback address with the dev token, as for the admin API).

pub mod errors;
pub mod render;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sirms_telemetry::http::{self, Handler, Plain, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::Router;
use crate::service::Service;
use crate::table::Cidr;
use errors::RecentErrors;
use render::{Replicas, RouteView, View};

/// What one client may send and for how long: a browser's GET, no body.
pub const LIMITS: http::Limits = http::Limits {
    request: http::request::Limits { max_head: 8 * 1024, max_body: 0 },
    io_timeout: Duration::from_secs(10),
    max_concurrent: 8,
};

/// Users out of sync listed by name; the rest are counted.
pub const OUT_OF_SYNC_LISTED: usize = 10;

/// The realm of the Basic challenge.
pub const REALM: &str = "sirms";

/// No script, nothing from elsewhere, not framed: the page is only text and its own style.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization field")]
    Missing,
    #[error("not Basic authorization")]
    NotBasic,
    #[error("malformed Basic credentials")]
    Malformed,
    #[error("wrong token")]
    WrongToken,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (status page): {source}")]
pub struct StartError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /` (or HEAD): the page.
    Page,
    /// 404: another path.
    NotFound,
    /// 405: another method.
    MethodNotAllowed,
}

/// Routes an authorized request by its method and path.
pub fn route(request: &Request) -> Route {
    if request.method != "GET" && request.method != "HEAD" {
        Route::MethodNotAllowed
    } else if request.path == "/" {
        Route::Page
    } else {
        Route::NotFound
    }
}

/// Checks an `Authorization` value: `Basic base64(user:token)`, any user name.
pub fn authorize(authorization: Option<&str>, token: &str) -> Result<(), AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthError::NotBasic)?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::NotBasic);
    }
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(credentials.trim()).map_err(|_| AuthError::Malformed)?;
    // The password is what follows the first colon; a user name has none (RFC 7617 §2).
    let colon = decoded.iter().position(|b| *b == b':').ok_or(AuthError::Malformed)?;
    if sirms_proto::token::same(&decoded[colon + 1..], token.as_bytes()) { Ok(()) } else { Err(AuthError::WrongToken) }
}

/// The page's [`Handler`]: one router, its token, the ring of recent errors.
pub struct StatusPage {
    router: Arc<Router>,
    token: Arc<str>,
    errors: &'static RecentErrors,
}

impl StatusPage {
    /// The page of `router`, open to callers with `token`, listing `errors`.
    pub fn new(router: Arc<Router>, token: &str, errors: &'static RecentErrors) -> StatusPage {
        StatusPage { router, token: token.into(), errors }
    }
}

impl Handler for StatusPage {
    async fn handle(&self, request: Request) -> Response {
        if let Err(e) = authorize(request.authorization.as_deref(), &self.token) {
            // Debug, not warn: anyone who can reach the port could fill the error ring.
            tracing::debug!(error = %e, "status page: not authorized");
            return Response::text(401, "the cluster admin token is required (HTTP Basic, any user name)")
                .with_header("WWW-Authenticate", format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""));
        }
        match route(&request) {
            Route::NotFound => Response::text(404, "not found"),
            Route::MethodNotAllowed => Response::text(405, "method not allowed").with_header("Allow", "GET, HEAD"),
            Route::Page => {
                // As the Admin Status call does, so both show the same directory version.
                self.router.directory().catch_up().await;
                let html = render::page(&gather(&self.router, self.errors));
                Response::ok("text/html; charset=utf-8", html)
                    .with_header("Content-Security-Policy", CSP)
                    .with_header("Cache-Control", "no-store")
                    .with_header("X-Content-Type-Options", "nosniff")
                    .with_header("Referrer-Policy", "no-referrer")
            }
        }
    }
}

/// What the page shows, read from `router` now.
pub fn gather(router: &Router, errors: &RecentErrors) -> View {
    let cluster = router.cluster_status();
    let routes = router
        .directory()
        .routes()
        .into_iter()
        .map(|r| {
            // Where the network's first address goes stands for the whole entry: the table
            // matches every address of it alike; only hashing (a target down) tells them apart.
            let choice = Cidr::from_str(&r.cidr).ok().map(|cidr| router.choose(cidr.network(), Service::Smtp));
            RouteView {
                goes_to: choice.as_ref().and_then(|c| c.candidates.first()).map(|n| n.to_string()).unwrap_or_default(),
                reason: choice.map_or_else(|| "not a CIDR".to_string(), |c| c.reason.to_string()),
                cidr: r.cidr,
                target: r.target,
            }
        })
        .collect();
    View {
        now_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        router_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster,
        routes,
        replicas: replicas(&router.directory().snapshot().users),
        errors: errors.newest_first(),
    }
}

/// Replica state of `users`: how many have a replica, and who is out of sync.
fn replicas(users: &[sirms_proto::cluster::User]) -> Replicas {
    let mut out_of_sync: Vec<&str> =
        users.iter().filter(|u| !u.replica.is_empty() && !u.replica_in_sync).map(|u| u.address.as_str()).collect();
    out_of_sync.sort_unstable();
    Replicas {
        with_replica: users.iter().filter(|u| !u.replica.is_empty()).count() as u64,
        out_of_sync: out_of_sync.len() as u64,
        first_out_of_sync: out_of_sync.iter().take(OUT_OF_SYNC_LISTED).map(|s| s.to_string()).collect(),
    }
}

/// Binds `addr` and serves the page there until `shutdown` turns true; the bound address.
pub async fn start(
    addr: SocketAddr,
    page: StatusPage,
    shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError { addr, source })?;
    let bound = listener.local_addr().map_err(|source| StartError { addr, source })?;
    tracing::info!(addr = %bound, "status page at http://{bound}/");
    tokio::spawn(http::serve_with(listener, Arc::new(Plain), Arc::new(page), LIMITS, shutdown));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
    }

    #[test]
    fn basic_with_the_token_is_let_in() {
        assert_eq!(authorize(Some(&basic("admin:tok")), "tok"), Ok(()));
        assert_eq!(authorize(Some(&basic(":tok")), "tok"), Ok(()), "any user name, even none");
        assert_eq!(authorize(Some(&basic("a:b:c")), "b:c"), Ok(()), "the password may hold a colon");
        assert_eq!(authorize(Some(&basic("admin:tok").replace("Basic", "bAsIc")), "tok"), Ok(()));
    }

    #[test]
    fn anything_else_is_not() {
        assert_eq!(authorize(None, "tok"), Err(AuthError::Missing));
        assert_eq!(authorize(Some("Bearer tok"), "tok"), Err(AuthError::NotBasic));
        assert_eq!(authorize(Some("Basic"), "tok"), Err(AuthError::NotBasic));
        assert_eq!(authorize(Some("Basic !!!"), "tok"), Err(AuthError::Malformed));
        assert_eq!(authorize(Some(&basic("no-colon")), "tok"), Err(AuthError::Malformed));
        assert_eq!(authorize(Some(&basic("admin:to")), "tok"), Err(AuthError::WrongToken));
        assert_eq!(authorize(Some(&basic("admin:tokk")), "tok"), Err(AuthError::WrongToken));
        assert_eq!(authorize(Some(&basic("admin:")), "tok"), Err(AuthError::WrongToken));
    }

    #[test]
    fn routes() {
        let request = |method: &str, path: &str| Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            host: None,
            authorization: None,
            body: Vec::new(),
        };
        assert_eq!(route(&request("GET", "/")), Route::Page);
        assert_eq!(route(&request("HEAD", "/")), Route::Page);
        assert_eq!(route(&request("GET", "/x")), Route::NotFound);
        assert_eq!(route(&request("POST", "/")), Route::MethodNotAllowed);
    }

    #[test]
    fn replica_state_lists_the_first_out_of_sync() {
        let user = |address: &str, replica: &str, in_sync: bool| sirms_proto::cluster::User {
            address: address.into(),
            replica: replica.into(),
            replica_in_sync: in_sync,
            ..Default::default()
        };
        let mut users = vec![user("solo@x", "", false), user("ok@x", "n2", true)];
        users.extend((0..12).rev().map(|i| user(&format!("u{i:02}@x"), "n2", false)));
        let r = replicas(&users);
        assert_eq!((r.with_replica, r.out_of_sync), (13, 12));
        assert_eq!(r.first_out_of_sync.len(), OUT_OF_SYNC_LISTED);
        assert_eq!(r.first_out_of_sync[0], "u00@x", "sorted");
    }
}
