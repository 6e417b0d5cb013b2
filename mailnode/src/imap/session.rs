//! The IMAP session: protocol state (not authenticated, authenticated, selected, logout) and the
//! dispatch of parsed commands to the handlers in [`super::command`].
//!
//! A [`Session`] runs one command at a time and writes every response to the sink it is given,
//! so it is driven the same way by the socket loop and by tests. Commands that change how the
//! connection reads (STARTTLS, IDLE, AUTHENTICATE without an initial response, LOGOUT) return a
//! [`Next`] telling the driver what to do.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use imap_types::auth::AuthenticateData;
use imap_types::command::CommandBody;
use sirms_storage::{BodyPart, Change, MailStore, UidSet};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::command::{append, searchres};
use super::connection::ImapLimits;
use super::error::{CommandError, CommandResult, Done};
use super::extension::esearch::Esearch;
use super::extension::{Decoded, Extension, SearchReturn};
use super::response::{self, Code, Status};
use super::selected::Selected;
use crate::auth::Authenticator;
use crate::quota::Quotas;

/// Where responses go: the connection, or a buffer in tests.
pub type Sink<'a> = dyn AsyncWrite + Unpin + Send + 'a;

/// How sessions of one listener behave.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Named in the greeting and BYE.
    pub hostname: String,
    /// STARTTLS is offered on a cleartext connection.
    pub starttls_offered: bool,
    /// LOGIN and AUTHENTICATE PLAIN without TLS (tests and closed networks only).
    pub allow_plaintext_auth: bool,
    /// Failed logins after which the connection is closed.
    pub max_auth_failures: u32,
    /// Malformed or invalid commands after which the connection is closed.
    pub max_bad_commands: u32,
    /// The largest message APPEND takes (the connection's literal limit), advertised as
    /// `APPENDLIMIT=n` (RFC 7889) so that clients do not upload what will be refused.
    pub max_append: u32,
    /// The most messages one APPEND may carry (MULTIAPPEND, RFC 3502).
    pub max_append_messages: u32,
    /// The most octets of messages one APPEND may carry together.
    pub max_append_command: u64,
}

impl SessionConfig {
    /// The defaults of a cleartext port 143 listener.
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            hostname: hostname.into(),
            starttls_offered: true,
            allow_plaintext_auth: false,
            max_auth_failures: 3,
            max_bad_commands: 20,
            max_append: ImapLimits::default().max_append,
            max_append_messages: ImapLimits::default().max_append_messages,
            max_append_command: ImapLimits::default().max_command,
        }
    }
}

/// What the driver does after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Close the connection (the responses, BYE included, are written).
    Close,
    /// The tagged OK is written: discard buffered input, run the TLS handshake, call [`Session::tls_started`].
    StartTls,
    /// The continuation is written: wait for DONE and for changes ([`Session::idle_wait`], [`Session::idle_done`]).
    Idle { tag: String },
    /// The `+` is written: the next line is the SASL response, for [`Session::authenticate_response`].
    Authenticate { tag: String },
    /// The tagged OK to COMPRESS DEFLATE is written: flush it, then deflate both ways (RFC 4978).
    Compress,
}

/// RFC 3501's states, for checks and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NotAuthenticated,
    Authenticated,
    Selected,
    Logout,
}

/// One IMAP session.
pub struct Session {
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) store: Arc<dyn MailStore>,
    pub(crate) authenticator: Authenticator,
    /// What the user and their domain may store.
    pub(crate) quotas: Quotas,
    pub(crate) client: IpAddr,
    pub(crate) tls_active: bool,
    /// The canonical login: the store's user name.
    pub(crate) user: Option<String>,
    pub(crate) selected: Option<Selected>,
    /// CONDSTORE was enabled (RFC 7162 §3.1): MODSEQ goes into FETCH responses about flag changes.
    pub(crate) condstore: bool,
    /// QRESYNC was enabled (RFC 7162 §3.2.3): VANISHED replaces EXPUNGE, and SELECT and UID
    /// FETCH take its resynchronisation parameters.
    pub(crate) qresync: bool,
    /// IMAP4rev2 was enabled (RFC 9051, not yet advertised): no \Recent and no RECENT, and
    /// SEARCH answers with ESEARCH.
    pub(crate) rev2: bool,
    pub(crate) auth_failures: u32,
    /// COMPRESS DEFLATE was accepted: a second one is `NO [COMPRESSIONACTIVE]`.
    compressed: bool,
    bad_commands: u32,
    logged_out: bool,
}

