//! The IMAP socket loop: frames commands (lines and literals) with imap-codec's `Fragmentizer`,
//! enforces the line and literal limits, and drives a [`Session`] through STARTTLS,
//! AUTHENTICATE continuations and IDLE.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LineEnding};
use imap_codec::{AuthenticateDataCodec, IdleDoneCodec};
use imap_types::core::LiteralMode;
use sirms_storage::MailStore;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;

use super::compress::ImapIo;
use super::extension::{self, Decoded};
use super::literal::trailing_literal;
use super::response::{self, Code, Status};
use super::session::{Next, Session, SessionConfig};
use crate::auth::Authenticator;
use crate::net::listener::Accepted;
use crate::net::scratch_read::read_some;
use crate::net::stream::HANDSHAKE_TIMEOUT;
use crate::net::write_buffer::WriteBuffer;
use crate::quota::Quotas;
use crate::spill::SpillDir;

/// What one IMAP connection may send.
#[derive(Debug, Clone, Copy)]
pub struct ImapLimits {
    /// Longest command line, literals excluded (RFC 9051 §4 asks for at least 8,192 octets).
    pub max_line: usize,
    /// Largest literal in APPEND: the largest message a client can upload.
    pub max_append: u32,
    /// Most messages in one APPEND (MULTIAPPEND, RFC 3502). The messages are all stored when
    /// the last has arrived, and each costs a store write and, if one fails, an expunge.
    pub max_append_messages: u32,
    /// Largest APPEND after login, its messages together: every message of a MULTIAPPEND is
    /// kept (in a spill file when large) until the last has arrived, so this is what one
    /// connection may make the node hold at once.
    pub max_command: u64,
    /// Largest literal in any other command (passwords, search strings, mailbox names).
    pub max_literal: u32,
    /// Malformed or invalid commands before the connection is closed.
    pub max_bad_commands: u32,
    /// Failed logins before the connection is closed.
    pub max_auth_failures: u32,
    /// Largest literal before login: a user name, a password or a SASL response, nothing more.
    /// An unauthenticated client must not make the server hold (or even invite, with `+`)
    /// the megabytes APPEND takes after login.
    pub max_literal_before_login: u32,
    /// Largest whole command (lines and literals) before login, so that many small literals
    /// cannot add up to what one large one may not be. As long as the longest line: RFC 2971's
    /// ID may come before login, and clients (imaptest's `id` test) send long ones.
    pub max_command_before_login: u32,
}

impl Default for ImapLimits {
    fn default() -> Self {
        ImapLimits {
            max_line: 64 * 1024,
            max_append: 64 * 1024 * 1024,
            max_append_messages: 1000,
            max_command: 256 * 1024 * 1024,
            max_literal: 64 * 1024,
            max_bad_commands: 20,
            max_auth_failures: 3,
            max_literal_before_login: 8 * 1024,
            max_command_before_login: 64 * 1024,
        }
    }
}

/// Everything an IMAP listener's sessions share.
pub struct ImapService {
    pub hostname: String,
    pub authenticator: Authenticator,
    /// What users and domains may store.
    pub quotas: Quotas,
    pub store: Arc<dyn MailStore>,
    /// For STARTTLS; `None` means it is not offered.
    pub tls: Option<TlsAcceptor>,
    /// LOGIN and AUTHENTICATE PLAIN without TLS.
    pub allow_plaintext_auth: bool,
    /// Autologout after this long without a command, IDLE included (RFC 3501 §5.4: at least 30 minutes).
    pub idle_timeout: Duration,
    /// During IDLE, `* OK Still here` this often (`None`: never).
    pub idle_keepalive: Option<Duration>,
    pub limits: ImapLimits,
    /// Where APPEND literals past `spill_threshold` octets are written as they arrive.
    pub spill: Arc<SpillDir>,
    /// See [`crate::spill::threshold`].
    pub spill_threshold: usize,
}

/// The result of reading one message (a command line with its literals) from the client.
enum Framed {
    /// A whole message is in the fragmentizer.
    Complete,
    /// A literal was refused before the client sent it; the command is void.
    Refused,
    /// The line grew past the limit; the rest of it is being discarded.
    TooLong(Option<String>),
    /// The client sent something the connection cannot recover from; the reply is written.
    Fatal,
    /// End of input.
    Eof,
}

/// How the reader treats literal announcements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A command: literals allowed within the limits.
    Command,
    /// A continuation line (SASL response, DONE): literals make no sense there.
    Line,
}

/// What an IDLE session hears now and then while nothing happens.
const STILL_HERE: &[u8] = b"* OK Still here\r\n";

/// The next tick of `interval`, or never without one.
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Bytes kept from the end of a discarded line: enough for `{`, 20 digits, `+}` and CRLF.
const DISCARD_TAIL: usize = 32;

/// Octets of a spilled literal gathered before each write to its spill file.
const SPILL_CHUNK: usize = 256 * 1024;

