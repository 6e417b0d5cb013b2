//! The TCP forwarder: connect to the first backend that accepts, send the PROXY header, relay bytes.
//!
//! Bytes are relayed untouched in both directions (TLS passes through). Each direction is a
//! read-then-`write_all` loop over one buffer, so a slow reader on one side slows the other
//! side's reads (backpressure) instead of growing memory. When one side closes its write
//! half, the other side's write half is shut down and the opposite direction keeps flowing
//! until it closes too — SMTP and POP3 clients that `shutdown(SHUT_WR)` after QUIT still get
//! the server's last reply.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::node::NodeId;
use crate::service::Service;
use sirms_proto::proxy_v2::ProxyHeader;

/// How the forwarder connects and how long a quiet session may live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Limit for connecting to one backend and writing the PROXY header to it.
    pub connect_timeout: Duration,
    /// A session with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Size of each direction's copy buffer.
    pub buffer_size: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            // IMAP servers must let an IDLE client sit quiet for 30 minutes (RFC 9051 §5.4); allow a margin.
            idle_timeout: Duration::from_secs(31 * 60),
            buffer_size: 16 * 1024,
        }
    }
}

/// A node's address for one service: where a connection can be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The node behind the address, so failures can be charged to it.
    pub node: NodeId,
    /// The service, so a failure is charged to it alone (health is per node and service).
    pub service: Service,
    /// The node's listener for the service.
    pub addr: SocketAddr,
}

/// Told about every backend that did not take a connection, so health can mark it down passively.
pub trait ConnectFailures: Send + Sync {
    /// `backend` refused, timed out or failed while receiving the PROXY header.
    fn connect_failed(&self, backend: &Backend, error: &io::Error);
}

impl<F: Fn(&Backend, &io::Error) + Send + Sync> ConnectFailures for F {
    fn connect_failed(&self, backend: &Backend, error: &io::Error) {
        self(backend, error)
    }
}

/// An accepted client connection and the addresses that go into its PROXY header.
#[derive(Debug)]
pub struct Inbound {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address: the PROXY header's source.
    pub peer: SocketAddr,
    /// The address the client connected to: the PROXY header's destination.
    pub local: SocketAddr,
}

impl Inbound {
    /// Takes both addresses from the socket itself.
    pub fn from_stream(stream: TcpStream) -> io::Result<Self> {
        Ok(Self { peer: stream.peer_addr()?, local: stream.local_addr()?, stream })
    }
}

/// Why a connection could not be forwarded at all.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The candidate list was empty.
    #[error("no backend to forward to")]
    NoBackends,
    /// Every candidate failed; `last` is the last failure.
    #[error("all {attempts} backends failed, last: {last}")]
    AllBackendsFailed {
        /// How many backends were tried.
        attempts: usize,
        /// The last backend's error.
        last: io::Error,
    },
}

/// How a relayed session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Both sides closed their write halves.
    Closed,
    /// No bytes moved for the configured idle timeout.
    IdleTimeout,
    /// A read, write or shutdown failed (typically a reset); both sides were closed.
    Error(io::Error),
}

/// What happened to a forwarded connection.
#[derive(Debug)]
pub struct ForwardStats {
    /// The backend that served the client.
    pub backend: Backend,
    /// Backends that failed before this one.
    pub failed_attempts: usize,
    /// Bytes from the client delivered to the backend (the PROXY header not included).
    pub client_to_backend: u64,
    /// Bytes from the backend delivered to the client.
    pub backend_to_client: u64,
    /// How the session ended.
    pub end: SessionEnd,
}

/// Forwards client connections to backends.
#[derive(Debug, Clone, Default)]
pub struct Forwarder {
    config: ForwardConfig,
}

impl Forwarder {
    /// A forwarder with the given timeouts and buffer size.
    pub fn new(config: ForwardConfig) -> Self {
        Self { config }
    }

