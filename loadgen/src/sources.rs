//! Client source addresses: the `--sources` list (addresses, ranges, CIDR blocks), handed out
//! round robin, and connecting from one of them. SIRMS routes by the client's source address,
//! so a load generator that connects only from 127.0.0.1 would reach one node of a cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};

use crate::error::Error;

/// More addresses than any test bed has; a typo like `10.0.0.0/8` is refused, not expanded.
const MAX_SOURCES: usize = 65_536;

/// The addresses connections are bound to, used in turn; empty means the kernel chooses.
#[derive(Debug, Default)]
pub struct Sources {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Clone for Sources {
    fn clone(&self) -> Sources {
        Sources::new(self.addrs.clone())
    }
}

impl Sources {
    /// Round robin over `addrs`, starting with the first.
    pub fn new(addrs: Vec<IpAddr>) -> Sources {
        Sources { addrs, next: AtomicUsize::new(0) }
    }

    /// The addresses, in the order they are used.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The address for the next connection (`None`: let the kernel choose).
    pub fn next(&self) -> Option<IpAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        Some(self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()])
    }
}

/// Parses `--sources`: a comma-separated list of IP addresses, IPv4 ranges (`127.77.1.1-8`
/// for the last octet, or `127.77.1.1-127.77.2.8`) and IPv4 CIDR blocks (`127.77.1.0/29`:
/// its hosts, without network and broadcast address below /31).
pub fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (first, last) = if let Some((addr, prefix)) = item.split_once('/') {
            cidr_hosts(addr, prefix).ok_or_else(|| format!("{item:?}: not an IPv4 CIDR block"))?
        } else if let Some((from, to)) = item.split_once('-') {
            let from: Ipv4Addr = from.parse().map_err(|_| format!("{item:?}: not an IPv4 range"))?;
            let to = match to.parse::<Ipv4Addr>() {
                Ok(to) => to,
                Err(_) => {
                    let octet: u8 = to.parse().map_err(|_| format!("{item:?}: not an IPv4 range"))?;
                    let [a, b, c, _] = from.octets();
                    Ipv4Addr::new(a, b, c, octet)
                }
            };
            (u32::from(from), u32::from(to))
        } else {
            let addr: IpAddr = item.parse().map_err(|_| format!("{item:?}: not an IP address"))?;
            push_limited(&mut out, addr)?;
            continue;
        };
        if first > last {
            return Err(format!("{item:?}: the range ends before it starts"));
        }
        for n in first..=last {
            push_limited(&mut out, IpAddr::V4(Ipv4Addr::from(n)))?;
        }
    }
    if out.is_empty() {
        return Err("no source address given".into());
    }
    Ok(out)
}

fn push_limited(out: &mut Vec<IpAddr>, addr: IpAddr) -> Result<(), String> {
    if out.len() == MAX_SOURCES {
        return Err(format!("more than {MAX_SOURCES} source addresses"));
    }
    out.push(addr);
    Ok(())
}

/// First and last host of an IPv4 CIDR block, as integers.
fn cidr_hosts(addr: &str, prefix: &str) -> Option<(u32, u32)> {
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    let network = u32::from(addr) & mask;
    let broadcast = network | !mask;
    if prefix >= 31 { Some((network, broadcast)) } else { Some((network + 1, broadcast - 1)) }
}

/// Connects to `target` from `from` (any port), before `deadline`. The port is picked at
/// connect time (`IP_BIND_ADDRESS_NO_PORT`), so one source address can hold connections to
/// many targets without running out of ports at bind time.
pub async fn connect(target: SocketAddr, from: Option<IpAddr>, deadline: Instant) -> Result<TcpStream, Error> {
    let shown_from = from.map(|a| format!(" from {a}")).unwrap_or_default();
    let failed = |err| Error::Connect { target, from: shown_from.clone(), err };
    let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(failed)?;
    if let Some(from) = from {
        if from.is_ipv4() != target.is_ipv4() {
            return Err(Error::Usage(format!("source {from} and target {target} are of different IP versions")));
        }
        bind_address_no_port(&socket).map_err(failed)?;
        socket.bind(SocketAddr::new(from, 0)).map_err(failed)?;
    }
    let stream = match timeout_at(deadline, socket.connect(target)).await {
        Err(_) => return Err(Error::Timeout("connecting")),
        Ok(result) => result.map_err(failed)?,
    };
    // Commands are small and each waits for its reply: do not hold them back (Nagle).
    stream.set_nodelay(true).map_err(failed)?;
    Ok(stream)
}

fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, reading one c_int from a live local.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lists_ranges_and_blocks() {
        assert_eq!(parse_sources("127.77.1.1, 127.77.1.2").unwrap(), vec![v4("127.77.1.1"), v4("127.77.1.2")]);
        assert_eq!(
            parse_sources("127.77.1.1-3,::1").unwrap(),
            vec![v4("127.77.1.1"), v4("127.77.1.2"), v4("127.77.1.3"), v4("::1")]
        );
        assert_eq!(parse_sources("127.0.0.255-127.0.1.0").unwrap(), vec![v4("127.0.0.255"), v4("127.0.1.0")]);
        assert_eq!(parse_sources("127.77.1.0/30").unwrap(), vec![v4("127.77.1.1"), v4("127.77.1.2")]);
        assert_eq!(parse_sources("127.77.1.9/32").unwrap(), vec![v4("127.77.1.9")]);
        assert_eq!(parse_sources("127.77.1.8/31").unwrap(), vec![v4("127.77.1.8"), v4("127.77.1.9")]);
        assert_eq!(parse_sources("127.0.0.0/16").unwrap().len(), 65_534);
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in ["", ",", "127.1", "127.0.0.5-2", "127.0.0.1-300", "127.0.0.0/33", "::1/64", "10.0.0.0/8", "a-b"] {
            assert!(parse_sources(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_robin() {
        let s = Sources::new(parse_sources("127.0.0.1-2").unwrap());
        let got: Vec<_> = (0..5).map(|_| s.next().unwrap()).collect();
        assert_eq!(got, [v4("127.0.0.1"), v4("127.0.0.2"), v4("127.0.0.1"), v4("127.0.0.2"), v4("127.0.0.1")]);
        assert_eq!(Sources::default().next(), None);
    }

    #[tokio::test]
    async fn connects_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let _client = connect(target, Some(v4("127.0.93.7")), deadline).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), v4("127.0.93.7"));
    }
}
