//! The metrics endpoint: just enough HTTP/1.1 for a Prometheus scrape (`GET /metrics`), one
//! request per connection, with limits on size, time and concurrency because it is still a
//! listener that anyone who can reach it can talk to.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::{Exposition, Render};

/// Largest request head read; a scrape's is a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait for a slot in the kernel's backlog.
const MAX_CONCURRENT: usize = 16;

/// What the endpoint answers to a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (or HEAD): the page.
    Metrics { head_only: bool },
    /// 400: not an HTTP request line.
    BadRequest,
    /// 404: another path.
    NotFound,
    /// 405: another method.
    MethodNotAllowed,
    /// 431: no end of the head within [`MAX_HEAD`].
    TooLarge,
}

/// Where the request head ends (just past the blank line), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4).or_else(|| {
        // Tolerate bare LF line ends, as most servers do.
        buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2)
    })
}

/// Routes a request by its request line (RFC 9112 §3): `METHOD SP target SP HTTP/1.x`.
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with(b"HTTP/1.") || method.is_empty() || !target.starts_with(b"/") {
        return Route::BadRequest;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    if path == b"/metrics" || path == b"/" { Route::Metrics { head_only } } else { Route::NotFound }
}

/// Serves `metrics` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<dyn Render>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, metrics)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: Arc<dyn Render>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let route = loop {
        if let Some(end) = head_end(&buf) {
            break route(&buf[..end]);
        }
        if buf.len() >= MAX_HEAD {
            break Route::TooLarge;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        // Bounded: the check above stops the loop within one chunk past MAX_HEAD.
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, body, head_only) = match route {
        Route::Metrics { head_only } => {
            // Off the async threads: a role may read a little from disk (the queue's size).
            let page = tokio::task::spawn_blocking(move || {
                let mut page = Exposition::new();
                metrics.render(&mut page);
                page.finish()
            })
            .await
            .unwrap_or_default();
            ("200 OK", page, head_only)
        }
        Route::BadRequest => ("400 Bad Request", "bad request\n".to_string(), false),
        Route::NotFound => ("404 Not Found", "metrics are at /metrics\n".to_string(), false),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "only GET\n".to_string(), false),
        Route::TooLarge => ("431 Request Header Fields Too Large", "request head too large\n".to_string(), false),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { head_only: false });
        assert_eq!(route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics { head_only: true });
        assert_eq!(route(b"GET / HTTP/1.1\n\n"), Route::Metrics { head_only: false });
        assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\x00\xff\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
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
        assert!(exchange(addr, b"GET /x HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        let huge = vec![b'a'; MAX_HEAD * 3];
        assert!(exchange(addr, &huge).await.starts_with("HTTP/1.1 431"));
        let _ = stop.send(true);
        server.await.expect("server stops");
    }
}