    /// Serves `inbound` through the first of `backends` that accepts, until the session ends.
    ///
    /// Backends are tried in order; each failure is reported to `failures` before the next is
    /// tried, so the client sees nothing of it beyond the delay. No client byte is read before
    /// a backend has accepted and received the PROXY header.
    pub async fn forward(
        &self,
        inbound: Inbound,
        backends: &[Backend],
        failures: &impl ConnectFailures,
    ) -> Result<ForwardStats, ForwardError> {
        let Inbound { stream: client, peer, local } = inbound;
        let header = ProxyHeader::tcp(peer, local).encode();
        let mut last_error = None;
        for (attempt, backend) in backends.iter().enumerate() {
            match self.connect(backend, header.as_bytes()).await {
                Ok(server) => {
                    // Mail protocols are small request/reply exchanges: Nagle would only add latency.
                    if let Err(error) = client.set_nodelay(true) {
                        tracing::debug!(client = %peer, %error, "cannot set TCP_NODELAY on client socket");
                    }
                    let relayed = relay(client, server, self.config.idle_timeout, self.config.buffer_size).await;
                    return Ok(ForwardStats {
                        backend: backend.clone(),
                        failed_attempts: attempt,
                        client_to_backend: relayed.client_to_backend,
                        backend_to_client: relayed.backend_to_client,
                        end: relayed.end,
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        client = %peer, node = %backend.node, addr = %backend.addr, %error,
                        "backend did not take the connection; trying the next"
                    );
                    failures.connect_failed(backend, &error);
                    last_error = Some(error);
                }
            }
        }
        match last_error {
            Some(last) => Err(ForwardError::AllBackendsFailed { attempts: backends.len(), last }),
            None => Err(ForwardError::NoBackends),
        }
    }

    /// Connects to `backend` and writes the header, all within the connect timeout.
    async fn connect(&self, backend: &Backend, header: &[u8]) -> io::Result<TcpStream> {
        let attempt = async {
            let mut stream = TcpStream::connect(backend.addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(header).await?;
            Ok(stream)
        };
        tokio::time::timeout(self.config.connect_timeout, attempt)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

/// Byte counts and outcome of [`relay`].
#[derive(Debug)]
pub struct Relayed {
    /// Bytes copied from the client to the backend.
    pub client_to_backend: u64,
    /// Bytes copied from the backend to the client.
    pub backend_to_client: u64,
    /// How the relay ended.
    pub end: SessionEnd,
}

/// Copies bytes both ways between two connected sockets, with half-close and an idle timeout.
pub async fn relay(
    mut client: TcpStream,
    mut backend: TcpStream,
    idle_timeout: Duration,
    buffer_size: usize,
) -> Relayed {
    let activity = Activity::new();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut client_read, mut client_write) = client.split();
    let (mut backend_read, mut backend_write) = backend.split();
    let both = async {
        tokio::try_join!(
            pump(&mut client_read, &mut backend_write, buffer_size, &up, &activity),
            pump(&mut backend_read, &mut client_write, buffer_size, &down, &activity),
        )
    };
    let end = tokio::select! {
        result = both => match result {
            Ok(_) => SessionEnd::Closed,
            Err(error) => SessionEnd::Error(error),
        },
        () = activity.idle_for(idle_timeout) => SessionEnd::IdleTimeout,
    };
    Relayed { client_to_backend: up.into_inner(), backend_to_client: down.into_inner(), end }
}

/// Copies one direction until EOF, then shuts down the writer so the peer sees the half-close.
async fn pump<R, W>(
    reader: &mut R,
    writer: &mut W,
    buffer_size: usize,
    copied: &AtomicU64,
    activity: &Activity,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer_size.max(1)];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            // The other direction may still have data to deliver, so a failed shutdown here
            // (the peer already gone) must not cut it short; it will see its own error.
            if let Err(error) = writer.shutdown().await {
                tracing::debug!(%error, "shutdown of write half after EOF failed");
            }
            return Ok(());
        }
        activity.touch();
        writer.write_all(&buf[..n]).await?;
        copied.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// When bytes last moved in either direction, shared by both pumps and the idle watchdog.
struct Activity {
    start: Instant,
    // Milliseconds since `start`: an atomic rather than a Cell so the relay future stays Send.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `limit`; re-arms itself after every activity.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            // A limit too large to add means "never".
            let Some(deadline) = last.checked_add(limit) else {
                return std::future::pending().await;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected socket pair on loopback: (accepted side, connecting side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (accepted, connected) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        (accepted.expect("accept").0, connected.expect("connect"))
    }

    #[tokio::test]
    async fn relay_copies_both_ways_and_propagates_half_close() {
        let (client_far, client_near) = pair().await;
        let (backend_near, mut backend_far) = pair().await;
        let relay = tokio::spawn(relay(client_near, backend_near, Duration::from_secs(30), 7));
        let mut client = client_far;

        client.write_all(b"hello backend").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        backend_far.read_to_end(&mut got).await.expect("backend reads to EOF");
        assert_eq!(got, b"hello backend");

        // The client's write half is closed, yet the backend's reply still reaches it.
        backend_far.write_all(b"bye").await.expect("write");
        drop(backend_far);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.expect("client reads to EOF");
        assert_eq!(reply, b"bye");

        let relayed =
            tokio::time::timeout(Duration::from_secs(10), relay).await.expect("relay ends").expect("no panic");
        assert_eq!((relayed.client_to_backend, relayed.backend_to_client), (13, 3));
        assert!(matches!(relayed.end, SessionEnd::Closed), "{:?}", relayed.end);
    }

    #[tokio::test]
    async fn quiet_sessions_time_out() {
        let (_client_far, client_near) = pair().await;
        let (backend_near, _backend_far) = pair().await;
        let relayed = tokio::time::timeout(
            Duration::from_secs(10),
            relay(client_near, backend_near, Duration::from_millis(100), 1024),
        )
        .await
        .expect("idle timeout fires");
        assert!(matches!(relayed.end, SessionEnd::IdleTimeout), "{:?}", relayed.end);
    }

    #[tokio::test]
    async fn huge_idle_timeout_means_never() {
        let activity = Activity::new();
        let fired = tokio::time::timeout(Duration::from_millis(50), activity.idle_for(Duration::MAX)).await;
        assert!(fired.is_err());
    }

    #[tokio::test]
    async fn empty_backend_list_is_an_error() {
        let (client, _far) = pair().await;
        let inbound = Inbound::from_stream(client).expect("addresses");
        let result = Forwarder::default().forward(inbound, &[], &|_: &Backend, _: &io::Error| {}).await;
        assert!(matches!(result, Err(ForwardError::NoBackends)));
    }
}
