//! Accepting the PROXY v2 header that a trusted router puts before a client's bytes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sirms_proto::proxy_v2;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// For a trusted peer, reads exactly its PROXY v2 header and returns the client address it
/// names; any other peer is its own client. A trusted peer without a valid header is an
/// error: the router always sends one, so anything else is not the router.
pub async fn accept(
    mut tcp: TcpStream,
    peer: SocketAddr,
    trusted: &[IpAddr],
    limit: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    if !trusted.contains(&peer.ip()) {
        return Ok((tcp, peer));
    }
    let header = tokio::time::timeout(limit, async {
        let mut fixed = [0u8; proxy_v2::FIXED_LEN];
        tcp.read_exact(&mut fixed).await?;
        let rest = proxy_v2::remaining_len(&fixed).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut whole = fixed.to_vec();
        whole.resize(proxy_v2::FIXED_LEN + rest, 0);
        tcp.read_exact(&mut whole[proxy_v2::FIXED_LEN..]).await?;
        proxy_v2::decode_complete(&whole).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"))??;
    // A LOCAL header (health checks) carries no client: the peer itself is the client.
    Ok((tcp, header.unwrap_or(peer)))
}
