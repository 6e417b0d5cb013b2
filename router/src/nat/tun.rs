//! The TUN device and the loop that moves packets through the [`Translator`]: the only I/O
//! of NAT mode.
//!
//! The device is opened with `ioctl(TUNSETIFF)` on `/dev/net/tun` (IPv4 packets without the
//! 4-byte packet-information prefix) and brought up; its addresses and routes are the
//! operator's (see `docs/NAT.md`). The loop reads every packet the kernel routes into the
//! device, lets the translator rewrite or answer it, and writes the result back, where the
//! kernel routes it on. It also expires flows once a second, publishes counts, and installs
//! each new view of the cluster, writing the resets that a node's death calls for.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::translate::{NatView, Translator, Verdict};

/// Largest packet read: a TUN device's MTU is far below this.
const MAX_PACKET: usize = 65_535;
/// Packets handled per wake-up before other tasks get a turn.
const BATCH: usize = 256;
/// How often flows are expired and counts published.
const TICK: Duration = Duration::from_millis(500);

/// An open TUN device.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in device name"))?;
    let bytes = bytes.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ || bytes.len() < 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad device name {name:?}")));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

impl Tun {
    /// Attaches to (or creates) the TUN device `name` and sets it up.
    pub fn open(name: &str) -> io::Result<Tun> {
        let mut req = ifreq_for(name)?;
        // SAFETY: a plain open(2) of a NUL-terminated path.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(annotate(io::Error::last_os_error(), "open /dev/net/tun"));
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(annotate(io::Error::last_os_error(), &format!("TUNSETIFF {name}")));
        }
        set_up(name)?;
        Ok(Tun { fd, name: name.to_string() })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Sets IFF_UP on interface `name` (SIOCGIFFLAGS, then SIOCSIFFLAGS if it is down).
fn set_up(name: &str) -> io::Result<()> {
    // SAFETY: a plain socket(2); the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(annotate(io::Error::last_os_error(), "socket for SIOCSIFFLAGS"));
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq_for(name)?;
    // SAFETY: both ioctls read and write one ifreq, which outlives them; ifru_flags is the
    // union member SIOCGIFFLAGS fills in.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(annotate(io::Error::last_os_error(), &format!("SIOCGIFFLAGS {name}")));
        }
        // Already up (the operator's `ip link set up`): nothing to do, and no privilege needed.
        if req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(annotate(io::Error::last_os_error(), &format!("SIOCSIFFLAGS {name}")));
        }
    }
    Ok(())
}

/// Counts the loop publishes for `sirms ctl status`.
#[derive(Debug, Default)]
pub struct NatStats {
    pub flows: AtomicU64,
    pub forwarded: AtomicU64,
    pub answered: AtomicU64,
    pub discarded: AtomicU64,
    pub flows_opened: AtomicU64,
    pub flows_reset: AtomicU64,
    pub write_errors: AtomicU64,
}

impl NatStats {
    fn publish(&self, translator: &Translator) {
        let c = translator.counters();
        self.flows.store(translator.flow_count() as u64, Ordering::Relaxed);
        self.forwarded.store(c.forwarded, Ordering::Relaxed);
        self.answered.store(c.answered, Ordering::Relaxed);
        self.discarded.store(c.discarded, Ordering::Relaxed);
        self.flows_opened.store(c.flows_opened, Ordering::Relaxed);
        self.flows_reset.store(c.flows_reset, Ordering::Relaxed);
    }
}

/// Moves packets through `translator` until `shutdown` turns true; takes each new view from `views`.
pub async fn run(
    tun: Tun,
    mut translator: Translator,
    mut views: watch::Receiver<Arc<NatView>>,
    stats: Arc<NatStats>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let name = tun.name.clone();
    // SAFETY: the descriptor is owned by the AsyncFd from here on and never closed or
    // replaced behind its back.
    let fd = unsafe { AsyncFd::register_with_interest(tun.fd, Interest::READABLE)? };
    let mut buf = vec![0u8; MAX_PACKET];
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let write = |packet: &[u8]| {
        // SAFETY: write(2) from a live slice to our descriptor. A TUN write injects the packet
        // into the stack and does not block; a failure (say, a full backlog) drops it, as a
        // congested link would.
        let n = unsafe { libc::write(fd.get_ref().as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %io::Error::last_os_error(), "nat: write to the TUN device failed");
        }
    };
    translator.set_view(Arc::unwrap_or_clone(views.borrow_and_update().clone()));
    tracing::info!(device = %name, "nat: translating");
    loop {
        tokio::select! {
            ready = fd.readable() => {
                let mut guard = ready?;
                for _ in 0..BATCH {
                    // SAFETY: read(2) into a live buffer of the given length.
                    let n = unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::WouldBlock {
                            guard.clear_ready();
                            break;
                        }
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(annotate(e, &format!("read {name}")));
                    }
                    let packet = &mut buf[..n as usize];
                    match translator.handle(packet, Instant::now()) {
                        Verdict::Forward => write(packet),
                        Verdict::Answer(reply) => write(&reply),
                        Verdict::Discard(why) => tracing::trace!(%why, "nat: packet dropped"),
                    }
                }
            }
            _ = ticker.tick() => {
                translator.expire(Instant::now());
                stats.publish(&translator);
            }
            changed = views.changed() => {
                if changed.is_err() {
                    break;
                }
                let view = Arc::unwrap_or_clone(views.borrow_and_update().clone());
                for reset in translator.set_view(view) {
                    write(&reset);
                }
                stats.publish(&translator);
            }
            _ = shutdown.changed() => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked() {
        assert!(ifreq_for("sirms0").is_ok());
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("a-name-far-too-long").is_err());
        assert!(ifreq_for("nul\0").is_err());
    }
}
