//! The metrics endpoint: `GET /metrics` (or `/`, or HEAD) answers the Prometheus text page;
//! nothing else is served.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Handler, Limits, Plain, Request, Response, request};
use crate::{Exposition, Render};

/// Largest request head read; a scrape's is a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// What a scraper may send and for how long: no body, 10 s, 16 scrapes at once.
pub const LIMITS: Limits = Limits {
    request: request::Limits { max_head: MAX_HEAD, max_body: 0 },
    io_timeout: Duration::from_secs(10),
    max_concurrent: 16,
};

/// What the endpoint does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (or HEAD, or `/`): the page.
    Metrics,
    /// 404: another path.
    NotFound,
    /// 405: another method.
    MethodNotAllowed,
}

/// Routes a request by its method and path.
pub fn route(request: &Request) -> Route {
    if request.method != "GET" && request.method != "HEAD" {
        return Route::MethodNotAllowed;
    }
    if request.path == "/metrics" || request.path == "/" { Route::Metrics } else { Route::NotFound }
}

/// Serves `metrics` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<dyn Render>, shutdown: watch::Receiver<bool>) {
    super::serve_with(listener, Arc::new(Plain), Arc::new(Page(metrics)), LIMITS, shutdown).await
}

/// The page as a [`Handler`].
struct Page(Arc<dyn Render>);

impl Handler for Page {
    async fn handle(&self, request: Request) -> Response {
        match route(&request) {
            Route::Metrics => {
                let metrics = self.0.clone();
                // Off the async threads: a role may read a little from disk (the queue's size).
                let page = tokio::task::spawn_blocking(move || {
                    let mut page = Exposition::new();
                    metrics.render(&mut page);
                    page.finish()
                })
                .await
                .unwrap_or_default();
                Response::ok("text/plain; version=0.0.4; charset=utf-8", page)
            }
            Route::NotFound => Response::text(404, "metrics are at /metrics"),
            Route::MethodNotAllowed => Response::text(405, "only GET").with_header("Allow", "GET, HEAD"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Parsed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn routed(head: &[u8]) -> Route {
        match request::parse(head, LIMITS.request) {
            Parsed::Complete(request) => route(&request),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(routed(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(routed(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(routed(b"GET / HTTP/1.1\n\n"), Route::Metrics);
        assert_eq!(routed(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(routed(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
    }

    struct One;
    impl Render for One {
        fn render(&self, out: &mut Exposition) {
            out.counter("one_total", "One.", &[(&[], 1)]);
        }
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_a_scrape_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::new(One), stopped));
        let page = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.ends_with("\r\n\r\n# HELP one_total One.\n# TYPE one_total counter\none_total 1\n"), "{page}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        assert!(exchange(addr, b"GET /x HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(exchange(addr, b"GET  /x HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 400"));
        assert!(
            exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 1\r\n\r\nx").await.starts_with("HTTP/1.1 413")
        );
        let huge = vec![b'a'; MAX_HEAD * 3];
        assert!(exchange(addr, &huge).await.starts_with("HTTP/1.1 431"));
        let _ = stop.send(true);
        server.await.expect("server stops");
    }
}
