//! The ManageSieve connection loop: socket I/O, password checks and the user's script files
//! around a [`Session`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sirms_storage::MailStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::session::{Action, Next, Outcome, Session, SessionConfig};
use crate::auth::{Authenticator, Verdict};
use crate::net::listener::Accepted;
use crate::net::stream::HANDSHAKE_TIMEOUT;

const READ_CHUNK: usize = 16 * 1024;

/// Everything a ManageSieve listener's sessions share.
pub struct SieveService {
    pub config: SessionConfig,
    pub authenticator: Authenticator,
    /// Where users' scripts are kept: their home, as for their mail.
    pub store: Arc<dyn MailStore>,
    pub tls: Option<TlsAcceptor>,
    /// Idle limit between commands.
    pub idle_timeout: Duration,
}

impl SieveService {
    /// Runs one session to its end.
    pub async fn handle(self: Arc<Self>, conn: Accepted) {
        let client = conn.client;
        let mut session = Session::new(self.config.clone(), conn.stream.is_tls());
        let mut stream = conn.stream;
        let health_check = conn.health_check;
        if !health_check {
            tracing::info!(%client, tls = stream.is_tls(), "managesieve session start");
        }
        let result: std::io::Result<()> = async {
            stream.write_all(&session.greeting()).await?;
            let mut input: Vec<u8> = Vec::new();
            loop {
                let (used, mut next) = session.input(&input);
                input.drain(..used);
                loop {
                    match next {
                        Next::Reply(out) => {
                            stream.write_all(&out).await?;
                            break;
                        }
                        Next::Close(out) => {
                            stream.write_all(&out).await?;
                            return Ok(());
                        }
                        Next::Action(Action::StartTls { reply }) => {
                            stream.write_all(&reply).await?;
                            // Bytes pipelined after STARTTLS came in the clear: never parse them.
                            input.clear();
                            let Some(acceptor) = &self.tls else { return Ok(()) };
                            stream.upgrade(acceptor, HANDSHAKE_TIMEOUT).await?;
                            next = session.complete(Outcome::TlsStarted);
                        }
                        Next::Action(action) => {
                            let outcome = self.perform(action, client.ip(), session.user()).await;
                            next = session.complete(outcome);
                        }
                    }
                }
                if used > 0 {
                    // A whole command was handled: the next may be waiting already.
                    continue;
                }
                let mut chunk = [0u8; READ_CHUNK];
                match tokio::time::timeout(self.idle_timeout, stream.read(&mut chunk)).await {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => input.extend_from_slice(&chunk[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        let mut out = Vec::new();
                        super::reply::bye(&mut out, None, "idle timeout");
                        stream.write_all(&out).await?;
                        return Ok(());
                    }
                }
            }
        }
        .await;
        let _ = stream.shutdown().await;
        match result {
            Ok(()) if health_check => {}
            Ok(()) => tracing::info!(%client, user = ?session.user(), "managesieve session end"),
            Err(e) => tracing::info!(%client, error = %e, "managesieve session ended by I/O error"),
        }
    }

    async fn perform(&self, action: Action, ip: IpAddr, user: Option<&str>) -> Outcome {
        let user = user.unwrap_or_default();
        match action {
            Action::Authenticate { user, password } => {
                let verdict = self.authenticator.verify(ip, &user, password.expose()).await;
                tracing::info!(client = %ip, login = %user, ?verdict, "managesieve auth");
                match verdict {
                    Verdict::Granted(login) => Outcome::Authenticated(login),
                    Verdict::Denied | Verdict::Throttled => Outcome::BadCredentials,
                    Verdict::Unavailable => Outcome::Unavailable,
                }
            }
            Action::Load => match self.store.user_files(user).await {
                Ok(files) => Outcome::Files(files),
                Err(e) => {
                    tracing::warn!(%user, error = %e, "sieve scripts unavailable");
                    Outcome::Unavailable
                }
            },
            Action::Write(writes) => {
                for (name, content) in writes {
                    if let Err(e) = self.store.put_user_file(user, &name, content).await {
                        tracing::warn!(%user, file = %name, error = %e, "sieve script not written");
                        return Outcome::Unavailable;
                    }
                }
                tracing::info!(%user, "sieve scripts changed");
                Outcome::Written
            }
            Action::StartTls { .. } => Outcome::Unavailable,
        }
    }
}
