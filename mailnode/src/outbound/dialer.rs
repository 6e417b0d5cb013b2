//! Opening outbound TCP connections: from the node's egress address when it is of the
//! right family (what SPF records and receivers' reputation see), within a time limit.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Opens connections for MX sessions and MTA-STS policy fetches alike.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// Source address; unset: the kernel's choice.
    pub egress: Option<IpAddr>,
    /// Limit for one connect.
    pub timeout: Duration,
}

impl Dialer {
    /// Connects to `addr`, from the egress address when it is of the same family.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(egress) = self.egress.filter(|e| e.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(egress, 0))?;
        }
        tokio::time::timeout(self.timeout, socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }
}
