//! The SMTP connection loop: socket I/O around a [`Session`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sirms_storage::StoreError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::reply::replies;
use super::session::{Action, Data, Envelope, Next, Outcome, Session, SessionConfig};
use crate::auth::{Authenticator, Verdict};
use crate::cluster::spool_copy::SpoolPeers;
use crate::delivery::{Delivering, Delivery, Folder};
use crate::directory::Directory;
use crate::inbound::dnsbl::Dnsbl;
use crate::inbound::greylist::Greylist;
use crate::inbound::{Arrival, Checks};
use crate::metrics::NodeMetrics;
use crate::net::listener::Accepted;
use crate::net::stream::HANDSHAKE_TIMEOUT;
use crate::outbound::dsn::{self, RecipientReport};
use crate::queue::notice::Notifier;
use crate::queue::{self, QueuedEnvelope, Spool};
use crate::sieve::deliver::Plan;
use crate::spill::{Received, SpillDir, SpillFile};

/// Read buffer size; the session bounds lines and messages itself.
const READ_CHUNK: usize = 16 * 1024;

/// Everything an SMTP listener's sessions share.
pub struct SmtpService {
    pub config: Arc<SessionConfig>,
    pub directory: Arc<dyn Directory>,
    pub authenticator: Authenticator,
    pub delivery: Delivery,
    /// Where messages go that cannot reach every mailbox now.
    pub spool: Arc<Spool>,
    /// Other mail nodes, one of which keeps a copy of every spool entry (`None`: a node alone).
    pub spool_peers: Option<Arc<SpoolPeers>>,
    pub tls: Option<TlsAcceptor>,
    /// Idle limit between commands (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub idle_timeout: Duration,
    /// Prefix of session ids: the node's id and start time, so ids are unique in the cluster.
    pub id_prefix: String,
    /// Where accepted messages are counted.
    pub metrics: Arc<NodeMetrics>,
    /// Tells senders who asked (DSN NOTIFY=SUCCESS) of their messages' delivery.
    pub notifier: Notifier,
    /// What the node checks on a message before accepting it.
    pub checks: Arc<Checks>,
    /// DNS blocklists asked when a client connects (port 25 only).
    pub dnsbl: Option<Arc<Dnsbl>>,
    /// Greylisting at RCPT (port 25 only; the session asks only when its config says so).
    pub greylist: Option<Arc<Greylist>>,
    /// Where large messages are written as they arrive.
    pub spill: Arc<SpillDir>,
}

