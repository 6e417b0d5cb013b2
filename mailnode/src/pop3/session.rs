//! The POP3 session state machine: command lines in, response bytes and store actions out, no I/O.
//!
//! A driver owns the socket and the store. It sends [`Session::greeting`], then for each line the client sends
//! (without its line ending) calls [`Session::handle_line`] and follows the returned [`Next`]:
//!
//! - [`Next::Reply`]: write the bytes, read the next line.
//! - [`Next::Close`]: write the bytes, flush, close the connection.
//! - [`Next::Action`]: do the I/O the [`Action`] asks for, call [`Session::complete`] with its [`Outcome`] and
//!   follow the `Next` that returns (which may be another action).
//!
//! One line is handled at a time: with PIPELINING the client may send several, and the driver keeps the unread ones
//! buffered until the current one's steps are finished.

use bytes::Bytes;

use super::command::{Command, MAX_COMMAND_LINE, Secret};
use super::maildrop::{Maildrop, MaildropEntry};
use super::reply::{self, Code, MultiLine};
use super::top::top;
use crate::auth::sasl::{self, PlainError};

/// Longest SASL continuation response, without its line ending.
///
/// RFC 5034 §4 exempts SASL responses from the command line limit; this fits a PLAIN message with three
/// 255-octet fields (RFC 4616 §2) in base64.
pub const MAX_SASL_RESPONSE: usize = 1024;

/// How one session behaves, decided by the listener that accepted the connection.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Host name shown in the greeting and the sign-off.
    pub hostname: String,
    /// The connection is TLS from the start (port 995).
    pub tls_active: bool,
    /// STLS is offered on a cleartext connection.
    pub stls_offered: bool,
    /// USER/PASS and AUTH PLAIN are accepted without TLS; off by default, as RFC 2595 §2.3 recommends.
    pub plaintext_without_tls: bool,
    /// Rejected logins after which the session is closed.
    pub max_auth_failures: u32,
}

impl SessionConfig {
    /// The settings for a cleartext port 110 listener: STLS offered, passwords only after it, three tries.
    pub fn new(hostname: impl Into<String>) -> Self {
        SessionConfig {
            hostname: hostname.into(),
            tls_active: false,
            stls_offered: true,
            plaintext_without_tls: false,
            max_auth_failures: 3,
        }
    }
}

/// The RFC 1939 state a session is in, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not yet logged in.
    Authorization,
    /// Logged in, maildrop open.
    Transaction,
    /// QUIT received or the session is closing; nothing more will be read.
    Update,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send these bytes, then read the next line. Empty after STLS, when the client speaks first.
    Reply(Vec<u8>),
    /// Send these bytes, then close the connection (releasing the maildrop lock, if one was taken).
    Close(Vec<u8>),
    /// Do this I/O, then call [`Session::complete`].
    Action(Action),
}

/// I/O the session needs from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Check the credentials and, if they are right, lock the user's maildrop for this session.
    ///
    /// Answer [`Outcome::Authenticated`], [`Outcome::BadCredentials`], [`Outcome::InUse`] (right credentials, but
    /// another session holds the lock) or [`Outcome::Unavailable`].
    Authenticate { user: String, password: Secret },
    /// List the locked maildrop: answer [`Outcome::Maildrop`] or [`Outcome::Unavailable`] (the session then closes).
    LoadMaildrop,
    /// Read one message: answer [`Outcome::Message`] or [`Outcome::Unavailable`].
    ///
    /// For TOP, `top_lines` is set and the session cuts the message itself, so the driver may return the whole
    /// message or any prefix that holds the header and that many body lines.
    Fetch { uid: u32, top_lines: Option<u32> },
    /// Expunge these messages durably (QUIT in TRANSACTION state): answer [`Outcome::Committed`] only once the
    /// deletion is on disk, else [`Outcome::Unavailable`]. Either way the session then closes.
    CommitDeletes { uids: Vec<u32> },
    /// Send `reply`, flush, run the TLS handshake, then answer [`Outcome::TlsStarted`].
    ///
    /// Bytes already read past the STLS line must be discarded, not parsed after the handshake: they came in the
    /// clear and an attacker could have injected them (CVE-2011-0411). If the handshake fails, the connection is
    /// unusable: close it without calling `complete`.
    StartTls { reply: Vec<u8> },
}

