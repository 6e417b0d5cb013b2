//! Accepting the PROXY v2 header that a trusted router puts before a client's bytes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sirms_proto::proxy_v2::{self, ProxyHeader};
use tokio::net::TcpStream;

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A client, at its real address (from the router's PROXY header, or the TCP peer).
    Client(SocketAddr),
    /// The router itself (a PROXY `LOCAL` header): its health check, which looks at the
    /// greeting as a client would.
    Router(SocketAddr),
}

impl Peer {
    /// The address to log and to apply limits to.
    pub fn addr(self) -> SocketAddr {
        match self {
            Peer::Client(addr) | Peer::Router(addr) => addr,
        }
    }
}

/// For a trusted peer, reads exactly its PROXY v2 header and returns the client address it
/// names; any other peer is its own client. A trusted peer without a valid header is an
/// error: the router always sends one, so anything else is not the router.
pub async fn accept(
    mut tcp: TcpStream,
    peer: SocketAddr,
    trusted: &[IpAddr],
    limit: Duration,
) -> io::Result<(TcpStream, Peer)> {
    if !trusted.contains(&peer.ip()) {
        return Ok((tcp, Peer::Client(peer)));
    }
    let header = tokio::time::timeout(limit, proxy_v2::read_header(&mut tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"))?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    match header {
        ProxyHeader::Tcp { source, .. } => Ok((tcp, Peer::Client(source))),
        // The router's own connections (health checks) carry no client.
        ProxyHeader::Local => Ok((tcp, Peer::Router(peer))),
        ProxyHeader::Unspecified => Ok((tcp, Peer::Client(peer))),
    }
}
