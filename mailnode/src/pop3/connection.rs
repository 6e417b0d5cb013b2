//! The POP3 connection loop: socket I/O, the maildrop lock and the store around a [`Session`].

use std::sync::Arc;
use std::time::Duration;

use sirms_storage::{BodyPart, FlagOp, Flags, MailStore, MaildropLock, SystemFlags, UidSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::maildrop::MaildropEntry;
use super::session::{Action, Next, Outcome, Session, SessionConfig};
use crate::auth::{Authenticator, Verdict};
use crate::net::listener::Accepted;
use crate::net::stream::{HANDSHAKE_TIMEOUT, Stream};

const READ_CHUNK: usize = 8 * 1024;

/// A maildrop this session holds: the user, and the home store's lock, released on drop however
/// the session ends.
pub struct MaildropGuard {
    user: String,
    _lock: MaildropLock,
}

/// Everything a POP3 listener's sessions share.
pub struct Pop3Service {
    pub config: SessionConfig,
    pub authenticator: Authenticator,
    pub store: Arc<dyn MailStore>,
    pub tls: Option<TlsAcceptor>,
    /// RFC 1939 §3: at least 10 minutes.
    pub idle_timeout: Duration,
}

/// Reads one line into `line`, holding at most `limit + 1` octets of it (the rest of an
/// over-long line is dropped, so the session sees a prefix it rejects as too long).
/// Returns false at end of input.
async fn read_line(stream: &mut Stream, buf: &mut Vec<u8>, line: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
    line.clear();
    let mut overflow = false;
    loop {
        if cut_line(buf, line, &mut overflow, limit) {
            return Ok(true);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Moves the line that `buf` holds into `line` (without its CR LF), keeping at most
/// `limit + 1` octets; true once the line end was seen. `overflow` carries across reads.
fn cut_line(buf: &mut Vec<u8>, line: &mut Vec<u8>, overflow: &mut bool, limit: usize) -> bool {
    if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        if !*overflow {
            line.extend_from_slice(&buf[..pos]);
        }
        buf.drain(..=pos);
        // After an overflow, a CR kept as the line's `limit + 1`th octet is content, not the
        // line end: dropping it would turn an over-long line into one the session accepts.
        if !*overflow && line.last() == Some(&b'\r') {
            line.pop();
        }
        line.truncate(limit + 1);
        return true;
    }
    // A CR at the end of what has arrived may be the line end whose LF is still on its way.
    let pending_cr = usize::from(buf.last() == Some(&b'\r'));
    if !*overflow && line.len() + buf.len() - pending_cr > limit {
        let keep = (limit + 1).saturating_sub(line.len()).min(buf.len());
        line.extend_from_slice(&buf[..keep]);
        *overflow = true;
    }
    if *overflow {
        buf.clear();
    }
    false
}

impl Pop3Service {
    /// Runs one POP3 session to its end.
    pub async fn handle(self: Arc<Self>, conn: Accepted) {
        let client = conn.client;
        let mut config = self.config.clone();
        config.tls_active = conn.stream.is_tls();
        let mut session = Session::new(config);
        let mut stream = conn.stream;
        let mut lock: Option<MaildropGuard> = None;
        let (mut buf, mut line) = (Vec::new(), Vec::new());
        tracing::info!(%client, tls = stream.is_tls(), "pop3 session start");
        let result: std::io::Result<()> = async {
            stream.write_all(&session.greeting()).await?;
            loop {
                let limit = session.line_limit();
                match tokio::time::timeout(self.idle_timeout, read_line(&mut stream, &mut buf, &mut line, limit)).await
                {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => return Ok(()),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        stream.write_all(b"-ERR idle timeout, closing connection\r\n").await?;
                        return Ok(());
                    }
                }
                let mut step = session.handle_line(&line);
                loop {
                    match step {
                        Next::Reply(bytes) => {
                            stream.write_all(&bytes).await?;
                            break;
                        }
                        Next::Close(bytes) => {
                            stream.write_all(&bytes).await?;
                            return Ok(());
                        }
                        Next::Action(Action::StartTls { reply }) => {
                            stream.write_all(&reply).await?;
                            // Bytes pipelined after STLS came in the clear: never parse them.
                            buf.clear();
                            let Some(acceptor) = &self.tls else { return Ok(()) };
                            stream.upgrade(acceptor, HANDSHAKE_TIMEOUT).await?;
                            step = session.complete(Outcome::TlsStarted);
                        }
                        Next::Action(action) => {
                            let outcome = self.perform(action, client.ip(), &mut lock).await;
                            step = session.complete(outcome);
                        }
                    }
                }
            }
        }
        .await;
        let _ = stream.shutdown().await;
        drop(lock);
        match result {
            Ok(()) => tracing::info!(%client, user = ?session.user(), "pop3 session end"),
            Err(e) => tracing::info!(%client, error = %e, "pop3 session ended by I/O error"),
        }
    }

    async fn perform(&self, action: Action, ip: std::net::IpAddr, lock: &mut Option<MaildropGuard>) -> Outcome {
        // The store knows users by their canonical login, which the lock guard holds.
        let user = lock.as_ref().map(|g| g.user.clone()).unwrap_or_default();
        match action {
            Action::Authenticate { user, password } => {
                let login = match self.authenticator.verify(ip, &user, password.expose()).await {
                    Verdict::Granted(login) => login,
                    Verdict::Denied => return Outcome::BadCredentials,
                    Verdict::Unavailable => return Outcome::Unavailable,
                    Verdict::Throttled => return Outcome::Throttled,
                };
                match self.store.lock_maildrop(&login).await {
                    Ok(Some(held)) => {
                        *lock = Some(MaildropGuard { user: login, _lock: held });
                        Outcome::Authenticated
                    }
                    Ok(None) => Outcome::InUse,
                    Err(e) => {
                        tracing::warn!(user = %login, error = %e, "pop3 maildrop lock unavailable");
                        Outcome::Unavailable
                    }
                }
            }
            Action::LoadMaildrop => match self.store.messages(&user, "INBOX").await {
                Ok((status, messages)) => Outcome::Maildrop {
                    uid_validity: status.uid_validity,
                    messages: messages.iter().map(|m| MaildropEntry { uid: m.uid, size: m.size }).collect(),
                },
                Err(e) => {
                    tracing::warn!(%user, error = %e, "pop3 maildrop unavailable");
                    Outcome::Unavailable
                }
            },
            Action::Fetch { uid, .. } => {
                match self.store.fetch(&user, "INBOX", &UidSet::single(uid), BodyPart::Full).await {
                    Ok(mut found) => match found.pop().and_then(|m| m.body) {
                        Some(body) => Outcome::Message(body),
                        None => Outcome::Unavailable,
                    },
                    Err(_) => Outcome::Unavailable,
                }
            }
            Action::CommitDeletes { uids } => {
                let set: UidSet = uids.into_iter().collect();
                let deleted = Flags::system(SystemFlags::DELETED);
                let done = async {
                    self.store.store_flags(&user, "INBOX", &set, FlagOp::Add, &deleted, None).await?;
                    self.store.expunge(&user, "INBOX", Some(&set)).await
                }
                .await;
                match done {
                    Ok(gone) => {
                        tracing::info!(%user, deleted = gone.len(), "pop3 deletions committed");
                        Outcome::Committed
                    }
                    Err(e) => {
                        tracing::warn!(%user, error = %e, "pop3 deletions failed");
                        Outcome::Unavailable
                    }
                }
            }
            Action::StartTls { .. } => Outcome::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cut_line;

    /// Feeds `pieces` as successive reads; the line `cut_line` produces.
    fn cut(pieces: &[&[u8]], limit: usize) -> Vec<u8> {
        let (mut buf, mut line, mut overflow) = (Vec::new(), Vec::new(), false);
        for piece in pieces {
            buf.extend_from_slice(piece);
            if cut_line(&mut buf, &mut line, &mut overflow, limit) {
                return line;
            }
        }
        panic!("no line end in {pieces:?}");
    }

    #[test]
    fn lines_within_the_limit() {
        assert_eq!(cut(&[b"STAT\r\n"], 4), b"STAT");
        assert_eq!(cut(&[b"ST", b"AT\r", b"\n"], 4), b"STAT");
        assert_eq!(cut(&[b"STAT\n"], 4), b"STAT");
        assert_eq!(cut(&[b"STAT\r", b"\n"], 4), b"STAT");
    }

    #[test]
    fn over_long_lines_stay_over_long() {
        // The CR kept as the fifth octet must not be taken for the line end (fuzz finding F11).
        assert_eq!(cut(&[b"STAT", b"\rxxxx", b"\r\n"], 4), b"STAT\r");
        assert_eq!(cut(&[b"STATS\r\n"], 4), b"STATS");
        assert_eq!(cut(&[b"STAT\r\r\n"], 4), b"STAT\r");
        assert_eq!(cut(&[b"NOOPNOOPNOOP", b"\r\n"], 4).len(), 5);
    }
}