/// The result of an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The credentials are right and the maildrop is locked.
    Authenticated,
    /// Unknown user or wrong password; the two are not told apart, so user names cannot be probed.
    BadCredentials,
    /// The credentials are right but another session holds the maildrop.
    InUse,
    /// The maildrop's messages in the order they get message numbers 1..n.
    ///
    /// UIDL unique-ids are `"{uid_validity}.{uid}"`, stable for as long as the store keeps its UIDVALIDITY.
    Maildrop { uid_validity: u32, messages: Vec<MaildropEntry> },
    /// The message's bytes as stored; bare LF line endings are sent as CRLF.
    Message(Bytes),
    /// The deletions are durable.
    Committed,
    /// The TLS handshake finished.
    TlsStarted,
    /// The action failed for a reason the client can only wait out (store down, I/O error).
    Unavailable,
    /// Authenticate only: too many failed logins from this client; refused unchecked.
    Throttled,
}

/// Where a not-yet-authenticated session is in its login.
#[derive(Debug)]
enum Login {
    Idle,
    /// USER was accepted; only an immediately following PASS may use it (RFC 1939 §7).
    User(String),
    /// `AUTH PLAIN` without an initial response: the next line is the client's base64 response.
    Plain,
}

#[derive(Debug)]
enum State {
    Authorization(Login),
    Transaction(Maildrop),
    Update,
}

/// The action the driver is performing, with what the session needs to answer its outcome.
#[derive(Debug)]
enum Pending {
    Authenticate { user: String },
    LoadMaildrop,
    Fetch { number: u32, size: u64, top_lines: Option<u32> },
    Commit { left: usize },
    StartTls,
}

/// One POP3 session, from greeting to close.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    pending: Option<Pending>,
    auth_failures: u32,
    user: Option<String>,
}

impl Session {
    /// A session in AUTHORIZATION state.
    pub fn new(mut config: SessionConfig) -> Self {
        // The host name goes verbatim into response lines; anything but visible ASCII could break the framing.
        config.hostname.retain(|c| c.is_ascii_graphic());
        Session { config, state: State::Authorization(Login::Idle), pending: None, auth_failures: 0, user: None }
    }

    /// The greeting to send when the connection opens.
    pub fn greeting(&self) -> Vec<u8> {
        reply::ok(format_args!("{} POP3 server ready", self.config.hostname))
    }