impl SmtpService {
    /// Makes a message durable: straight into the local recipients' mailboxes, and into the
    /// spool for recipients whose home is unreachable or who lack room and for foreign
    /// recipients. `Delivered(true)` when every recipient is covered (the client gets 250);
    /// `OverQuota` when the message went nowhere because no recipient has room for it.
    async fn accept(
        &self,
        msg_id: &str,
        envelope: &Envelope,
        message: Received,
        folder: Folder,
        spam_score: Option<u8>,
        checked_by: Option<&str>,
    ) -> Outcome {
        let message: Bytes = message.into_bytes();
        let delivering = Delivering { id: msg_id, from: &envelope.from, folder, spam_score, checked_by };
        let plans = self.delivery.plans(&delivering, &envelope.users, &message).await;
        if let Some(reason) = rejected_by_every_script(envelope, &plans) {
            tracing::info!(msg = %msg_id, users = ?envelope.users, %reason, "message refused: every recipient's sieve script rejects it");
            return Outcome::Refused(replies::sieve_rejected(reason));
        }
        let results = self.delivery.deliver_planned(&delivering, &envelope.users, plans, message.clone()).await;
        let over_quota = results.iter().filter(|(_, r)| matches!(r, Err(StoreError::OverQuota { .. }))).count();
        if over_quota > 0 && over_quota == envelope.users.len() && envelope.remote.is_empty() {
            tracing::info!(msg = %msg_id, users = ?envelope.users, "message refused: no recipient has room");
            return Outcome::OverQuota;
        }
        let delivered: Vec<RecipientReport> = (results.iter())
            .filter(|(user, r)| r.is_ok() && envelope.dsn.rcpt(user).notify.success())
            .map(|(user, _)| RecipientReport::new(user.clone(), ""))
            .collect();
        if !delivered.is_empty() {
            // The sender asked to hear of these deliveries (NOTIFY=SUCCESS): the notice is
            // queued before the 250, as the queue's own notices are.
            let sent = QueuedEnvelope {
                id: msg_id.to_string(),
                from: envelope.from.clone(),
                dsn: envelope.dsn.clone(),
                ..QueuedEnvelope::default()
            };
            self.notifier.notify(&sent, dsn::Action::Delivered, &delivered, &message).await;
        }
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|(user, r)| {
                r.err().map(|e| {
                    tracing::warn!(msg = %msg_id, %user, error = %e, "delivery deferred to the spool");
                    user
                })
            })
            .collect();
        if failed.is_empty() && envelope.remote.is_empty() {
            return Outcome::Delivered(true);
        }
        let mut queued = QueuedEnvelope {
            id: msg_id.to_string(),
            from: envelope.from.clone(),
            local: failed,
            remote: envelope.remote.clone(),
            created: queue::now(),
            dsn: envelope.dsn.clone(),
            folder,
            requiretls: envelope.requiretls,
            checked_by: checked_by.unwrap_or_default().to_string(),
            ..QueuedEnvelope::default()
        };
        // In a cluster the spool entry gets a copy on another node first, so that the `250`
        // does not rest on one disk; a node alone has only its own, and so has a node whose
        // peers are all down (said in the log and the metrics; the queue runner makes the
        // copy once one answers).
        let peers = self.spool_peers.as_ref().filter(|p| p.any());
        if let Some(peers) = peers {
            match peers.keep(&queued, &message).await {
                Ok(peer) => queued.copy = peer,
                Err(why) => {
                    self.metrics.spool_single_copy.inc();
                    tracing::warn!(msg = %msg_id, %why, "no other node took a copy: spooled on this node alone for now");
                }
            }
        }
        let copy = queued.copy.clone();
        match self.spool.run(move |s| s.enqueue(&queued, &message)).await {
            Ok(()) => Outcome::Delivered(true),
            Err(e) => {
                tracing::error!(msg = %msg_id, error = %e, "cannot spool message");
                if let Some(peers) = peers {
                    peers.forget(&copy, msg_id).await;
                }
                Outcome::Delivered(false)
            }
        }
    }

    /// Runs the node's checks on a message, then [`Self::accept`]s it unless they refused it.
    async fn check_and_accept(&self, client: IpAddr, msg_id: &str, envelope: &Envelope, message: Received) -> Outcome {
        // Null-sender mail is greylisted here, if at all, not at RCPT (RFC 6647): first, so a
        // deferred report costs no content check, and before anything is stored.
        let greylist = self.greylist.as_ref().filter(|_| envelope.login.is_none());
        if let Some(greylist) = greylist
            && let Some(reply) = greylist.check_after_data(msg_id, client, &envelope.from, &envelope.users).await
        {
            tracing::info!(msg = %msg_id, %client, users = ?envelope.users, "null-sender message greylisted after DATA");
            return Outcome::Refused(reply);
        }
        if self.checks.is_empty() {
            return self.accept(msg_id, envelope, message, Folder::Inbox, None, None).await;
        }
        let arrival = Arrival {
            id: msg_id,
            client,
            helo: &envelope.helo,
            from: &envelope.from,
            recipients: envelope.users.iter().chain(&envelope.remote).map(String::as_str).collect(),
            login: envelope.login.as_deref(),
            tls: envelope.tls,
        };
        let mut verdict = self.checks.check(&arrival, message.as_slice()).await;
        if let Some(reply) = verdict.refuse.take() {
            tracing::info!(msg = %msg_id, %client, from = %envelope.from, reply = ?reply, "message refused by the node's checks");
            return Outcome::Refused(reply);
        }
        let folder = if verdict.junk { Folder::Junk } else { Folder::Inbox };
        let spam_score = verdict.spam_score.map(|score| score.clamp(1.0, 10.0).round() as u8);
        let checked_by = verdict.checked_by.take();
        self.accept(msg_id, envelope, verdict.apply(message), folder, spam_score, checked_by.as_deref()).await
    }

    /// The message of a `Deliver` action: whole, or its spill file finished and mapped.
    async fn received(&self, data: Data, spill: Option<SpillFile>) -> std::io::Result<Received> {
        match data {
            Data::Whole(message) => Ok(Received::Memory(message)),
            Data::Spilled { head, tail } => {
                let spill = spill.ok_or_else(|| std::io::Error::other("spilled data without a spill file"))?;
                Ok(Received::Spilled(spill.finish(&head, tail).await?))
            }
        }
    }

    /// Runs one SMTP session to its end.
    pub async fn handle(self: Arc<Self>, conn: Accepted) {
        let client = conn.client;
        let id = format!("{}{:x}", self.id_prefix, conn.number);
        let mut session =
            Session::new(self.config.clone(), self.directory.clone(), client, conn.stream.is_tls(), id.clone());
        let mut stream = conn.stream;
        let dnsbl = self.dnsbl.as_ref().filter(|_| !self.config.submission && !conn.health_check);
        if let Some(zone) = async { dnsbl?.listing(client.ip()).await }.await {
            tracing::info!(session = %id, %client, %zone, "client refused at connect: listed by a DNS blocklist");
            self.metrics.dnsbl_refused.inc();
            let _ = stream.write_all(&replies::dnsbl_listed(client.ip(), zone).to_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        // The current transaction's data past the spill threshold.
        let mut spill: Option<SpillFile> = None;
        let mut out = session.greeting();
        let health_check = conn.health_check;
        if health_check {
            tracing::debug!(session = %id, %client, "router health check");
        } else {
            tracing::info!(session = %id, %client, tls = stream.is_tls(), "smtp session start");
        }
        let result: std::io::Result<()> = async {
            loop {
                let mut iter = input.iter();
                let mut flow = session.process(&mut iter, &mut out);
                let consumed = input.len() - iter.as_slice().len();
                input.drain(..consumed);
                if let Next::Spill { first, bytes } = flow {
                    if first || spill.is_none() {
                        spill = Some(self.spill.create()?);
                    }
                    if let Some(file) = spill.as_mut() {
                        file.write(bytes).await?;
                    }
                    continue;
                }
                // Commands pipelined behind an action wait in `input`: serve them before reading.
                let acted = matches!(flow, Next::Action(_));
                while let Next::Action(action) = flow {
                    stream.write_all(&out).await?;
                    out.clear();
                    let outcome = match action {
                        Action::StartTls => {
                            // Anything pipelined after STARTTLS was sent in the clear: drop it
                            // (the STARTTLS command-injection attack).
                            input.clear();
                            let Some(acceptor) = &self.tls else { return Ok(()) };
                            match stream.upgrade(acceptor, HANDSHAKE_TIMEOUT).await {
                                Ok(()) => Outcome::TlsStarted,
                                Err(e) => {
                                    tracing::info!(session = %id, error = %e, "STARTTLS handshake failed");
                                    return Ok(());
                                }
                            }
                        }
                        Action::Authenticate { login, password } => {
                            let verdict = self.authenticator.verify(client.ip(), &login, &password).await;
                            tracing::info!(session = %id, %client, ?login, ?verdict, "smtp auth");
                            match verdict {
                                Verdict::Granted(canonical) => Outcome::Authenticated(Some(canonical)),
                                Verdict::Denied => Outcome::Authenticated(None),
                                Verdict::Unavailable => Outcome::AuthUnavailable,
                                Verdict::Throttled => Outcome::AuthThrottled,
                            }
                        }
                        Action::Greylist { from, rcpt } => {
                            let greylist = self.greylist.as_ref();
                            Outcome::Greylist(async { greylist?.check(&id, client.ip(), &from, &rcpt).await }.await)
                        }
                        Action::Deliver { id: msg_id, envelope, message } => {
                            let outcome = match self.received(message, spill.take()).await {
                                Ok(message) => self.check_and_accept(client.ip(), &msg_id, &envelope, message).await,
                                Err(e) => {
                                    tracing::error!(session = %id, msg = %msg_id, error = %e, "spilled message unreadable");
                                    Outcome::Delivered(false)
                                }
                            };
                            let ok = outcome == Outcome::Delivered(true);
                            if ok {
                                self.metrics.messages_received.inc();
                            }
                            tracing::info!(
                                session = %id, %client, msg = %msg_id, from = %envelope.from,
                                to = ?envelope.users, remote = ?envelope.remote, ok, ?outcome, "message accepted"
                            );
                            outcome
                        }
                    };
                    flow = session.complete(outcome, &mut out);
                }
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
                if flow == Next::Close {
                    return Ok(());
                }
                if acted && !input.is_empty() {
                    continue;
                }
                let mut chunk = [0u8; READ_CHUNK];
                match tokio::time::timeout(self.idle_timeout, stream.read(&mut chunk)).await {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => input.extend_from_slice(&chunk[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        session.timeout(&mut out);
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
            Ok(()) => tracing::info!(session = %id, %client, "smtp session end"),
            Err(e) => tracing::info!(session = %id, %client, error = %e, "smtp session ended by I/O error"),
        }
    }
}

/// The reason to refuse a message in SMTP when every recipient's script rejects it; `None`
/// when any recipient takes it or the message also goes elsewhere (foreign recipients): a
/// refusal answers for all of them, so then the rejecting scripts' senders get bounces.
fn rejected_by_every_script<'p>(envelope: &Envelope, plans: &'p [Plan]) -> Option<&'p str> {
    if !envelope.remote.is_empty() {
        return None;
    }
    let mut reasons = plans.iter().map(Plan::rejection);
    let first = reasons.next()??;
    reasons.all(|r| r.is_some()).then_some(first)
}
