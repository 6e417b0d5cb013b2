//! The SMTP server session as a state machine over bytes: no sockets, no runtime.
//!
//! The connection loop feeds it input with [`Session::process`]; replies are appended to
//! an output buffer, which the loop flushes whenever the session needs more input — so
//! pipelined commands (RFC 2920) get their replies in one write. Work that needs I/O
//! (checking a password, delivering, starting TLS) comes back as an [`Action`]; the loop
//! performs it and hands the [`Outcome`] to [`Session::complete`].

use std::net::SocketAddr;
use std::slice::Iter;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_REQUIRETLS, MAIL_SMTPUTF8, Request};

use super::dsn::{Dsn, Notify, RcptDsn};
use super::hops;
use super::rate::SendRate;
use super::received::{Trace, protocol};
use super::reply::{Reply, replies};
use crate::directory::{Directory, Recipient};

/// Longest line of an AUTH exchange (RFC 4954 §4).
const MAX_AUTH_LINE: usize = 12_288;
/// Longest command line (RFC 5321 allows 512 octets, extensions more; Postfix uses 2048).
pub const MAX_COMMAND_LINE: usize = 2048;

/// Whether a parsed envelope address may go into headers and logs: no control characters
/// (C0, DEL, C1) and, where there is an `@`, a domain after it. Empty is the null path.
fn plausible_path(address: &str) -> bool {
    !address.chars().any(char::is_control) && address.rsplit_once('@').is_none_or(|(_, domain)| !domain.is_empty())
}

/// What a session may do, fixed per listener.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The node's name: greeting, EHLO and `Received:` say it, so admins see who served.
    pub hostname: String,
    /// Submission port: mail is accepted only from authenticated users.
    pub submission: bool,
    /// Whether STARTTLS can be offered.
    pub tls_available: bool,
    /// Whether AUTH is allowed without TLS.
    pub allow_plaintext_auth: bool,
    pub max_message_size: usize,
    /// Message data past this many octets is handed out in [`Next::Spill`] chunks as it
    /// arrives, instead of being held ([`crate::spill`]); `usize::MAX` holds every message.
    pub spill_threshold: usize,
    pub max_recipients: usize,
    /// Most hops (`Received:` and `Delivered-To:` headers) a message may arrive with: more is
    /// a mail loop ([`super::hops`]).
    pub max_hops: usize,
    /// Protocol errors tolerated before the session is closed.
    pub max_errors: u32,
    /// Failed AUTH attempts tolerated before the session is closed.
    pub max_auth_failures: u32,
    /// How many recipients authenticated senders may add (shared by the node's listeners).
    pub send_rate: Arc<SendRate>,
    /// Greylisting is on (port 25): every local recipient of a sender who has not logged in
    /// is asked about with [`Action::Greylist`] before its reply.
    pub greylisting: bool,
}

/// The envelope of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path; empty for the null sender.
    pub from: String,
    /// The local users (logins) to deliver to, without duplicates.
    pub users: Vec<String>,
    /// Foreign recipients of an authenticated sender, for the outbound queue.
    pub remote: Vec<String>,
    /// What the sender asked to be told (RFC 3461), by user and foreign recipient.
    pub dsn: Dsn,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// The authenticated login; `None` for mail from the Internet.
    pub login: Option<String>,
    /// Whether the session ran over TLS.
    pub tls: bool,
    /// The sender asked for checked TLS on every hop (RFC 8689 `REQUIRETLS`).
    pub requiretls: bool,
}

/// I/O the session needs done.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Check `password` for `login` (slow on purpose: argon2).
    Authenticate { login: String, password: String },
    /// Store `message` durably for every user of `envelope`; answer with its id.
    Deliver { id: String, envelope: Box<Envelope>, message: Data },
    /// Flush the 220 reply, then run the TLS handshake.
    StartTls,
    /// Ask greylisting about recipient `rcpt` of reverse path `from`.
    Greylist { from: String, rcpt: String },
}