    /// The current RFC 1939 state.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Authorization(_) => Phase::Authorization,
            State::Transaction(_) => Phase::Transaction,
            State::Update => Phase::Update,
        }
    }

    /// The authenticated user, once the credentials were accepted.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the connection is encrypted, from the start or after STLS.
    pub fn tls_active(&self) -> bool {
        self.config.tls_active
    }

    /// Longest line, without its line ending, that the next [`Session::handle_line`] accepts.
    ///
    /// A driver buffers at most one octet more; if a line is longer, it discards the rest up to the line ending and
    /// passes the prefix it kept, which the session answers with `-ERR` as too long.
    pub fn line_limit(&self) -> usize {
        match self.state {
            State::Authorization(Login::Plain) => MAX_SASL_RESPONSE,
            _ => MAX_COMMAND_LINE - 2,
        }
    }

    /// Handles one line from the client, given without its CRLF (or bare LF).
    pub fn handle_line(&mut self, line: &[u8]) -> Next {
        if self.pending.is_some() {
            // The driver broke the one-line-at-a-time contract; answering would reorder responses.
            return self.internal_error();
        }
        match self.state {
            State::Update => self.close(reply::err(None, "session is closing")),
            State::Authorization(Login::Plain) => self.plain_continuation(line),
            State::Authorization(_) => {
                let user = match std::mem::replace(&mut self.state, State::Authorization(Login::Idle)) {
                    State::Authorization(Login::User(user)) => Some(user),
                    _ => None,
                };
                match Command::parse(line) {
                    Ok(command) => self.authorization(command, user),
                    Err(error) => Next::Reply(reply::err(None, error)),
                }
            }
            State::Transaction(_) => match Command::parse(line) {
                Ok(command) => self.transaction(command),
                Err(error) => Next::Reply(reply::err(None, error)),
            },
        }
    }

    /// Takes the result of the [`Action`] the last step asked for.
    pub fn complete(&mut self, outcome: Outcome) -> Next {
        let Some(pending) = self.pending.take() else {
            return self.internal_error();
        };
        match (pending, outcome) {
            (Pending::Authenticate { user }, Outcome::Authenticated) => {
                self.user = Some(user);
                self.pending = Some(Pending::LoadMaildrop);
                Next::Action(Action::LoadMaildrop)
            }
            (Pending::Authenticate { .. }, Outcome::BadCredentials) => {
                self.auth_failures = self.auth_failures.saturating_add(1);
                let reply = reply::err(Some(Code::Auth), "invalid user name or password");
                if self.auth_failures >= self.config.max_auth_failures.max(1) {
                    self.close(reply)
                } else {
                    Next::Reply(reply)
                }
            }
            (Pending::Authenticate { .. }, Outcome::InUse) => {
                Next::Reply(reply::err(Some(Code::InUse), "maildrop is in use by another POP3 session"))
            }
            (Pending::Authenticate { .. }, Outcome::Unavailable) => {
                Next::Reply(reply::err(Some(Code::SysTemp), "authentication is temporarily unavailable"))
            }
            (Pending::Authenticate { .. }, Outcome::Throttled) => {
                Next::Reply(reply::err(Some(Code::SysTemp), "too many failed logins; try again later"))
            }
            (Pending::LoadMaildrop, Outcome::Maildrop { uid_validity, messages }) => {
                let maildrop = Maildrop::new(uid_validity, messages);
                let (count, octets) = maildrop.stat();
                self.state = State::Transaction(maildrop);
                Next::Reply(reply::ok(format_args!("maildrop has {count} messages ({octets} octets)")))
            }
            (Pending::LoadMaildrop, Outcome::Unavailable) => {
                self.close(reply::err(Some(Code::SysTemp), "unable to open the maildrop"))
            }
            (Pending::Fetch { size, top_lines, .. }, Outcome::Message(message)) => {
                let response = match top_lines {
                    None => {
                        let mut response = MultiLine::new(format_args!("{size} octets"), message.len());
                        response.body(&message);
                        response
                    }
                    Some(lines) => {
                        let part = top(&message, lines);
                        let mut response = MultiLine::new("top of message follows", part.len());
                        response.body(part);
                        response
                    }
                };
                Next::Reply(response.finish())
            }
            (Pending::Fetch { number, .. }, Outcome::Unavailable) => {
                Next::Reply(reply::err(Some(Code::SysTemp), format_args!("unable to read message {number}")))
            }
            (Pending::Commit { left }, Outcome::Committed) => {
                let reply = self.sign_off(Some(left));
                self.close(reply)
            }
            (Pending::Commit { .. }, Outcome::Unavailable) => {
                // RFC 1939 §6: the session ends either way, and the client learns that deletions did not happen.
                self.close(reply::err(Some(Code::SysTemp), "some deleted messages not removed"))
            }
            (Pending::StartTls, Outcome::TlsStarted) => {
                // RFC 2595 §4: forget everything learned from the client before the handshake. The failure count
                // stays: it limits password guessing per connection, and STLS must not become a way to reset it.
                self.config.tls_active = true;
                self.state = State::Authorization(Login::Idle);
                self.user = None;
                Next::Reply(Vec::new())
            }
            _ => self.internal_error(),
        }
    }

    fn authorization(&mut self, command: Command, user: Option<String>) -> Next {
        match command {
            Command::Capa => self.capa(),
            Command::Quit => {
                let reply = self.sign_off(None);
                self.close(reply)
            }
            Command::Stls => self.stls(),
            Command::User(name) => {
                if let Some(refusal) = self.plaintext_refusal() {
                    return refusal;
                }
                self.state = State::Authorization(Login::User(name));
                Next::Reply(reply::ok("send PASS"))
            }
            Command::Pass(password) => {
                if let Some(refusal) = self.plaintext_refusal() {
                    return refusal;
                }
                match user {
                    Some(user) => self.authenticate(user, password),
                    None => Next::Reply(reply::err(None, "send USER first")),
                }
            }
            Command::Apop { .. } => Next::Reply(reply::err(None, "APOP is not supported")),
            Command::Auth { mechanism: None, .. } => {
                // Not in RFC 5034, but some clients probe with a bare AUTH and expect the mechanism list.
                let mut response = MultiLine::new("", 8);
                if self.plaintext_allowed() {
                    response.line("PLAIN");
                }
                Next::Reply(response.finish())
            }
            Command::Auth { mechanism: Some(mechanism), initial_response } => {
                if mechanism != "PLAIN" {
                    return Next::Reply(reply::err(None, "unsupported SASL mechanism"));
                }
                if let Some(refusal) = self.plaintext_refusal() {
                    return refusal;
                }
                match initial_response {
                    Some(response) => self.plain(response.expose().as_bytes()),
                    None => {
                        self.state = State::Authorization(Login::Plain);
                        Next::Reply(b"+ \r\n".to_vec())
                    }
                }
            }
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top { .. }
            | Command::Uidl(_) => Next::Reply(reply::err(None, "command not valid in AUTHORIZATION state")),
        }
    }

    fn transaction(&mut self, command: Command) -> Next {
        let State::Transaction(maildrop) = &mut self.state else {
            return self.internal_error();
        };
        let reply = match command {
            Command::Stat => {
                let (count, octets) = maildrop.stat();
                reply::ok(format_args!("{count} {octets}"))
            }
            Command::List(None) => {
                let (count, octets) = maildrop.stat();
                let mut response = MultiLine::new(format_args!("{count} messages ({octets} octets)"), count * 16);
                for (number, slot) in maildrop.live() {
                    response.line(format_args!("{number} {}", slot.size));
                }
                response.finish()
            }
            Command::List(Some(number)) => match maildrop.get(number) {
                Ok(slot) => reply::ok(format_args!("{number} {}", slot.size)),
                Err(error) => reply::err(None, error),
            },
            Command::Uidl(None) => {
                let mut response = MultiLine::new("unique-id listing follows", maildrop.stat().0 * 28);
                for (number, slot) in maildrop.live() {
                    response.line(format_args!("{number} {}", maildrop.unique_id(slot)));
                }
                response.finish()
            }
            Command::Uidl(Some(number)) => match maildrop.get(number) {
                Ok(slot) => reply::ok(format_args!("{number} {}", maildrop.unique_id(slot))),
                Err(error) => reply::err(None, error),
            },
            Command::Retr(number) => return self.fetch(number, None),
            Command::Top { msg, lines } => return self.fetch(msg, Some(lines)),
            Command::Dele(number) => match maildrop.delete(number) {
                Ok(()) => reply::ok(format_args!("message {number} deleted")),
                Err(error) => reply::err(None, error),
            },
            Command::Noop => reply::ok(""),
            Command::Rset => {
                maildrop.reset();
                let (count, octets) = maildrop.stat();
                reply::ok(format_args!("maildrop has {count} messages ({octets} octets)"))
            }
            Command::Quit => {
                let uids = maildrop.deleted_uids();
                let left = maildrop.stat().0;
                self.state = State::Update;
                if uids.is_empty() {
                    let reply = self.sign_off(Some(left));
                    return self.close(reply);
                }
                self.pending = Some(Pending::Commit { left });
                return Next::Action(Action::CommitDeletes { uids });
            }
            Command::Capa => return self.capa(),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } | Command::Stls => {
                reply::err(None, "command not valid in TRANSACTION state")
            }
        };
        Next::Reply(reply)
    }

    fn fetch(&mut self, number: u32, top_lines: Option<u32>) -> Next {
        let State::Transaction(maildrop) = &self.state else {
            return self.internal_error();
        };
        match maildrop.get(number) {
            Ok(slot) => {
                let uid = slot.uid;
                self.pending = Some(Pending::Fetch { number, size: slot.size, top_lines });
                Next::Action(Action::Fetch { uid, top_lines })
            }
            Err(error) => Next::Reply(reply::err(None, error)),
        }
    }

    fn capa(&self) -> Next {
        let mut response = MultiLine::new("capability list follows", 128);
        for capability in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"] {
            response.line(capability);
        }
        // RFC 2449 §5: what AUTHORIZATION state offers is announced in both states.
        if self.plaintext_allowed() {
            response.line("USER");
            response.line("SASL PLAIN");
        }
        if self.stls_available() {
            response.line("STLS");
        }
        response.line("IMPLEMENTATION SIRMS");
        Next::Reply(response.finish())
    }

    fn stls(&mut self) -> Next {
        if self.config.tls_active {
            return Next::Reply(reply::err(None, "TLS is already active"));
        }
        if !self.config.stls_offered {
            return Next::Reply(reply::err(None, "STLS is not available"));
        }
        self.pending = Some(Pending::StartTls);
        Next::Action(Action::StartTls { reply: reply::ok("begin TLS negotiation") })
    }

    fn stls_available(&self) -> bool {
        self.config.stls_offered && !self.config.tls_active
    }

    fn plaintext_allowed(&self) -> bool {
        self.config.tls_active || self.config.plaintext_without_tls
    }

    /// The refusal of a password sent in the clear, if this connection does not allow it.
    fn plaintext_refusal(&self) -> Option<Next> {
        if self.plaintext_allowed() {
            return None;
        }
        let text = if self.stls_available() {
            "plaintext authentication requires TLS: use STLS first"
        } else {
            "plaintext authentication is disabled on this connection"
        };
        Some(Next::Reply(reply::err(Some(Code::Auth), text)))
    }

    fn plain_continuation(&mut self, line: &[u8]) -> Next {
        self.state = State::Authorization(Login::Idle);
        if line == b"*" {
            return Next::Reply(reply::err(None, "authentication cancelled"));
        }
        if line.len() > MAX_SASL_RESPONSE {
            return Next::Reply(reply::err(None, "SASL response too long"));
        }
        self.plain(line)
    }

    fn plain(&mut self, response: &[u8]) -> Next {
        match sasl::decode_plain(response) {
            Ok(credentials) => self.authenticate(credentials.user, credentials.password),
            Err(error @ PlainError::AuthzidMismatch) => Next::Reply(reply::err(Some(Code::Auth), error)),
            Err(error) => Next::Reply(reply::err(None, error)),
        }
    }

    fn authenticate(&mut self, user: String, password: Secret) -> Next {
        self.pending = Some(Pending::Authenticate { user: user.clone() });
        Next::Action(Action::Authenticate { user, password })
    }

    /// The QUIT response; `left` is how many messages remain, when a maildrop was open.
    fn sign_off(&self, left: Option<usize>) -> Vec<u8> {
        let host = &self.config.hostname;
        match left {
            None => reply::ok(format_args!("{host} POP3 server signing off")),
            Some(0) => reply::ok(format_args!("{host} POP3 server signing off (maildrop empty)")),
            Some(1) => reply::ok(format_args!("{host} POP3 server signing off (1 message left)")),
            Some(n) => reply::ok(format_args!("{host} POP3 server signing off ({n} messages left)")),
        }
    }

    fn close(&mut self, reply: Vec<u8>) -> Next {
        self.state = State::Update;
        self.pending = None;
        Next::Close(reply)
    }

    /// Answers a driver that broke the protocol between it and the session; the state can no longer be trusted.
    fn internal_error(&mut self) -> Next {
        self.close(reply::err(Some(Code::SysPerm), "internal server error"))
    }
}

#[cfg(test)]
mod tests;