async fn send(out: &mut Sink<'_>, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes).await
}

impl Session {
    /// A new session for a client at `client`; `tls_active` on implicit-TLS ports.
    pub fn new(
        config: Arc<SessionConfig>,
        store: Arc<dyn MailStore>,
        authenticator: Authenticator,
        quotas: Quotas,
        client: IpAddr,
        tls_active: bool,
    ) -> Session {
        Session {
            config,
            store,
            authenticator,
            quotas,
            client,
            tls_active,
            user: None,
            selected: None,
            condstore: false,
            qresync: false,
            rev2: false,
            auth_failures: 0,
            compressed: false,
            bad_commands: 0,
            logged_out: false,
        }
    }

    /// The state the session is in.
    pub fn phase(&self) -> Phase {
        if self.logged_out {
            Phase::Logout
        } else if self.user.is_none() {
            Phase::NotAuthenticated
        } else if self.selected.is_some() {
            Phase::Selected
        } else {
            Phase::Authenticated
        }
    }

    /// The logged-in user, for logs.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The greeting.
    pub fn greeting(&self) -> Vec<u8> {
        let code = Code::Capability(self.capabilities());
        response::status(None, Status::Ok, Some(&code), &format!("{} IMAP4rev1 server ready", self.config.hostname))
    }

    /// Whether passwords may be sent on this connection now.
    pub(crate) fn plaintext_allowed(&self) -> bool {
        self.tls_active || self.config.allow_plaintext_auth
    }