/// A delivered message's octets, trace header fields included.
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    /// The whole message.
    Whole(Vec<u8>),
    /// The data went out in [`Next::Spill`] chunks: `head` (the trace fields) goes in front of
    /// them, `tail` (the last octets of data) after them.
    Spilled { head: Vec<u8>, tail: Vec<u8> },
}

/// The result of an [`Action`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The canonical login if the credentials were right.
    Authenticated(Option<String>),
    AuthUnavailable,
    /// Too many failed logins from this client: refused unchecked.
    AuthThrottled,
    Delivered(bool),
    /// No recipient of the message has room for it: refused, for the sender to retry.
    OverQuota,
    /// The node's checks on the message refused it with this reply.
    Refused(Reply),
    TlsStarted,
    /// Greylisting's answer: `None` takes the recipient, a reply (`451`) defers it.
    Greylist(Option<Reply>),
}

/// What the connection loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Flush output, read more input.
    NeedInput,
    /// Flush output, perform this, then call [`Session::complete`].
    Action(Action),
    /// Flush output and close the connection.
    Close,
    /// Append `bytes` to the transaction's message data kept outside the session (a spill
    /// file), a new one when `first`; then call [`Session::process`] again.
    Spill { first: bool, bytes: Vec<u8> },
}

enum Auth {
    PlainResponse,
    LoginUser,
    LoginPass(String),
}

enum State {
    Command,
    Data(DataReceiver),
    Bdat(BdatReceiver),
    /// Waiting for an AUTH continuation line.
    AuthLine(Auth),
    /// Discarding the rest of an over-long command line.
    LongLine,
    /// An action is out; input waits.
    Waiting,
    Closed,
}

struct Transaction {
    from: String,
    users: Vec<String>,
    remote: Vec<String>,
    dsn: Dsn,
    recipients: usize,
    /// The data not handed out yet.
    body: Vec<u8>,
    /// Octets of data handed out in [`Next::Spill`] chunks.
    spilled: usize,
    /// Hops counted in the data handed out so far.
    hops: hops::Counter,
    too_big: bool,
    /// BDAT was used: DATA is no longer allowed in this transaction (RFC 3030).
    chunking: bool,
    /// MAIL carried `REQUIRETLS` (RFC 8689).
    requiretls: bool,
}

/// One SMTP session.
pub struct Session {
    config: Arc<SessionConfig>,
    directory: Arc<dyn Directory>,
    client: SocketAddr,
    tls: bool,
    id: String,
    messages: u32,
    state: State,
    /// The part of a command or AUTH line read so far.
    line: Vec<u8>,
    helo: Option<(String, bool)>,
    login: Option<String>,
    tx: Option<Transaction>,
    /// A local recipient waiting for greylisting's answer: its users and DSN parameters.
    greylisted: Option<(Vec<String>, RcptDsn)>,
    errors: u32,
    auth_failures: u32,
}

