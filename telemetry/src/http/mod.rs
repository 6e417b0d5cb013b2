//! Just enough HTTP/1.1 for our endpoints: the Prometheus scrape (`GET /metrics`, plain
//! TCP, [`metrics`]), the router's autoconfiguration documents (over TLS) and its status page
//! (plain TCP, behind the admin token). One request per
//! connection, with limits on size, time and concurrency, because each is still a listener
//! that anyone who can reach it can talk to.
//!
//! A connection goes: [`Transport::open`] (as is, or a TLS handshake), bytes read until
//! [`request::parse`] has a whole request or refuses it (within [`Limits`]), the
//! [`Handler`]'s [`Response`] written, the connection closed. All of it within one
//! `io_timeout`, so a slow client holds a slot for a bounded time.

pub mod metrics;
pub mod request;
pub mod response;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub use metrics::serve;
pub use request::{Parsed, Refusal, Request};
pub use response::Response;

/// What a listener allows each client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request sizes.
    pub request: request::Limits,
    /// Time a client gets to connect (TLS included), send its request and take the answer.
    pub io_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_concurrent: usize,
}

/// How an accepted connection becomes the stream requests are read from.
pub trait Transport: Send + Sync + 'static {
    /// The stream: the TCP connection itself, or TLS over it.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;
    /// Opens `tcp` (a TLS handshake, say).
    fn open(&self, tcp: TcpStream) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// Plain TCP.
pub struct Plain;

impl Transport for Plain {
    type Stream = TcpStream;
    async fn open(&self, tcp: TcpStream) -> std::io::Result<TcpStream> {
        Ok(tcp)
    }
}

/// What answers requests.
pub trait Handler: Send + Sync + 'static {
    /// The response to `request`; a `HEAD` gets this response's head.
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// Serves `handler` on `listener` through `transport` until `shutdown` turns true.
pub async fn serve_with<T: Transport, H: Handler>(
    listener: TcpListener,
    transport: Arc<T>,
    handler: Arc<H>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (transport, handler) = (transport.clone(), handler.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let exchange = async {
                let stream = transport.open(stream).await?;
                answer(stream, &*handler, limits.request).await
            };
            if let Ok(Err(e)) = tokio::time::timeout(limits.io_timeout, exchange).await {
                tracing::debug!(error = %e, "http: connection failed");
            }
        });
    }
}

/// Reads one request from `stream`, writes the answer, closes.
async fn answer<S, H>(mut stream: S, handler: &H, limits: request::Limits) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut buf = Vec::with_capacity(1024);
    let (response, head_only, refused_early) = loop {
        match request::parse(&buf, limits) {
            Parsed::Incomplete => {}
            Parsed::Complete(request) => {
                let head_only = request.method == "HEAD";
                break (handler.handle(request).await, head_only, false);
            }
            Parsed::Refused(refusal) => break (refused(refusal), false, true),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        // Bounded: parse refuses a head past max_head and a declared body past max_body, so
        // the buffer stays within them plus one chunk.
        buf.extend_from_slice(&chunk[..n]);
    };
    stream.write_all(&response.encode(head_only)).await?;
    stream.shutdown().await?;
    if refused_early {
        // The client may still be sending what we refused (a body too large). Closing with
        // unread bytes makes the kernel send a reset, which can destroy our answer before the
        // client reads it; so read and drop a bounded amount first.
        let drain = async {
            let mut chunk = [0u8; 4096];
            let mut left = DRAIN_LIMIT;
            while left > 0 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    Ok(())
}

/// How much of a refused request is read and dropped before closing, at most.
const DRAIN_LIMIT: usize = 256 * 1024;
/// And for how long.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The answer to a request refused before any handler saw it.
fn refused(refusal: Refusal) -> Response {
    let message = match refusal {
        Refusal::BadRequest => "bad request",
        Refusal::TooLarge => "request body too large",
        Refusal::HeadTooLarge => "request head too large",
        Refusal::NotImplemented => "transfer codings are not supported: send Content-Length",
    };
    Response::text(refusal.status(), message)
}