    /// The CAPABILITY list for the current state.
    pub fn capabilities(&self) -> String {
        let mut caps = String::from(
            "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MULTIAPPEND MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE \
             QRESYNC QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE BINARY ESEARCH LIST-STATUS STATUS=SIZE CREATE-SPECIAL-USE WITHIN SEARCHRES COMPRESS=DEFLATE \
             SORT SORT=DISPLAY THREAD=REFERENCES THREAD=ORDEREDSUBJECT PREVIEW",
        );
        // One limit for every mailbox, so it goes in the capability (RFC 7889) and a
        // client need not ask mailbox by mailbox.
        caps.push_str(&format!(" APPENDLIMIT={}", self.config.max_append));
        if self.user.is_none() {
            if self.config.starttls_offered && !self.tls_active {
                caps.push_str(" STARTTLS");
            }
            if self.plaintext_allowed() {
                caps.push_str(" AUTH=PLAIN");
            } else {
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps
    }

    /// The TLS handshake after STARTTLS finished: state learned before it is forgotten (RFC 3501 §6.2.1).
    pub fn tls_started(&mut self) {
        self.tls_active = true;
    }

    /// Answers input that did not parse as a command; closes after too many.
    pub async fn bad_input(&mut self, tag: Option<&str>, text: &str, out: &mut Sink<'_>) -> io::Result<Next> {
        self.bad_commands = self.bad_commands.saturating_add(1);
        send(out, &response::status(tag, Status::Bad, None, text)).await?;
        if self.bad_commands >= self.config.max_bad_commands.max(1) {
            send(out, &response::status(None, Status::Bye, None, "too many invalid commands")).await?;
            return Ok(Next::Close);
        }
        Ok(Next::Continue)
    }

    /// A tagged NO that did not reach command dispatch (a literal refused before it was sent).
    pub async fn refuse(&mut self, tag: &str, code: Option<Code>, text: &str, out: &mut Sink<'_>) -> io::Result<()> {
        send(out, &response::status(Some(tag), Status::No, code.as_ref(), text)).await
    }

    /// Runs one command.
    pub async fn execute(&mut self, decoded: Decoded<'_>, out: &mut Sink<'_>) -> io::Result<Next> {
        let Decoded { mut command, extension, saved_result, spilled } = decoded;
        let tag = command.tag.inner().to_string();
        let name = command.body.name();
        if let Err(text) = self.check_state(&command.body) {
            return self.bad_input(Some(&tag), text, out).await;
        }
        // RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE or SEARCH by sequence number (nor
        // SORT or THREAD, its variants), since the client could not tell which messages the
        // results refer to.
        let expunge_allowed = !matches!(
            command.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
                | CommandBody::Sort { uid: false, .. }
                | CommandBody::Thread { uid: false, .. }
        );
        // `$` is the saved result (RFC 5182): put in for the marker the pre-decoder left. An
        // empty one selects nothing, which is no error: the command does nothing but complete.
        if saved_result && !searchres::substitute(self.selected.as_ref(), &mut command.body) {
            let text = searchres::nothing_selected(&command.body);
            return self.finish(&tag, name, Ok(Done::ok(text)), expunge_allowed, out).await;
        }
        let result: CommandResult = match command.body {
            CommandBody::Capability => self.capability(out).await,
            CommandBody::Noop | CommandBody::Check => Ok(Done::ok(format!("{name} completed"))),
            CommandBody::Logout => {
                send(out, &response::status(None, Status::Bye, None, "logging out")).await?;
                send(out, &response::status(Some(&tag), Status::Ok, None, "LOGOUT completed")).await?;
                self.logged_out = true;
                self.selected = None;
                return Ok(Next::Close);
            }
            CommandBody::StartTLS => {
                if self.tls_active || !self.config.starttls_offered {
                    Err(CommandError::bad("TLS is not available here or already active"))
                } else {
                    send(out, &response::status(Some(&tag), Status::Ok, None, "begin TLS negotiation now")).await?;
                    return Ok(Next::StartTls);
                }
            }
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                return self.login(&tag, &user, &password, out).await;
            }
            CommandBody::Authenticate { mechanism, initial_response } => {
                let initial = initial_response.map(|r| r.declassify().to_vec());
                return self.authenticate(&tag, &mechanism, initial, out).await;
            }
            CommandBody::Enable { capabilities } => self.enable(capabilities.as_ref(), out).await,
            CommandBody::Id { .. } => self.id(out).await,
            CommandBody::Namespace => self.namespace(out).await,
            CommandBody::Select { mailbox, parameters } => self.select(&mailbox, false, &parameters, out).await,
            CommandBody::Examine { mailbox, parameters } => self.select(&mailbox, true, &parameters, out).await,
            CommandBody::Create { mailbox } => match &extension {
                Extension::CreateUse(asked) => self.create(&mailbox, &asked.uses).await,
                _ => self.create(&mailbox, &[]).await,
            },
            CommandBody::Delete { mailbox } => self.delete(&mailbox).await,
            CommandBody::Rename { from, to } => self.rename(&from, &to).await,
            CommandBody::Subscribe { mailbox } => self.subscribe(&mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&mailbox, false).await,
            CommandBody::List { reference, mailbox_wildcard } => match &extension {
                Extension::List(extended) => self.list_extended(&reference, extended, out).await,
                _ => self.list(&reference, &mailbox_wildcard, false, out).await,
            },
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.list(&reference, &mailbox_wildcard, true, out).await
            }
            CommandBody::Status { mailbox, item_names } => match &extension {
                // The command's items are a placeholder when APPENDLIMIT was asked for.
                Extension::Status(asked) => self.status(&mailbox, &asked.items, true, out).await,
                _ => self.status(&mailbox, &item_names, false, out).await,
            },
            CommandBody::Append { mailbox, flags, date, message } => {
                let messages = match extension {
                    Extension::MultiAppend(multi) => multi.messages,
                    _ => vec![append::single(&flags, date.as_ref(), &message, &spilled)],
                };
                self.append(&mailbox, messages, &spilled).await
            }
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(&mailbox, out).await,
            CommandBody::GetQuota { root } => self.get_quota(&root, out).await,
            CommandBody::SetQuota { .. } => self.set_quota().await,
            CommandBody::Close => self.close(true).await,
            CommandBody::Unselect => self.close(false).await,
            CommandBody::Expunge => self.expunge(None, out).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(&sequence_set), out).await,
            CommandBody::Search { charset, criteria, uid } => {
                let esearch = match extension {
                    Extension::SearchReturn(options) => Some(Esearch { tag: &tag, options }),
                    // RFC 9051 §6.4.4: IMAP4rev2 has no SEARCH response; a SEARCH without
                    // RETURN is answered as RETURN (ALL).
                    _ if self.rev2 => {
                        Some(Esearch { tag: &tag, options: SearchReturn { all: true, ..Default::default() } })
                    }
                    _ => None,
                };
                self.search(charset.as_ref(), &criteria, uid, esearch, out).await
            }
            CommandBody::Sort { sort_criteria, charset, search_criteria, uid } => {
                self.sort(&sort_criteria, &charset, &search_criteria, uid, out).await
            }
            CommandBody::Thread { algorithm, charset, search_criteria, uid } => {
                self.thread(&algorithm, &charset, &search_criteria, uid, out).await
            }
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                let preview = matches!(extension, Extension::Preview(_));
                self.fetch(&sequence_set, macro_or_item_names, uid, &modifiers, preview, out).await
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                self.store(&sequence_set, kind, response, &flags, uid, &modifiers, out).await
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                self.copy_move(&sequence_set, &mailbox, uid, false, out).await
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                self.copy_move(&sequence_set, &mailbox, uid, true, out).await
            }
            // imap-codec knows DEFLATE alone, RFC 4978's only algorithm.
            CommandBody::Compress { .. } => {
                if self.compressed {
                    Err(CommandError::no(Some(Code::CompressionActive), "DEFLATE is already active"))
                } else {
                    send(out, &response::status(Some(&tag), Status::Ok, None, "DEFLATE active")).await?;
                    self.compressed = true;
                    return Ok(Next::Compress);
                }
            }
            CommandBody::Idle => {
                self.report_changes(true, out).await?;
                send(out, &response::continuation("idling")).await?;
                return Ok(Next::Idle { tag });
            }
        };
        self.finish(&tag, name, result, expunge_allowed, out).await
    }

    /// Reports changes, then writes the tagged completion of a command.
    async fn finish(
        &mut self,
        tag: &str,
        name: &str,
        result: CommandResult,
        expunge_allowed: bool,
        out: &mut Sink<'_>,
    ) -> io::Result<Next> {
        let (status, code, text) = match result {
            Ok(done) => (Status::Ok, done.code, done.text.into_owned()),
            Err(CommandError::Io(e)) => return Err(e),
            Err(CommandError::Bad(text)) => return self.bad_input(Some(tag), &text, out).await,
            Err(CommandError::No { code, text }) => (Status::No, code, text.into_owned()),
            Err(CommandError::Store(e)) => {
                let (code, text) = CommandError::store_reply(&e);
                if code == Code::Unavailable {
                    tracing::warn!(user = ?self.user, command = name, error = %e, "imap store error");
                }
                (Status::No, Some(code), text)
            }
        };
        self.report_changes(expunge_allowed, out).await?;
        let text = if status == Status::Ok && text.is_empty() { format!("{name} completed") } else { text };
        send(out, &response::status(Some(tag), status, code.as_ref(), &text)).await?;
        Ok(Next::Continue)
    }

    /// Which commands each state accepts (RFC 3501 §6).
    fn check_state(&self, body: &CommandBody<'_>) -> Result<(), &'static str> {
        use CommandBody as C;
        let phase = self.phase();
        let any = matches!(body, C::Capability | C::Noop | C::Logout | C::Id { .. });
        let unauthenticated = matches!(body, C::StartTLS | C::Login { .. } | C::Authenticate { .. });
        let selected_only = matches!(
            body,
            C::Check
                | C::Close
                | C::Unselect
                | C::Expunge
                | C::ExpungeUid { .. }
                | C::Search { .. }
                | C::Sort { .. }
                | C::Thread { .. }
                | C::Fetch { .. }
                | C::Store { .. }
                | C::Copy { .. }
                | C::Move { .. }
        );
        match phase {
            _ if any => Ok(()),
            Phase::NotAuthenticated if unauthenticated => Ok(()),
            Phase::NotAuthenticated => Err("log in first"),
            _ if unauthenticated => Err("already authenticated"),
            Phase::Authenticated if selected_only => Err("no mailbox selected"),
            Phase::Logout => Err("logging out"),
            _ => Ok(()),
        }
    }

    /// After this session added messages up to `uid` to `mailbox` (APPEND, COPY), brings the
    /// selected view up to them if that is the selected mailbox, from the store itself: the
    /// client must hear of them before the tagged OK (RFC 3501 §6.3.11, RFC 9051 §6.3.12), but
    /// the change stream may bring them later (from a storage node, over the network). The
    /// stream's own report of them comes later and is dropped as a duplicate by [`Selected::push`].
    pub(crate) async fn catch_up(&mut self, mailbox: &str, uid: u32) -> Result<(), CommandError> {
        let user = self.login_name()?;
        let Some(view) = self.selected.as_ref() else { return Ok(()) };
        let last = view.last_uid();
        if view.name != mailbox || uid <= last {
            return Ok(());
        }
        let fetched =
            self.store.fetch(&user, mailbox, &UidSet::range(last.saturating_add(1), uid), BodyPart::None).await?;
        let view = self.selected()?;
        for message in fetched {
            view.enqueue(Change::Appended(message.meta));
        }
        Ok(())
    }

    /// Turns CONDSTORE on (RFC 7162 §3.1). When that happens with a mailbox selected (a FETCH
    /// of MODSEQ, a SEARCH MODSEQ, a STORE UNCHANGEDSINCE), the client has had no HIGHESTMODSEQ
    /// for it yet: it gets one now, as SELECT would have given it, so its mod-sequence cache has
    /// a starting point.
    pub(crate) async fn enable_condstore(&mut self, out: &mut Sink<'_>) -> io::Result<()> {
        if self.condstore {
            return Ok(());
        }
        self.condstore = true;
        let Some(view) = &self.selected else { return Ok(()) };
        let code = Code::HighestModSeq(view.highest_modseq);
        send(out, &response::status(None, Status::Ok, Some(&code), "CONDSTORE enabled")).await
    }

    /// The selected mailbox, or the BAD a command needing one gets.
    pub(crate) fn selected(&mut self) -> Result<&mut Selected, CommandError> {
        self.selected.as_mut().ok_or_else(|| CommandError::bad("no mailbox selected"))
    }

    /// The logged-in user.
    pub(crate) fn login_name(&self) -> Result<String, CommandError> {
        self.user.clone().ok_or_else(|| CommandError::bad("log in first"))
    }

    /// Reports queued changes of the selected mailbox as untagged EXISTS, RECENT, FETCH and
    /// (when `expunge_allowed`) EXPUNGE responses.
    pub async fn report_changes(&mut self, expunge_allowed: bool, out: &mut Sink<'_>) -> io::Result<()> {
        let Some(user) = self.user.clone() else { return Ok(()) };
        let (condstore, qresync, rev2) = (self.condstore, self.qresync, self.rev2);
        let Some(view) = self.selected.as_mut() else { return Ok(()) };
        view.poll_changes();
        let mut appended: Vec<u32> = Vec::new();
        while let Some(change) = view.next_queued() {
            match change {
                Change::Appended(meta) => {
                    let uid = meta.uid;
                    if view.push(meta) {
                        appended.push(uid);
                    }
                }
                Change::FlagsChanged(meta) => {
                    let Some(index) = view.index_of(meta.uid) else { continue };
                    let unchanged = view.entries()[index].meta.flags == meta.flags;
                    // Stale (this session's own STORE already showed a newer state) or already known.
                    if !view.update(meta) || unchanged {
                        continue;
                    }
                    // A FETCH may name only a message the client was told exists.
                    if appended.contains(&view.entries()[index].meta.uid) {
                        Self::announce(&self.store, &user, rev2, view, &mut appended, out).await?;
                    }
                    if let Some(flags) = view.flags_update() {
                        send(out, &flags).await?;
                    }
                    send(out, &view.flags_fetch(index, condstore)).await?;
                }
                Change::Expunged(uids) => {
                    if !expunge_allowed {
                        view.requeue(Change::Expunged(uids));
                        break;
                    }
                    // New messages are announced before they can be expunged, so numbers stay right.
                    Self::announce(&self.store, &user, rev2, view, &mut appended, out).await?;
                    let removed: Vec<(u32, u32)> =
                        uids.into_iter().filter_map(|uid| Some((view.remove(uid)?, uid))).collect();
                    send(out, &response::expunged(&removed, qresync)).await?;
                }
                Change::MailboxGone => {
                    if !expunge_allowed {
                        view.requeue(Change::MailboxGone);
                        break;
                    }
                    let uids: Vec<u32> = view.entries().iter().rev().map(|e| e.meta.uid).collect();
                    let removed: Vec<(u32, u32)> =
                        uids.into_iter().filter_map(|uid| Some((view.remove(uid)?, uid))).collect();
                    send(out, &response::expunged(&removed, qresync)).await?;
                    send(out, &response::status(None, Status::No, None, "mailbox was deleted or renamed")).await?;
                }
                Change::Lagged => match self.store.messages(&user, &view.name).await {
                    Ok((_, snapshot)) => view.resync(snapshot),
                    Err(e) => tracing::warn!(%user, error = %e, "imap resync failed"),
                },
            }
        }
        Self::announce(&self.store, &user, rev2, view, &mut appended, out).await
    }

    /// Sends EXISTS and RECENT (EXISTS alone under IMAP4rev2) for messages just added to the view.
    async fn announce(
        store: &Arc<dyn MailStore>,
        user: &str,
        rev2: bool,
        view: &mut Selected,
        appended: &mut Vec<u32>,
        out: &mut Sink<'_>,
    ) -> io::Result<()> {
        if appended.is_empty() {
            return Ok(());
        }
        appended.clear();
        // IMAP4rev2 has no \Recent (RFC 9051 Appendix E): such a session leaves it to others.
        if !view.read_only && !rev2 {
            // The first session told of a message takes its \Recent (RFC 3501 §2.3.2).
            match store.claim_recent(user, &view.name).await {
                Ok(recent) => view.mark_recent(&recent),
                Err(e) => tracing::debug!(error = %e, "claim_recent failed"),
            }
        }
        if let Some(flags) = view.flags_update() {
            send(out, &flags).await?;
        }
        send(out, &exists_and_recent(view, rev2)).await
    }

    /// Waits until the selected mailbox changes (for IDLE); never returns without one.
    pub async fn idle_wait(&mut self) {
        match self.selected.as_mut() {
            Some(view) => view.wait_change().await,
            None => std::future::pending().await,
        }
    }

    /// Ends IDLE: reports what is left and writes the tagged OK (or BAD if the line was not DONE).
    pub async fn idle_done(&mut self, tag: &str, done: bool, out: &mut Sink<'_>) -> io::Result<Next> {
        if !done {
            return self.bad_input(Some(tag), "expected DONE", out).await;
        }
        self.report_changes(true, out).await?;
        send(out, &response::status(Some(tag), Status::Ok, None, "IDLE terminated")).await?;
        Ok(Next::Continue)
    }

    /// Takes the client's SASL response after `AUTHENTICATE` without an initial response.
    pub async fn authenticate_response(
        &mut self,
        tag: &str,
        data: AuthenticateData<'_>,
        out: &mut Sink<'_>,
    ) -> io::Result<Next> {
        match data {
            AuthenticateData::Cancel => {
                send(out, &response::status(Some(tag), Status::Bad, None, "authentication cancelled")).await?;
                Ok(Next::Continue)
            }
            AuthenticateData::Continue(bytes) => self.plain(tag, bytes.declassify(), out).await,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// `* n EXISTS` and, but under IMAP4rev2, `* n RECENT` for the view as it is.
pub(crate) fn exists_and_recent(view: &Selected, rev2: bool) -> Vec<u8> {
    let mut lines = format!("* {} EXISTS\r\n", view.exists());
    if !rev2 {
        let recent = view.entries().iter().filter(|e| e.recent).count();
        lines.push_str(&format!("* {recent} RECENT\r\n"));
    }
    lines.into_bytes()
}