impl Session {
    /// A new session for a client; `tls` is true on implicit-TLS listeners.
    pub fn new(
        config: Arc<SessionConfig>,
        directory: Arc<dyn Directory>,
        client: SocketAddr,
        tls: bool,
        id: String,
    ) -> Session {
        Session {
            config,
            directory,
            client,
            tls,
            id,
            messages: 0,
            state: State::Command,
            line: Vec::new(),
            helo: None,
            login: None,
            tx: None,
            greylisted: None,
            errors: 0,
            auth_failures: 0,
        }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Vec<u8> {
        Reply::plain(220, vec![format!("{} ESMTP SIRMS ready", self.config.hostname)]).to_bytes()
    }

    /// The authenticated login, if any.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Consumes input, appending replies to `out`, until it needs more input, an action,
    /// or the end.
    pub fn process(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> Next {
        loop {
            let flow = match &mut self.state {
                State::Closed => return Next::Close,
                State::Waiting => return Next::NeedInput,
                State::Command => self.command(input, out),
                State::LongLine => {
                    self.state = State::Command;
                    self.skip_long_line(input, out)
                }
                State::Data(_) => self.data(input, out),
                State::Bdat(_) => self.bdat(input, out),
                State::AuthLine(_) => self.auth_line(input, out),
            };
            match flow {
                Some(flow) => return flow,
                None => continue,
            }
        }
    }

    /// Takes the result of the last action, appending replies to `out`.
    pub fn complete(&mut self, outcome: Outcome, out: &mut Vec<u8>) -> Next {
        self.state = State::Command;
        match outcome {
            Outcome::Authenticated(Some(login)) => {
                self.login = Some(login);
                replies::auth_ok().write_to(out);
            }
            Outcome::Authenticated(None) => {
                self.auth_failures += 1;
                replies::auth_failed().write_to(out);
                if self.auth_failures >= self.config.max_auth_failures {
                    return self.close_with(replies::too_many_errors(), out);
                }
            }
            Outcome::AuthUnavailable => replies::auth_unavailable().write_to(out),
            Outcome::AuthThrottled => replies::auth_throttled().write_to(out),
            Outcome::Delivered(ok) => {
                let id = self.message_id();
                self.tx = None;
                if ok { replies::queued(&id) } else { replies::delivery_failed() }.write_to(out);
            }
            Outcome::OverQuota => {
                self.tx = None;
                replies::mailbox_full().write_to(out);
            }
            Outcome::Refused(reply) => {
                self.tx = None;
                reply.write_to(out);
            }
            Outcome::Greylist(verdict) => match (verdict, self.greylisted.take()) {
                (None, Some((users, wants))) => {
                    self.take_local(users, wants);
                    replies::recipient_ok().write_to(out);
                }
                (Some(reply), _) => {
                    // A deferred recipient counts towards the transaction's limit: each costs
                    // the cluster a lookup (and a new triplet a write), so a client may not
                    // try recipients without end.
                    if let Some(tx) = self.tx.as_mut() {
                        tx.recipients += 1;
                    }
                    reply.write_to(out);
                }
                (None, None) => replies::bad_sequence("no recipient waiting").write_to(out),
            },
            Outcome::TlsStarted => {
                // RFC 3207 §4.2: forget everything learnt before TLS.
                self.tls = true;
                self.helo = None;
                self.login = None;
                self.tx = None;
                self.line.clear();
            }
        }
        Next::NeedInput
    }

    /// Replies to the connection loop's idle timeout.
    pub fn timeout(&mut self, out: &mut Vec<u8>) -> Next {
        self.close_with(replies::timeout(), out)
    }

    fn message_id(&self) -> String {
        format!("{}.{}", self.id, self.messages)
    }

    fn close_with(&mut self, reply: Reply, out: &mut Vec<u8>) -> Next {
        reply.write_to(out);
        self.state = State::Closed;
        Next::Close
    }

    fn error(&mut self, reply: Reply, out: &mut Vec<u8>) -> Option<Next> {
        reply.write_to(out);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            return Some(self.close_with(replies::too_many_errors(), out));
        }
        None
    }

    fn auth_allowed(&self) -> bool {
        self.tls || self.config.allow_plaintext_auth
    }

    /// Cuts the next whole line (with its line end) out of the input, so each parse sees
    /// exactly one line: the limit then holds however TCP splits the input, and a parser
    /// error can never swallow the line after the bad one. `Err` is what to return instead.
    fn cut_line(&mut self, input: &mut Iter<'_, u8>, limit: usize, out: &mut Vec<u8>) -> Result<Vec<u8>, Option<Next>> {
        let rest = input.as_slice();
        let room = limit.saturating_sub(self.line.len());
        match rest.iter().position(|&b| b == b'\n') {
            Some(pos) if pos < room => {
                self.line.extend_from_slice(&rest[..=pos]);
                *input = rest[pos + 1..].iter();
                Ok(std::mem::take(&mut self.line))
            }
            Some(pos) => {
                *input = rest[pos + 1..].iter();
                self.line.clear();
                self.state = State::Command;
                Err(self.error(replies::line_too_long(), out))
            }
            None if rest.len() < room => {
                self.line.extend_from_slice(rest);
                *input = [].iter();
                Err(Some(Next::NeedInput))
            }
            None => {
                // Skip to the end of the line, however far it is; reply once when it ends.
                *input = [].iter();
                self.line.clear();
                self.state = State::LongLine;
                Err(Some(Next::NeedInput))
            }
        }
    }

    fn command(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> Option<Next> {
        let line = match self.cut_line(input, MAX_COMMAND_LINE, out) {
            Ok(line) => line,
            Err(flow) => return flow,
        };
        if let Some(is_last) = endless_bdat(&line) {
            return self.start_bdat(usize::MAX, is_last, out);
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                let reply = match e {
                    ParseError::UnknownCommand => replies::unknown_command(),
                    ParseError::InvalidSenderAddress => replies::bad_sender(),
                    ParseError::InvalidRecipientAddress => replies::bad_recipient(),
                    ParseError::SyntaxError { syntax } => replies::syntax(syntax),
                    ParseError::InvalidParameter { param } => replies::syntax(param),
                    ParseError::UnsupportedParameter { .. } => replies::unsupported_param(),
                    ParseError::ResponseTooLong => replies::line_too_long(),
                    // A whole line the parser still wants more of is a truncated command.
                    _ => replies::syntax("invalid command"),
                };
                return self.error(reply, out);
            }
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true, out),
            Request::Helo { host } => self.hello(host, false, out),
            Request::Lhlo { .. } => self.error(replies::unknown_command(), out),
            Request::Mail { from } => self.mail(from, out),
            Request::Rcpt { to } => self.rcpt(to, out),
            Request::Data => self.start_data(out),
            Request::Bdat { chunk_size, is_last } => self.start_bdat(chunk_size, is_last, out),
            Request::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response, out),
            Request::Rset => {
                self.tx = None;
                replies::ok().write_to(out);
                None
            }
            Request::Noop { .. } => {
                replies::ok().write_to(out);
                None
            }
            Request::Vrfy { .. } => {
                replies::vrfy().write_to(out);
                None
            }
            Request::Quit => Some(self.close_with(replies::bye(), out)),
            Request::StartTls => self.starttls(out),
            Request::Help { .. } => {
                Reply::new(214, "2.0.0", "see RFC 5321").write_to(out);
                None
            }
            Request::Expn { .. } | Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(replies::not_implemented(), out)
            }
        }
    }

    fn skip_long_line(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> Option<Next> {
        let rest = input.as_slice();
        match rest.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                *input = rest[pos + 1..].iter();
                self.error(replies::line_too_long(), out)
            }
            None => {
                *input = [].iter();
                self.state = State::LongLine;
                Some(Next::NeedInput)
            }
        }
    }

    fn hello(&mut self, host: String, esmtp: bool, out: &mut Vec<u8>) -> Option<Next> {
        if host.is_empty() {
            return self.error(replies::syntax("EHLO/HELO needs a domain or address"), out);
        }
        self.tx = None;
        self.helo = Some((host, esmtp));
        let greet = format!("{} greets [{}]", self.config.hostname, self.client.ip());
        if !esmtp {
            Reply::plain(250, vec![greet]).write_to(out);
            return None;
        }
        let mut lines = vec![
            greet,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.tls {
            // RFC 8689 §4.1: only a session over TLS may ask for REQUIRETLS.
            lines.push("REQUIRETLS".to_string());
        }
        if self.config.tls_available && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_allowed() && self.login.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        Reply::plain(250, lines).write_to(out);
        None
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>, out: &mut Vec<u8>) -> Option<Next> {
        if self.helo.is_none() {
            return self.error(replies::bad_sequence("send EHLO first"), out);
        }
        if self.tx.is_some() {
            return self.error(replies::bad_sequence("nested MAIL command"), out);
        }
        if self.config.submission && self.login.is_none() {
            return self
                .error(if self.auth_allowed() { replies::auth_required() } else { replies::tls_required() }, out);
        }
        if from.size > self.config.max_message_size {
            return self.error(replies::too_big(), out);
        }
        if !plausible_path(&from.address) {
            return self.error(replies::bad_sender(), out);
        }
        if !from.address.is_ascii() && from.flags & MAIL_SMTPUTF8 == 0 {
            return self.error(replies::smtputf8_needed(), out);
        }
        if let Some(login) = &self.login
            && !from.address.is_empty()
            && !self.directory.may_send_as(login, &from.address)
        {
            return self.error(replies::sender_not_owned(), out);
        }
        let requiretls = from.flags & MAIL_REQUIRETLS != 0;
        if requiretls && !self.tls {
            return self.error(replies::requiretls_needs_tls(), out);
        }
        let dsn = match Dsn::from_mail(from.flags, from.env_id.as_deref()) {
            Ok(dsn) => dsn,
            Err(why) => return self.error(replies::syntax(why), out),
        };
        self.tx = Some(Transaction {
            from: from.address,
            users: Vec::new(),
            remote: Vec::new(),
            dsn,
            recipients: 0,
            body: Vec::new(),
            spilled: 0,
            hops: hops::Counter::new(self.config.max_hops),
            too_big: false,
            chunking: false,
            requiretls,
        });
        replies::sender_ok().write_to(out);
        None
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>, out: &mut Vec<u8>) -> Option<Next> {
        let address = to.address.as_str();
        let Some(tx) = &self.tx else {
            return self.error(replies::bad_sequence("need MAIL before RCPT"), out);
        };
        let wants = match Notify::from_rcpt_flags(to.flags) {
            Ok(notify) => RcptDsn { notify, orcpt: to.orcpt.clone() },
            Err(why) => return self.error(replies::syntax(why), out),
        };
        if !plausible_path(address) {
            return self.error(replies::bad_recipient(), out);
        }
        if tx.recipients >= self.config.max_recipients {
            replies::too_many_recipients().write_to(out);
            return None;
        }
        // The parser turns `<postmaster>` (RFC 5321 §4.5.1, no domain) into an empty path.
        let address = if address.is_empty() { "postmaster" } else { address };
        if !self.directory.available() {
            replies::directory_unavailable().write_to(out);
            return None;
        }
        let resolved = self.directory.resolve(address);
        let sends = matches!(resolved, Recipient::Local(_) | Recipient::Remote);
        if let (true, Some(login)) = (sends, &self.login)
            && let Err(limit) = self.config.send_rate.take(login, Instant::now())
        {
            tracing::warn!(session = %self.id, client = %self.client, %login, rcpt = %address, ?limit,
                "recipient refused: sending rate limit");
            replies::rate_limited(limit).write_to(out);
            return None;
        }
        let reply = match resolved {
            Recipient::Local(users) if self.config.greylisting && self.login.is_none() => {
                // Asked with the recipient as the sender wrote it: its retry writes it so again.
                let action = Action::Greylist { from: self.tx.as_ref()?.from.clone(), rcpt: address.to_string() };
                self.greylisted = Some((users, wants));
                self.state = State::Waiting;
                return Some(Next::Action(action));
            }
            Recipient::Local(users) => {
                self.take_local(users, wants);
                replies::recipient_ok()
            }
            Recipient::Unknown => replies::no_such_user(),
            Recipient::Loop(chain) => {
                // The chain names our aliases' targets: it goes to the log, not to the client.
                tracing::warn!(
                    session = %self.id, client = %self.client, rcpt = %address, chain = %chain.join(" -> "),
                    "recipient refused: the aliases loop"
                );
                replies::alias_loop()
            }
            Recipient::Remote if self.login.is_some() => {
                let tx = self.tx.as_mut()?;
                tx.recipients += 1;
                if wants != RcptDsn::default() {
                    tx.dsn.rcpts.entry(address.to_string()).or_insert(wants);
                }
                if !tx.remote.iter().any(|r| r == address) {
                    tx.remote.push(address.to_string());
                }
                replies::recipient_ok()
            }
            Recipient::Remote => replies::relay_denied(),
        };
        if reply.is_positive() {
            reply.write_to(out);
            None
        } else {
            self.error(reply, out)
        }
    }

    /// Adds an accepted local recipient's users to the transaction.
    fn take_local(&mut self, users: Vec<String>, wants: RcptDsn) {
        let Some(tx) = self.tx.as_mut() else { return };
        tx.recipients += 1;
        for u in users {
            // A user reached by two recipients (an alias and its target) is told of by the
            // first one's parameters.
            if wants != RcptDsn::default() {
                tx.dsn.rcpts.entry(u.clone()).or_insert_with(|| wants.clone());
            }
            if !tx.users.contains(&u) {
                tx.users.push(u);
            }
        }
    }

    fn start_data(&mut self, out: &mut Vec<u8>) -> Option<Next> {
        let reply = match &self.tx {
            None => replies::bad_sequence("need MAIL before DATA"),
            Some(tx) if tx.chunking => replies::bad_sequence("DATA after BDAT"),
            Some(tx) if tx.users.is_empty() && tx.remote.is_empty() => replies::no_recipients(),
            Some(_) => {
                replies::start_data().write_to(out);
                self.state = State::Data(DataReceiver::new());
                return None;
            }
        };
        self.error(reply, out)
    }

    fn data(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> Option<Next> {
        if let Some(spill) = self.spill() {
            return Some(spill);
        }
        let State::Data(receiver) = &mut self.state else { return None };
        let Some(tx) = self.tx.as_mut() else {
            self.state = State::Command;
            return None;
        };
        let done = receiver.ingest(input, &mut tx.body);
        tx.check_size(self.config.max_message_size);
        if !done {
            return Some(Next::NeedInput);
        }
        self.state = State::Command;
        self.finish_message(out)
    }

    /// The data held past the spill threshold, to be handed out before more is read: so the
    /// session never holds more than the threshold and one read.
    fn spill(&mut self) -> Option<Next> {
        let tx = self.tx.as_mut()?;
        // A final CR stays: after CRLF `.` CR the receiver has pushed that CR and takes it
        // back when LF ends the data, which it can only do while the CR is still here (F20).
        let ready = tx.body.len() - usize::from(tx.body.last() == Some(&b'\r'));
        if tx.too_big || ready == 0 || tx.body.len() < self.config.spill_threshold {
            return None;
        }
        let held = tx.body.split_off(ready);
        let bytes = std::mem::replace(&mut tx.body, held);
        let first = tx.spilled == 0;
        tx.hops.feed(&bytes);
        tx.spilled += bytes.len();
        Some(Next::Spill { first, bytes })
    }

    fn start_bdat(&mut self, size: usize, is_last: bool, out: &mut Vec<u8>) -> Option<Next> {
        // The chunk's bytes follow regardless of whether we want them: read them first.
        self.state = State::Bdat(BdatReceiver::new(size, is_last));
        if let Some(tx) = self.tx.as_mut() {
            tx.chunking = true;
        }
        let _ = out;
        None
    }

    fn bdat(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> Option<Next> {
        if let Some(spill) = self.spill() {
            return Some(spill);
        }
        let State::Bdat(receiver) = &mut self.state else { return None };
        let is_last = receiver.is_last;
        let mut sink = Vec::new();
        let done = match self.tx.as_mut() {
            Some(tx) if !tx.too_big => {
                let done = receiver.ingest(input, &mut tx.body);
                tx.check_size(self.config.max_message_size);
                done
            }
            _ => {
                let done = receiver.ingest(input, &mut sink);
                drop(sink);
                done
            }
        };
        if !done {
            return Some(Next::NeedInput);
        }
        self.state = State::Command;
        let reply = match &self.tx {
            None => replies::bad_sequence("need MAIL before BDAT"),
            Some(tx) if tx.users.is_empty() && tx.remote.is_empty() => replies::no_recipients(),
            Some(_) if is_last => return self.finish_message(out),
            Some(tx) if tx.too_big => Reply::new(250, "2.0.0", "chunk discarded: message too large so far"),
            Some(tx) => Reply::new(250, "2.0.0", format!("{} octets received", tx.spilled + tx.body.len())),
        };
        if reply.is_positive() {
            reply.write_to(out);
            None
        } else {
            self.error(reply, out)
        }
    }

    fn finish_message(&mut self, out: &mut Vec<u8>) -> Option<Next> {
        let mut tx = self.tx.take()?;
        if tx.too_big {
            return self.error(replies::too_big(), out);
        }
        tx.hops.feed(&tx.body);
        let hops = tx.hops.hops();
        if hops > self.config.max_hops {
            tracing::warn!(
                session = %self.id, client = %self.client, from = %tx.from, to = ?tx.users, remote = ?tx.remote,
                hops, limit = self.config.max_hops, "message refused: too many hops, a mail loop"
            );
            return self.error(replies::too_many_hops(self.config.max_hops), out);
        }
        if tx.users.is_empty() && tx.remote.is_empty() {
            return self.error(replies::no_recipients(), out);
        }
        self.messages += 1;
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let id = self.message_id();
        let for_rcpt = if tx.users.len() == 1 { tx.users.first().map(String::as_str) } else { None };
        let header = Trace {
            helo: &helo,
            client_ip: self.client.ip(),
            by_host: &self.config.hostname,
            protocol: protocol(esmtp, self.tls, self.login.is_some()),
            id: &id,
            for_rcpt,
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
        .header();
        // RFC 5321 §4.4: the final delivery adds Return-Path with the reverse path.
        let return_path = format!("Return-Path: <{}>\r\n", tx.from);
        let message = if tx.spilled == 0 {
            let mut message = Vec::with_capacity(return_path.len() + header.len() + tx.body.len());
            message.extend_from_slice(return_path.as_bytes());
            message.extend_from_slice(header.as_bytes());
            message.extend_from_slice(&tx.body);
            Data::Whole(message)
        } else {
            Data::Spilled { head: [return_path, header].concat().into_bytes(), tail: tx.body }
        };
        self.state = State::Waiting;
        let envelope = Box::new(Envelope {
            from: tx.from,
            users: tx.users,
            remote: tx.remote,
            dsn: tx.dsn,
            helo,
            login: self.login.clone(),
            tls: self.tls,
            requiretls: tx.requiretls,
        });
        Some(Next::Action(Action::Deliver { id, envelope, message }))
    }

    fn starttls(&mut self, out: &mut Vec<u8>) -> Option<Next> {
        if self.tls {
            return self.error(replies::bad_sequence("TLS already active"), out);
        }
        if !self.config.tls_available {
            return self.error(replies::tls_unavailable(), out);
        }
        replies::ready_tls().write_to(out);
        self.state = State::Waiting;
        Some(Next::Action(Action::StartTls))
    }

    fn auth(&mut self, mechanism: u64, initial: String, out: &mut Vec<u8>) -> Option<Next> {
        if self.helo.is_none() {
            return self.error(replies::bad_sequence("send EHLO first"), out);
        }
        if self.login.is_some() {
            return self.error(replies::already_authenticated(), out);
        }
        if self.tx.is_some() {
            return self.error(replies::bad_sequence("AUTH not allowed during a mail transaction"), out);
        }
        if !self.auth_allowed() {
            return self.error(replies::auth_needs_tls(), out);
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                Reply::plain(334, vec![String::new()]).write_to(out);
                self.state = State::AuthLine(Auth::PlainResponse);
                None
            }
            AUTH_PLAIN => self.auth_plain(&initial, out),
            AUTH_LOGIN if initial.is_empty() => {
                Reply::plain(334, vec![BASE64.encode("Username:")]).write_to(out);
                self.state = State::AuthLine(Auth::LoginUser);
                None
            }
            AUTH_LOGIN => self.login_user(&initial, out),
            _ => self.error(replies::auth_mechanism(), out),
        }
    }

    fn auth_line(&mut self, input: &mut Iter<'_, u8>, out: &mut Vec<u8>) -> Option<Next> {
        // An over-long response ends the exchange (cut_line leaves the AUTH state).
        let mut line = match self.cut_line(input, MAX_AUTH_LINE + 2, out) {
            Ok(line) => line,
            Err(flow) => return flow,
        };
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let State::AuthLine(step) = std::mem::replace(&mut self.state, State::Command) else { return None };
        let Ok(line) = String::from_utf8(line) else {
            return self.error(replies::syntax("invalid base64"), out);
        };
        if line == "*" {
            return self.error(replies::auth_cancelled(), out);
        }
        match step {
            Auth::PlainResponse => self.auth_plain(&line, out),
            Auth::LoginUser => self.login_user(&line, out),
            Auth::LoginPass(user) => match decode(&line) {
                Some(password) => self.authenticate(user, password),
                None => self.error(replies::syntax("invalid base64"), out),
            },
        }
    }

    fn login_user(&mut self, encoded: &str, out: &mut Vec<u8>) -> Option<Next> {
        match decode(encoded) {
            Some(user) => {
                Reply::plain(334, vec![BASE64.encode("Password:")]).write_to(out);
                self.state = State::AuthLine(Auth::LoginPass(user));
                None
            }
            None => self.error(replies::syntax("invalid base64"), out),
        }
    }

    fn auth_plain(&mut self, encoded: &str, out: &mut Vec<u8>) -> Option<Next> {
        // RFC 4616: authzid NUL authcid NUL passwd; "=" is an empty initial response.
        let decoded = if encoded == "=" { Some(String::new()) } else { decode(encoded) };
        let Some(decoded) = decoded else {
            return self.error(replies::syntax("invalid base64"), out);
        };
        let mut parts = decoded.split('\0');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(authc), Some(password), None) if authz.is_empty() || authz == authc => {
                self.authenticate(authc.to_string(), password.to_string())
            }
            _ => {
                self.auth_failures += 1;
                replies::auth_failed().write_to(out);
                if self.auth_failures >= self.config.max_auth_failures {
                    return Some(self.close_with(replies::too_many_errors(), out));
                }
                None
            }
        }
    }

    fn authenticate(&mut self, login: String, password: String) -> Option<Next> {
        self.state = State::Waiting;
        Some(Next::Action(Action::Authenticate { login, password }))
    }
}