/// `message` (a command up to a literal announcement, line end included) announcing an empty
/// literal instead (`{0}`, `{0+}`, `~{0}`): what the fragmentizer is given in place of a
/// literal that went to a spill file. `None` if it does not end in an announcement.
fn zero_literal(message: &[u8]) -> Option<Vec<u8>> {
    let close = message.iter().rposition(|&b| b == b'}')?;
    let open = message[..close].iter().rposition(|&b| b == b'{')?;
    let digits_end = if message[..close].ends_with(b"+") { close - 1 } else { close };
    let digits = message.get(open + 1..digits_end)?;
    let ending = &message[close + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || !matches!(ending, b"\r\n" | b"\n") {
        return None;
    }
    Some([&message[..=open], b"0", &message[digits_end..]].concat())
}

/// Frames client input into messages.
struct Reader {
    fragmentizer: Fragmentizer,
    limits: ImapLimits,
    /// Where the current line starts in the message (after the last literal).
    line_start: usize,
    /// The last fragment announced a literal that is still being read.
    in_literal: bool,
    /// Dropping input up to the next line end (after an over-long line).
    discarding: bool,
    /// The last bytes of the line being discarded: did it announce a literal?
    discard_tail: Vec<u8>,
    /// The client has logged in: the configured limits apply, not the pre-login ones.
    logged_in: bool,
    /// Where APPEND literals past `spill_threshold` go as they arrive; `None`: held in memory.
    spill: Option<Arc<SpillDir>>,
    spill_threshold: usize,
    /// The literals of the message being framed that went to spill files, each with where
    /// the empty literal in its place starts.
    spilled: Vec<(usize, bytes::Bytes)>,
    /// Their octets together.
    spilled_total: u64,
    /// Literals announced in the message being framed.
    literals: u32,
}

impl Reader {
    fn new(limits: ImapLimits) -> Reader {
        Reader {
            fragmentizer: Fragmentizer::new(Self::max_message(limits)),
            limits,
            line_start: 0,
            in_literal: false,
            discarding: false,
            discard_tail: Vec::new(),
            logged_in: false,
            spill: None,
            spill_threshold: usize::MAX,
            spilled: Vec::new(),
            spilled_total: 0,
            literals: 0,
        }
    }

    /// The same, writing APPEND literals past `threshold` octets to files in `dir`.
    fn spilling(limits: ImapLimits, dir: Arc<SpillDir>, threshold: usize) -> Reader {
        Reader { spill: Some(dir), spill_threshold: threshold, ..Reader::new(limits) }
    }

    /// The fragmentizer's bound on one message.
    fn max_message(limits: ImapLimits) -> u32 {
        limits.max_append.saturating_add(u32::try_from(limits.max_line).unwrap_or(u32::MAX))
    }

    /// The spilled literals of the message just framed, with where each one's place is.
    fn take_spilled(&mut self) -> Vec<(usize, bytes::Bytes)> {
        std::mem::take(&mut self.spilled)
    }

    /// Switches between the pre-login and the configured limits (called before each read).
    fn set_logged_in(&mut self, logged_in: bool) {
        self.logged_in = logged_in;
    }

    /// The whole-command limit: only before login (after it, the line and literal limits bound
    /// a command, and APPEND needs its megabytes).
    fn command_limit(&self) -> Option<u64> {
        (!self.logged_in).then_some(u64::from(self.limits.max_command_before_login))
    }

    /// Whether a command of `size` octets so far is past the whole-command limit.
    fn command_too_large(&self, size: usize) -> bool {
        self.command_limit().is_some_and(|limit| size as u64 > limit)
    }

    /// The text of the BAD for a line (or, before login, a command) past its limit.
    fn too_long_text(&self) -> String {
        match self.command_limit() {
            Some(limit) => format!("command too long (limit {limit} octets before login)"),
            None => "command line too long".to_string(),
        }
    }

    /// The literal limit for the message being read: large only for APPEND, and small for
    /// everything before login.
    fn literal_limit(&self) -> u32 {
        if !self.logged_in {
            return self.limits.max_literal_before_login;
        }
        if self.is_append() { self.limits.max_append } else { self.limits.max_literal }
    }

    /// Whether the message being read is an APPEND.
    fn is_append(&self) -> bool {
        let bytes = self.fragmentizer.message_bytes();
        let mut words = bytes.split(|&b| b == b' ');
        let _tag = words.next();
        words.next().is_some_and(|command| command.eq_ignore_ascii_case(b"APPEND"))
    }

    /// Why an APPEND literal of `length` octets announced at `end` of the message may not come
    /// (after login): one message too many, or too many octets together, counting those already
    /// spilled. `None`: it may.
    fn append_refusal(&self, end: usize, length: u64) -> Option<(Code, String)> {
        if !self.logged_in || !self.is_append() {
            return None;
        }
        // The mailbox name may be a literal too.
        if self.literals > self.limits.max_append_messages.saturating_add(1) {
            let text = format!("too many messages in one APPEND (limit {})", self.limits.max_append_messages);
            return Some((Code::Limit, text));
        }
        let total = (end as u64).saturating_add(self.spilled_total).saturating_add(length);
        if total > self.limits.max_command {
            let text = format!("APPEND too large (limit {} octets per command)", self.limits.max_command);
            return Some((Code::TooBig, text));
        }
        None
    }

    /// Whether the APPEND literal of `length` octets announced at `end` goes to a spill file: a
    /// large one, and any once the command held in memory would pass the threshold, so that the
    /// messages of a MULTIAPPEND are never held in memory together.
    fn spills(&self, end: usize, length: u64) -> bool {
        let threshold = self.spill_threshold as u64;
        self.logged_in && (length > threshold || (end as u64).saturating_add(length) > threshold) && self.is_append()
    }

    /// Reads the literal of `length` octets announced at `end` of the message into a spill file,
    /// and leaves the fragmentizer after an empty literal in its place, as if the client had
    /// sent one ([`zero_literal`]); the literal is then [`Reader::take_spilled`]'s. `false`
    /// (nothing done) when the announcement cannot be rewritten or the literal is already
    /// here whole.
    async fn spill_literal(&mut self, io: &mut WriteBuffer<ImapIo>, end: usize, length: u64) -> io::Result<bool> {
        let Some(dir) = self.spill.clone() else { return Ok(false) };
        let Some(prefix) = zero_literal(&self.fragmentizer.message_bytes()[..end]) else { return Ok(false) };
        // What was read past the announcement is the literal's start: the fragmentizer takes
        // it into the message, where it is taken from.
        if let Some(FragmentInfo::Literal { end, .. }) = self.fragmentizer.progress() {
            self.line_start = end;
            self.in_literal = false;
            return Ok(true);
        }
        let mut held = self.fragmentizer.message_bytes()[end..].to_vec();
        let mut remaining = length.saturating_sub(held.len() as u64);
        let mut file = dir.create()?;
        while remaining > 0 {
            if held.len() >= SPILL_CHUNK {
                file.write(std::mem::take(&mut held)).await?;
            }
            // Never past the literal: what follows it is the fragmentizer's.
            let chunk = read_some(io.get_mut(), usize::try_from(remaining).unwrap_or(usize::MAX)).await?;
            if chunk.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            held.extend_from_slice(&chunk);
            remaining -= chunk.len() as u64;
        }
        self.spilled.push((prefix.len(), file.finish(b"", held).await?.bytes()));
        self.spilled_total = self.spilled_total.saturating_add(length);
        self.fragmentizer = Fragmentizer::new(Self::max_message(self.limits));
        self.fragmentizer.enqueue_bytes(&prefix);
        while self.fragmentizer.progress().is_some() {}
        self.line_start = prefix.len();
        self.in_literal = false;
        Ok(true)
    }

    /// Refuses a literal the client announced and will not be let to send. A synchronizing
    /// one waits for our "+", so refusing voids the command (RFC 3501 §7.5). A
    /// non-synchronizing one is already on its way, and its bytes must never be read as
    /// commands: RFC 7888 §4 lets the server reject it and close, rather than read and throw
    /// away gigabytes.
    async fn refuse_literal(
        &mut self,
        io: &mut WriteBuffer<ImapIo>,
        tag: Option<String>,
        mode: LiteralMode,
        status: Status,
        code: Option<&Code>,
        text: &str,
    ) -> io::Result<Framed> {
        self.fragmentizer.skip_message();
        self.line_start = 0;
        self.in_literal = false;
        if mode == LiteralMode::Sync {
            io.write_all(&response::status(tag.as_deref(), status, code, text)).await?;
            io.flush().await?;
            return Ok(Framed::Refused);
        }
        io.write_all(&response::status(tag.as_deref(), Status::Bad, code, text)).await?;
        io.write_all(&response::status(None, Status::Bye, None, text)).await?;
        io.flush().await?;
        Ok(Framed::Fatal)
    }

    /// Decodes the complete message as a command, with the extensions imap-codec lacks
    /// ([`extension::decode`]); fails with the text of the tagged BAD.
    fn decode(&self) -> Result<Decoded<'_>, &'static str> {
        if self.fragmentizer.is_max_message_size_exceeded() || self.fragmentizer.is_message_poisoned() {
            return Err(extension::SYNTAX_ERROR);
        }
        extension::decode(self.fragmentizer.message_bytes())
    }

    async fn read(&mut self, io: &mut WriteBuffer<ImapIo>, expect: Expect) -> io::Result<Framed> {
        self.spilled.clear();
        self.spilled_total = 0;
        self.literals = 0;
        loop {
            match self.fragmentizer.progress() {
                Some(info @ FragmentInfo::Line { start, end, announcement, ending }) => {
                    self.line_start = end;
                    let literal = match announcement {
                        Some(a) => Some((a.mode, u64::from(a.length))),
                        // `{n}` past u32::MAX is no literal to the fragmentizer, which would then
                        // read a huge non-synchronizing literal's bytes as commands.
                        None => trailing_literal(self.fragmentizer.fragment_bytes(info))
                            .filter(|&(_, length)| length > u64::from(u32::MAX)),
                    };
                    let tag = match expect {
                        Expect::Command => self.fragmentizer.decode_tag().map(|t| t.inner().to_string()),
                        Expect::Line => None,
                    };
                    let ending = if ending == LineEnding::CrLf { 2 } else { 1 };
                    let line_too_long = (end - start).saturating_sub(ending) > self.limits.max_line;
                    if line_too_long || self.command_too_large(end.saturating_sub(ending)) {
                        // The line ended in the same read that took it past the limit.
                        if let Some((mode @ LiteralMode::NonSync, _)) = literal {
                            let text = self.too_long_text();
                            return self.refuse_literal(io, tag, mode, Status::Bad, None, &text).await;
                        }
                        self.fragmentizer.skip_message();
                        self.line_start = 0;
                        return Ok(Framed::TooLong(tag));
                    }
                    if let Some((mode, length)) = literal {
                        if expect == Expect::Line {
                            let text = "unexpected literal";
                            return self.refuse_literal(io, tag, mode, Status::Bad, None, text).await;
                        }
                        let limit = self.literal_limit();
                        let when = if self.logged_in { "" } else { " before login" };
                        if length > u64::from(limit) {
                            let text = format!("literal too large (limit {limit} octets{when})");
                            return self.refuse_literal(io, tag, mode, Status::No, Some(&Code::TooBig), &text).await;
                        }
                        // The literal counts towards the command before it is invited, so the
                        // refusal comes instead of the `+`, not after the bytes.
                        if let Some(command_limit) = self.command_limit()
                            && (end as u64).saturating_add(length) > command_limit
                        {
                            let text = format!("command too large (limit {command_limit} octets{when})");
                            return self.refuse_literal(io, tag, mode, Status::No, Some(&Code::TooBig), &text).await;
                        }
                        self.literals = self.literals.saturating_add(1);
                        if let Some((code, text)) = self.append_refusal(end, length) {
                            return self.refuse_literal(io, tag, mode, Status::No, Some(&code), &text).await;
                        }
                        self.in_literal = true;
                        if mode == LiteralMode::Sync {
                            io.write_all(&response::continuation("ready for literal data")).await?;
                            io.flush().await?;
                        }
                        if self.spills(end, length) && self.spill_literal(io, end, length).await? {
                            continue;
                        }
                    }
                    if self.fragmentizer.is_message_complete() {
                        self.line_start = 0;
                        return Ok(Framed::Complete);
                    }
                }
                Some(FragmentInfo::Literal { end, .. }) => {
                    self.line_start = end;
                    self.in_literal = false;
                }
                None => {
                    let line_len = self.fragmentizer.message_bytes().len().saturating_sub(self.line_start);
                    let message_len = self.fragmentizer.message_bytes().len();
                    if !self.in_literal && (line_len > self.limits.max_line || self.command_too_large(message_len)) {
                        let tag = self.fragmentizer.decode_tag().map(|t| t.inner().to_string());
                        let bytes = self.fragmentizer.message_bytes();
                        self.discard_tail = bytes[bytes.len().saturating_sub(DISCARD_TAIL)..].to_vec();
                        self.fragmentizer.skip_message();
                        self.line_start = 0;
                        self.discarding = true;
                        return Ok(Framed::TooLong(tag));
                    }
                    let chunk = read_some(io.get_mut(), usize::MAX).await?;
                    if chunk.is_empty() {
                        return Ok(Framed::Eof);
                    }
                    let mut data = &chunk[..];
                    if self.discarding {
                        let line_end = data.iter().position(|&b| b == b'\n');
                        let seen = &data[..line_end.map_or(data.len(), |p| p + 1)];
                        self.discard_tail.extend_from_slice(&seen[seen.len().saturating_sub(DISCARD_TAIL)..]);
                        let excess = self.discard_tail.len().saturating_sub(DISCARD_TAIL);
                        self.discard_tail.drain(..excess);
                        let Some(p) = line_end else { continue };
                        self.discarding = false;
                        data = &data[p + 1..];
                        if let Some((LiteralMode::NonSync, _)) = trailing_literal(&self.discard_tail) {
                            // The discarded line announced a literal that is on its way: its
                            // bytes are not commands, and where they end is not worth finding.
                            io.write_all(&response::status(None, Status::Bye, None, "command line too long")).await?;
                            io.flush().await?;
                            return Ok(Framed::Fatal);
                        }
                    }
                    self.fragmentizer.enqueue_bytes(data);
                }
            }
        }
    }
}

impl ImapService {
    /// Runs one IMAP session to its end.
    pub async fn handle(self: Arc<Self>, conn: Accepted) {
        let client = conn.client;
        let config = Arc::new(SessionConfig {
            hostname: self.hostname.clone(),
            starttls_offered: self.tls.is_some(),
            allow_plaintext_auth: self.allow_plaintext_auth,
            max_auth_failures: self.limits.max_auth_failures,
            max_bad_commands: self.limits.max_bad_commands,
            max_append: self.limits.max_append,
            max_append_messages: self.limits.max_append_messages,
            max_append_command: self.limits.max_command,
        });
        let tls = conn.stream.is_tls();
        let mut session =
            Session::new(config, self.store.clone(), self.authenticator.clone(), self.quotas.clone(), client.ip(), tls);
        let mut io = WriteBuffer::new(ImapIo::new(conn.stream));
        tracing::info!(%client, tls, "imap session start");
        let result = self.run(&mut session, &mut io).await;
        let _ = io.flush().await;
        let _ = io.get_mut().shutdown().await;
        match result {
            Ok(()) => tracing::info!(%client, user = ?session.user(), "imap session end"),
            Err(e) => tracing::info!(%client, user = ?session.user(), error = %e, "imap session ended by I/O error"),
        }
    }

    async fn run(&self, session: &mut Session, io: &mut WriteBuffer<ImapIo>) -> io::Result<()> {
        let mut reader = self.reader();
        io.write_all(&session.greeting()).await?;
        io.flush().await?;
        let mut next = Next::Continue;
        loop {
            next = match next {
                Next::Continue => {
                    reader.set_logged_in(session.user().is_some());
                    let framed = match tokio::time::timeout(self.idle_timeout, reader.read(io, Expect::Command)).await {
                        Ok(framed) => framed?,
                        Err(_) => return self.autologout(io).await,
                    };
                    match framed {
                        Framed::Complete => {
                            if reader.fragmentizer.message_bytes().iter().all(u8::is_ascii_whitespace) {
                                // Empty lines are noise some clients send between commands.
                                Next::Continue
                            } else {
                                let spilled = reader.take_spilled();
                                match reader.decode() {
                                    Ok(decoded) => session.execute(Decoded { spilled, ..decoded }, io).await?,
                                    Err(text) => {
                                        let tag = reader.fragmentizer.decode_tag().map(|t| t.inner().to_string());
                                        session.bad_input(tag.as_deref(), text, io).await?
                                    }
                                }
                            }
                        }
                        Framed::Refused => Next::Continue,
                        Framed::TooLong(tag) => session.bad_input(tag.as_deref(), &reader.too_long_text(), io).await?,
                        Framed::Fatal | Framed::Eof => Next::Close,
                    }
                }
                Next::Close => return Ok(()),
                Next::StartTls => {
                    io.flush().await?;
                    let Some(acceptor) = &self.tls else { return Ok(()) };
                    // Bytes pipelined after STARTTLS came in the clear: never parse them (RFC 3501 §6.2.1).
                    reader = self.reader();
                    io.get_mut().stream_mut().upgrade(acceptor, HANDSHAKE_TIMEOUT).await?;
                    session.tls_started();
                    Next::Continue
                }
                Next::Authenticate { tag } => {
                    io.flush().await?;
                    reader.set_logged_in(session.user().is_some());
                    let framed = match tokio::time::timeout(self.idle_timeout, reader.read(io, Expect::Line)).await {
                        Ok(framed) => framed?,
                        Err(_) => return self.autologout(io).await,
                    };
                    match framed {
                        Framed::Complete => match reader.fragmentizer.decode_message(&AuthenticateDataCodec::default())
                        {
                            Ok(data) => session.authenticate_response(&tag, data, io).await?,
                            Err(_) => session.bad_input(Some(&tag), "invalid SASL response", io).await?,
                        },
                        Framed::Refused => Next::Continue,
                        Framed::TooLong(_) => session.bad_input(Some(&tag), "SASL response too long", io).await?,
                        Framed::Fatal | Framed::Eof => Next::Close,
                    }
                }
                Next::Idle { tag } => self.idle(session, &mut reader, io, &tag).await?,
                Next::Compress => {
                    // The tagged OK goes out uncompressed; everything after it is deflated
                    // (RFC 4978 §3). The client sends nothing between the command and the OK,
                    // so bytes already read would be a protocol error: they are dropped, as
                    // after STARTTLS.
                    io.flush().await?;
                    reader = self.reader();
                    io.get_mut().start_deflate();
                    Next::Continue
                }
            };
            io.flush().await?;
        }
    }

    /// IDLE (RFC 2177): changes are pushed as they happen until the client sends DONE.
    async fn idle(
        &self,
        session: &mut Session,
        reader: &mut Reader,
        io: &mut WriteBuffer<ImapIo>,
        tag: &str,
    ) -> io::Result<Next> {
        io.flush().await?;
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        // A connection that carries nothing for minutes is what NATs and firewalls drop, and
        // the client then never hears of new mail: an untagged OK keeps the path open.
        let mut keepalive = self.idle_keepalive.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        loop {
            tokio::select! {
                framed = reader.read(io, Expect::Line) => {
                    return match framed? {
                        Framed::Complete => {
                            let done = reader.fragmentizer.decode_message(&IdleDoneCodec::default()).is_ok();
                            session.idle_done(tag, done, io).await
                        }
                        Framed::Refused | Framed::TooLong(_) => session.idle_done(tag, false, io).await,
                        Framed::Fatal | Framed::Eof => Ok(Next::Close),
                    };
                }
                _ = session.idle_wait() => {
                    session.report_changes(true, io).await?;
                    io.flush().await?;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.autologout(io).await?;
                    return Ok(Next::Close);
                }
                _ = tick(keepalive.as_mut()) => {
                    io.write_all(STILL_HERE).await?;
                    io.flush().await?;
                }
            }
        }
    }

    /// A reader for a new connection (or one just turned TLS or compressed).
    fn reader(&self) -> Reader {
        Reader::spilling(self.limits, self.spill.clone(), self.spill_threshold)
    }

    async fn autologout(&self, io: &mut WriteBuffer<ImapIo>) -> io::Result<()> {
        io.write_all(&response::status(None, Status::Bye, None, "autologout; idle for too long")).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// What the reader made of the input.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Message(String),
        Refused,
        TooLong(Option<String>),
        Fatal,
        /// The literal the reader wrote to a spill file, before the message it belongs to, and
        /// where in that message the empty literal in its place starts.
        Spilled(usize, Vec<u8>),
    }

    /// Feeds `input` (in two writes, the first flushed alone) to a logged-in session's reader
    /// with a small line limit over a loopback socket; returns what it framed until the end, and
    /// what it wrote back.
    async fn frame(expect: Expect, first: &[u8], rest: &[u8]) -> (Vec<Seen>, String) {
        frame_as(true, expect, first, rest).await
    }

    /// The same, before login (`logged_in` false) or after it.
    async fn frame_as(logged_in: bool, expect: Expect, first: &[u8], rest: &[u8]) -> (Vec<Seen>, String) {
        let mut reader = Reader::new(test_limits());
        reader.set_logged_in(logged_in);
        frame_with(reader, expect, first, rest).await
    }

    /// 100,000 sessions in IDLE each hold their whole connection future (tokio allocates a
    /// task's future once, at its largest state), so what it holds across an await is paid
    /// per session: issue 29 allows 15 KiB a session in all. Buffers belong on the heap only
    /// while a command is in flight.
    #[tokio::test]
    async fn a_waiting_session_holds_a_small_future() {
        let spill = tempfile::tempdir().unwrap();
        let store: Arc<dyn MailStore> = Arc::new(sirms_storage::MemoryStore::new());
        let directory = crate::imap::session::tests::directory();
        let service = Arc::new(ImapService {
            hostname: "imap.example.test".into(),
            authenticator: crate::imap::session::tests::authenticator(directory.clone()),
            quotas: Quotas::new(store.clone(), directory),
            store,
            tls: None,
            allow_plaintext_auth: true,
            idle_timeout: Duration::from_secs(1800),
            idle_keepalive: Some(Duration::from_secs(120)),
            limits: ImapLimits::default(),
            spill: Arc::new(SpillDir::open(&spill.path().join("spill")).unwrap()),
            spill_threshold: crate::spill::threshold(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, client) = listener.accept().await.unwrap();
        let conn =
            Accepted { stream: crate::net::stream::Stream::Plain(server), client, health_check: false, number: 1 };
        let size = std::mem::size_of_val(&service.handle(conn));
        eprintln!("IMAP connection future: {size} octets");
        assert!(size <= 4096, "the connection future is {size} octets");
    }

    fn test_limits() -> ImapLimits {
        ImapLimits {
            max_line: 100,
            max_literal: 1000,
            max_literal_before_login: 50,
            max_command_before_login: 200,
            ..ImapLimits::default()
        }
    }

    /// Feeds `input` to `reader` over a loopback socket, as [`frame`] does.
    async fn frame_with(mut reader: Reader, expect: Expect, first: &[u8], rest: &[u8]) -> (Vec<Seen>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (first, rest) = (first.to_vec(), rest.to_vec());
        let writer = tokio::spawn(async move {
            client.write_all(&first).await.unwrap();
            client.flush().await.unwrap();
            client.write_all(&rest).await.unwrap();
            client.shutdown().await.unwrap();
            let mut written = Vec::new();
            client.read_to_end(&mut written).await.unwrap();
            written
        });
        let mut io = WriteBuffer::new(ImapIo::new(crate::net::stream::Stream::Plain(server)));
        let mut seen = Vec::new();
        loop {
            let framed = reader.read(&mut io, expect).await.unwrap();
            for (at, spilled) in reader.take_spilled() {
                seen.push(Seen::Spilled(at, spilled.to_vec()));
            }
            match framed {
                Framed::Complete => {
                    seen.push(Seen::Message(String::from_utf8_lossy(reader.fragmentizer.message_bytes()).into()))
                }
                Framed::Refused => seen.push(Seen::Refused),
                Framed::TooLong(tag) => seen.push(Seen::TooLong(tag)),
                Framed::Fatal => {
                    seen.push(Seen::Fatal);
                    break;
                }
                Framed::Eof => break,
            }
        }
        io.flush().await.unwrap();
        drop(io);
        (seen, String::from_utf8(writer.await.unwrap()).unwrap())
    }

    fn message(text: &str) -> Seen {
        Seen::Message(text.to_string())
    }

    /// `{n}` past u32::MAX: the fragmentizer does not take it for a literal at all.
    #[tokio::test]
    async fn literal_past_u32_is_refused_and_never_read_as_commands() {
        let (seen, written) = frame(Expect::Command, b"b APPEND INBOX {10737418240}\r\nc NOOP\r\n", b"").await;
        assert_eq!(seen, [Seen::Refused, message("c NOOP\r\n")]);
        assert!(written.starts_with("b NO [TOOBIG] literal too large"), "{written}");
        let (seen, written) =
            frame(Expect::Command, b"b APPEND INBOX {10737418240+}\r\nc CREATE smuggled\r\n", b"").await;
        assert_eq!(seen, [Seen::Fatal]);
        assert!(written.starts_with("b BAD [TOOBIG] literal too large"), "{written}");
        assert!(written.contains("\r\n* BYE literal too large"), "{written}");
    }

    /// A line past the limit whose end came in the same read as the rest of it.
    #[tokio::test]
    async fn over_long_line_in_one_read_is_too_long() {
        let line = format!("a NOOP {}\r\nc NOOP\r\n", "x".repeat(150));
        let (seen, _) = frame(Expect::Command, line.as_bytes(), b"").await;
        assert_eq!(seen, [Seen::TooLong(Some("a".into())), message("c NOOP\r\n")]);
        let line = format!("a APPEND INBOX ({}) {{18+}}\r\nc CREATE smuggled\r\nd NOOP\r\n", "x".repeat(150));
        let (seen, written) = frame(Expect::Command, line.as_bytes(), b"").await;
        assert_eq!(seen, [Seen::Fatal]);
        assert_eq!(written, "a BAD command line too long\r\n* BYE command line too long\r\n");
    }

    /// A line found too long before its end arrived is discarded up to its end; if that end
    /// announces a non-synchronizing literal, the literal is not read as commands.
    #[tokio::test]
    async fn discarded_line_with_literal_plus_closes() {
        // More than one read's worth, so the limit trips before the line end is seen.
        let head = format!("a APPEND INBOX ({}", "x".repeat(crate::net::scratch_read::READ_CHUNK + 100));
        let (seen, written) = frame(Expect::Command, head.as_bytes(), b") {18+}\r\nc CREATE smuggled\r\n").await;
        assert_eq!(seen, [Seen::TooLong(Some("a".into())), Seen::Fatal]);
        assert_eq!(written, "* BYE command line too long\r\n");
        // Without a literal the session goes on after the line.
        let (seen, _) = frame(Expect::Command, head.as_bytes(), b") {18}\r\nc NOOP\r\n").await;
        assert_eq!(seen, [Seen::TooLong(Some("a".into())), message("c NOOP\r\n")]);
    }

    #[tokio::test]
    async fn literal_plus_in_a_continuation_line_closes() {
        let (seen, written) = frame(Expect::Line, b"{17+}\r\nc CREATE smuggled\r\n", b"").await;
        assert_eq!(seen, [Seen::Fatal]);
        assert_eq!(written, "* BAD unexpected literal\r\n* BYE unexpected literal\r\n");
        let (seen, written) = frame(Expect::Line, b"{5}\r\nDONE\r\n", b"").await;
        assert_eq!(seen, [Seen::Refused, message("DONE\r\n")]);
        assert_eq!(written, "* BAD unexpected literal\r\n");
    }

    /// Before login, a literal past the small pre-login limit is refused instead of invited;
    /// the same literal after login gets its `+`.
    #[tokio::test]
    async fn large_literal_before_login_gets_no_continuation() {
        let (seen, written) = frame_as(false, Expect::Command, b"a APPEND INBOX {100}\r\nb NOOP\r\n", b"").await;
        assert_eq!(seen, [Seen::Refused, message("b NOOP\r\n")]);
        assert_eq!(written, "a NO [TOOBIG] literal too large (limit 50 octets before login)\r\n");
        let body = "x".repeat(100);
        let input = format!("a APPEND INBOX {{100}}\r\n{body}\r\n");
        let (seen, written) = frame_as(true, Expect::Command, input.as_bytes(), b"").await;
        assert_eq!(seen, [message(&input)]);
        assert_eq!(written, "+ ready for literal data\r\n");
    }

    /// Small literals that add up past the pre-login command limit: the one that would cross it
    /// is refused before its `+`, and a non-synchronizing one closes the connection.
    #[tokio::test]
    async fn small_literals_adding_up_before_login_are_refused() {
        // 14 + 4 * (40 + 7) = 202 octets when the fifth literal is announced: it would cross 200.
        let mut input = String::from("a LOGIN {40}\r\n");
        for _ in 0..4 {
            input += &"y".repeat(40);
            input += " {40}\r\n";
        }
        input += "b NOOP\r\n";
        let (seen, written) = frame_as(false, Expect::Command, input.as_bytes(), b"").await;
        assert_eq!(seen, [Seen::Refused, message("b NOOP\r\n")]);
        assert_eq!(written.matches("+ ready").count(), 4, "{written}");
        assert!(
            written.ends_with("\r\na NO [TOOBIG] command too large (limit 200 octets before login)\r\n"),
            "{written}"
        );
        let mut input = String::from("a LOGIN {40+}\r\n");
        for _ in 0..4 {
            input += &"y".repeat(40);
            input += " {40+}\r\n";
        }
        input += &"y".repeat(40);
        input += "\r\nc CREATE smuggled\r\n";
        let (seen, written) = frame_as(false, Expect::Command, input.as_bytes(), b"").await;
        assert_eq!(seen, [Seen::Fatal]);
        // Here the fifth announcement line itself crosses the limit: refused as too long.
        assert!(written.starts_with("a BAD command too long (limit 200 octets before login)\r\n* BYE"), "{written}");
    }

    /// Before login a line after literals is bounded by the whole-command limit, and the BAD
    /// says so.
    #[tokio::test]
    async fn long_command_before_login_is_too_long() {
        // 101 octets of line and literals, then a line of 100: within the line limit, past the
        // command limit.
        let line =
            format!("a LOGIN {{40}}\r\n{y} {{40}}\r\n{y} {x}\r\nc NOOP\r\n", y = "y".repeat(40), x = "x".repeat(99));
        let (seen, _) = frame_as(false, Expect::Command, line.as_bytes(), b"").await;
        assert_eq!(seen, [Seen::TooLong(Some("a".into())), message("c NOOP\r\n")]);
        let (seen, _) = frame_as(true, Expect::Command, line.as_bytes(), b"").await;
        assert_eq!(seen, [message(line.trim_end_matches("c NOOP\r\n")), message("c NOOP\r\n")]);
    }

    /// LOGIN with literals within the pre-login limits is framed whole.
    #[tokio::test]
    async fn login_with_literals_before_login_works() {
        let input = "a LOGIN {17}\r\nalice@example.test {8}\r\nalice-pw\r\n";
        let (seen, written) = frame_as(false, Expect::Command, input.as_bytes(), b"").await;
        assert_eq!(seen, [message(input)]);
        assert_eq!(written, "+ ready for literal data\r\n+ ready for literal data\r\n");
    }

    #[test]
    fn zero_literal_rewrites_only_an_announcement() {
        assert_eq!(zero_literal(b"a APPEND INBOX {300}\r\n").unwrap(), b"a APPEND INBOX {0}\r\n");
        assert_eq!(zero_literal(b"a APPEND INBOX () {300+}\n").unwrap(), b"a APPEND INBOX () {0+}\n");
        assert_eq!(zero_literal(b"a APPEND {5}\r\nINBOX ~{12}\r\n").unwrap(), b"a APPEND {5}\r\nINBOX ~{0}\r\n");
        for no in [&b"a NOOP\r\n"[..], b"a {}\r\n", b"a {+}\r\n", b"a {1x}\r\n", b"a {5} \r\n", b"a 5}\r\n"] {
            assert_eq!(zero_literal(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    /// Issue 28: an APPEND literal past the threshold goes to a spill file as it arrives (the
    /// reader holds one read of it at most); the command is framed with an empty literal in its
    /// place, and what follows the literal is framed as ever. Smaller literals, and literals
    /// of other commands, stay in the command.
    #[tokio::test]
    async fn large_append_literal_is_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Arc::new(SpillDir::open(dir.path()).unwrap());
        let limits = ImapLimits { max_append: 100_000, ..test_limits() };
        let literal: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for mode in ["", "+"] {
            let mut reader = Reader::spilling(limits, spill.clone(), 1000);
            reader.set_logged_in(true);
            let first = format!("a APPEND INBOX (\\Seen) {{50000{mode}}}\r\n");
            let rest = [&literal[..], b"\r\nb NOOP\r\nc APPEND INBOX {10}\r\n0123456789\r\n"].concat();
            let (seen, written) = frame_with(reader, Expect::Command, first.as_bytes(), &rest).await;
            assert_eq!(
                seen,
                [
                    Seen::Spilled(first.len() - 4, literal.clone()),
                    message(&format!("a APPEND INBOX (\\Seen) {{0{mode}}}\r\n\r\n")),
                    message("b NOOP\r\n"),
                    message("c APPEND INBOX {10}\r\n0123456789\r\n"),
                ]
            );
            let continuations = if mode.is_empty() { 2 } else { 1 };
            assert_eq!(written.matches("+ ready").count(), continuations, "{written}");
        }
        // A literal of another command is never spilled (nor allowed past its limit).
        let mut reader = Reader::spilling(limits, spill, 10);
        reader.set_logged_in(true);
        let input = format!("a LOGIN {{20}}\r\n{} x\r\n", "y".repeat(20));
        let (seen, _) = frame_with(reader, Expect::Command, input.as_bytes(), b"").await;
        assert_eq!(seen, [message(&input)]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "spill files left behind");
    }

    /// MULTIAPPEND: each large literal goes to a spill file of its own, and so does a smaller
    /// one once the command held in memory would pass the threshold; each is handed over with
    /// where its empty literal stands, and every synchronizing literal got its own `+`. (A
    /// literal that came whole with its announcement, within one read, stays in memory.)
    #[tokio::test]
    async fn multiappend_literals_are_spilled_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Arc::new(SpillDir::open(dir.path()).unwrap());
        let limits = ImapLimits { max_append: 100_000, ..test_limits() };
        let (one, two, three) = (vec![b'1'; 40_000], vec![b'2'; 15_000], vec![b'3'; 17_000]);
        let mut reader = Reader::spilling(limits, spill, 20_000);
        reader.set_logged_in(true);
        // The second literal fits under the threshold and stays; the third is below it too, but
        // with the second the command would pass it.
        let first = "a APPEND INBOX {40000}\r\n";
        let rest =
            [&one[..], b" (\\Seen) {15000}\r\n", &two, b" {17000}\r\n", &three, b" {10}\r\n0123456789\r\nb NOOP\r\n"]
                .concat();
        let (seen, written) = frame_with(reader, Expect::Command, first.as_bytes(), &rest).await;
        let head = "a APPEND INBOX {0}\r\n (\\Seen) {15000}\r\n";
        let framed = format!("{head}{} {{0}}\r\n {{10}}\r\n0123456789\r\n", "2".repeat(15_000));
        let third_at = head.len() + 15_000 + " {0}\r\n".len();
        assert_eq!(
            seen,
            [
                Seen::Spilled("a APPEND INBOX {0}\r\n".len(), one),
                Seen::Spilled(third_at, three),
                message(&framed),
                message("b NOOP\r\n"),
            ]
        );
        assert_eq!(written.matches("+ ready").count(), 4, "{written}");
    }

    /// A MULTIAPPEND past the number of messages or the octets one command may carry is refused
    /// when the literal that would pass it is announced: instead of its `+`, or, for a
    /// non-synchronizing literal, with BAD and BYE.
    #[tokio::test]
    async fn multiappend_past_its_limits_is_refused_before_the_literal() {
        let limits = ImapLimits { max_append_messages: 2, max_command: 500, ..test_limits() };
        let run = |input: String| async move {
            let mut reader = Reader::new(limits);
            reader.set_logged_in(true);
            frame_with(reader, Expect::Command, input.as_bytes(), b"").await
        };
        // Three messages: the third (the fourth literal would be allowed for a mailbox literal,
        // the session counts exactly) is refused only past two plus one.
        let three = "a APPEND INBOX {3}\r\none {3}\r\ntwo {5}\r\nthree\r\nb NOOP\r\n".to_string();
        let (seen, _) = run(three.clone()).await;
        assert_eq!(seen, [message(three.trim_end_matches("b NOOP\r\n")), message("b NOOP\r\n")]);
        let four = "a APPEND INBOX {3}\r\none {3}\r\ntwo {5}\r\nthree {4}\r\nb NOOP\r\n".to_string();
        let (seen, written) = run(four).await;
        assert_eq!(seen, [Seen::Refused, message("b NOOP\r\n")]);
        assert!(written.ends_with("a NO [LIMIT] too many messages in one APPEND (limit 2)\r\n"), "{written}");
        // 300 octets, then 300 more: past 500 together.
        let big = format!("a APPEND INBOX {{300}}\r\n{} {{300}}\r\nb NOOP\r\n", "x".repeat(300));
        let (seen, written) = run(big).await;
        assert_eq!(seen, [Seen::Refused, message("b NOOP\r\n")]);
        assert!(written.ends_with("a NO [TOOBIG] APPEND too large (limit 500 octets per command)\r\n"), "{written}");
        let plus = format!("a APPEND INBOX {{300+}}\r\n{} {{300+}}\r\nc CREATE smuggled\r\n", "x".repeat(300));
        let (seen, written) = run(plus).await;
        assert_eq!(seen, [Seen::Fatal]);
        assert!(written.contains("a BAD [TOOBIG] APPEND too large") && written.contains("* BYE"), "{written}");
        // Other commands are not APPENDs: their literals are bounded by the literal limit only.
        let login = "a LOGIN {3}\r\none {3}\r\ntwo\r\n".to_string();
        let (seen, _) = run(login.clone()).await;
        assert_eq!(seen, [message(&login)]);
    }
}