/// A `BDAT` line whose chunk size does not fit a `usize`: whether it says `LAST`. smtp-proto
/// 0.2.5 misreads such sizes (the digits after its saturation point count again from zero, so
/// `BDAT 1000000000000000000005` is a 5-octet chunk and the octets after the fifth are read as
/// commands), and refuses exactly `usize::MAX`. Such a chunk is as good as endless: its octets
/// are read and thrown away like any chunk past the size limit, so no part of it is ever taken
/// for a command, whatever the sender meant.
fn endless_bdat(line: &[u8]) -> Option<bool> {
    let mut words = line.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    if !words.next()?.eq_ignore_ascii_case(b"BDAT") {
        return None;
    }
    let size = words.next()?;
    if !size.iter().all(u8::is_ascii_digit)
        || std::str::from_utf8(size).ok()?.parse::<usize>().is_ok_and(|n| n < usize::MAX)
    {
        return None;
    }
    match (words.next(), words.next()) {
        (None, _) => Some(false),
        (Some(last), None) if last.eq_ignore_ascii_case(b"LAST") => Some(true),
        _ => None,
    }
}

impl Transaction {
    /// Past `max` octets the message is refused at its end: the data is still read to its end,
    /// but nothing of it is kept.
    fn check_size(&mut self, max: usize) {
        if self.too_big || self.spilled + self.body.len() > max {
            self.too_big = true;
            self.body = Vec::new();
        }
    }
}

fn decode(s: &str) -> Option<String> {
    BASE64.decode(s.trim()).ok().and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests;
