//! The IMAP socket loop: frames commands (lines and literals) with imap-codec's `Fragmentizer`,
//! enforces the line and literal limits, and drives a [`Session`] through STARTTLS,
//! AUTHENTICATE continuations and IDLE.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use imap_codec::{AuthenticateDataCodec, IdleDoneCodec};
use imap_types::core::LiteralMode;
use sirms_storage::MailStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio_rustls::TlsAcceptor;

use super::extension::{self, Decoded};
use super::response::{self, Code, Status};
use super::session::{Next, Session, SessionConfig};
use crate::auth::Authenticator;
use crate::directory::Directory;
use crate::net::listener::Accepted;
use crate::net::stream::Stream;

const READ_CHUNK: usize = 16 * 1024;

/// What one IMAP connection may send.
#[derive(Debug, Clone, Copy)]
pub struct ImapLimits {
    /// Longest command line, literals excluded (RFC 9051 §4 asks for at least 8,192 octets).
    pub max_line: usize,
    /// Largest literal in APPEND: the largest message a client can upload.
    pub max_append: u32,
    /// Largest literal in any other command (passwords, search strings, mailbox names).
    pub max_literal: u32,
    /// Malformed or invalid commands before the connection is closed.
    pub max_bad_commands: u32,
    /// Failed logins before the connection is closed.
    pub max_auth_failures: u32,
}

impl Default for ImapLimits {
    fn default() -> Self {
        ImapLimits {
            max_line: 64 * 1024,
            max_append: 64 * 1024 * 1024,
            max_literal: 64 * 1024,
            max_bad_commands: 20,
            max_auth_failures: 3,
        }
    }
}

/// Everything an IMAP listener's sessions share.
pub struct ImapService {
    pub hostname: String,
    pub authenticator: Authenticator,
    /// For the users' quotas.
    pub directory: Arc<dyn Directory>,
    pub store: Arc<dyn MailStore>,
    /// For STARTTLS; `None` means it is not offered.
    pub tls: Option<TlsAcceptor>,
    /// LOGIN and AUTHENTICATE PLAIN without TLS.
    pub allow_plaintext_auth: bool,
    /// Autologout after this long without a command, IDLE included (RFC 3501 §5.4: at least 30 minutes).
    pub idle_timeout: Duration,
    pub limits: ImapLimits,
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
}

impl Reader {
    fn new(limits: ImapLimits) -> Reader {
        let max = limits.max_append.saturating_add(u32::try_from(limits.max_line).unwrap_or(u32::MAX));
        Reader { fragmentizer: Fragmentizer::new(max), limits, line_start: 0, in_literal: false, discarding: false }
    }

    /// The literal limit for the message being read: large only for APPEND.
    fn literal_limit(&self) -> u32 {
        let bytes = self.fragmentizer.message_bytes();
        let mut words = bytes.split(|&b| b == b' ');
        let _tag = words.next();
        match words.next() {
            Some(command) if command.eq_ignore_ascii_case(b"APPEND") => self.limits.max_append,
            _ => self.limits.max_literal,
        }
    }

    /// Decodes the complete message as a command, with the extensions imap-codec lacks
    /// ([`extension::decode`]); fails with the text of the tagged BAD.
    fn decode(&self) -> Result<Decoded<'_>, &'static str> {
        if self.fragmentizer.is_max_message_size_exceeded() || self.fragmentizer.is_message_poisoned() {
            return Err(extension::SYNTAX_ERROR);
        }
        extension::decode(self.fragmentizer.message_bytes())
    }

    async fn read(&mut self, io: &mut BufWriter<Stream>, expect: Expect) -> io::Result<Framed> {
        loop {
            match self.fragmentizer.progress() {
                Some(FragmentInfo::Line { end, announcement, .. }) => {
                    self.line_start = end;
                    if let Some(literal) = announcement {
                        let tag = self.fragmentizer.decode_tag().map(|t| t.inner().to_string());
                        if expect == Expect::Line {
                            self.fragmentizer.skip_message();
                            io.write_all(&response::status(None, Status::Bad, None, "unexpected literal")).await?;
                            io.flush().await?;
                            return Ok(Framed::Refused);
                        }
                        let limit = self.literal_limit();
                        if literal.length > limit {
                            let text = format!("literal too large (limit {limit} octets)");
                            if literal.mode == LiteralMode::Sync {
                                // The client waits for "+": refusing voids the command (RFC 3501 §7.5).
                                self.fragmentizer.skip_message();
                                let reply = response::status(tag.as_deref(), Status::No, Some(&Code::TooBig), &text);
                                io.write_all(&reply).await?;
                                io.flush().await?;
                                return Ok(Framed::Refused);
                            }
                            // A non-synchronizing literal is already on its way: RFC 7888 §4 lets the
                            // server reject it and close, rather than read and throw away gigabytes.
                            io.write_all(&response::status(tag.as_deref(), Status::Bad, Some(&Code::TooBig), &text))
                                .await?;
                            io.write_all(&response::status(None, Status::Bye, None, "literal too large")).await?;
                            io.flush().await?;
                            return Ok(Framed::Fatal);
                        }
                        self.in_literal = true;
                        if literal.mode == LiteralMode::Sync {
                            io.write_all(&response::continuation("ready for literal data")).await?;
                            io.flush().await?;
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
                    if !self.in_literal
                        && self.fragmentizer.message_bytes().len().saturating_sub(self.line_start)
                            > self.limits.max_line
                    {
                        let tag = self.fragmentizer.decode_tag().map(|t| t.inner().to_string());
                        self.fragmentizer.skip_message();
                        self.line_start = 0;
                        self.discarding = true;
                        return Ok(Framed::TooLong(tag));
                    }
                    let mut chunk = [0u8; READ_CHUNK];
                    let n = io.get_mut().read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(Framed::Eof);
                    }
                    let mut data = &chunk[..n];
                    if self.discarding {
                        match data.iter().position(|&b| b == b'\n') {
                            Some(p) => {
                                self.discarding = false;
                                data = &data[p + 1..];
                            }
                            None => continue,
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
        });
        let tls = conn.stream.is_tls();
        let mut session = Session::new(
            config,
            self.store.clone(),
            self.authenticator.clone(),
            self.directory.clone(),
            client.ip(),
            tls,
        );
        let mut io = BufWriter::new(conn.stream);
        tracing::info!(%client, tls, "imap session start");
        let result = self.run(&mut session, &mut io).await;
        let _ = io.flush().await;
        let _ = io.get_mut().shutdown().await;
        match result {
            Ok(()) => tracing::info!(%client, user = ?session.user(), "imap session end"),
            Err(e) => tracing::info!(%client, user = ?session.user(), error = %e, "imap session ended by I/O error"),
        }
    }

    async fn run(&self, session: &mut Session, io: &mut BufWriter<Stream>) -> io::Result<()> {
        let mut reader = Reader::new(self.limits);
        io.write_all(&session.greeting()).await?;
        io.flush().await?;
        let mut next = Next::Continue;
        loop {
            next = match next {
                Next::Continue => {
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
                                match reader.decode() {
                                    Ok(decoded) => session.execute(decoded, io).await?,
                                    Err(text) => {
                                        let tag = reader.fragmentizer.decode_tag().map(|t| t.inner().to_string());
                                        session.bad_input(tag.as_deref(), text, io).await?
                                    }
                                }
                            }
                        }
                        Framed::Refused => Next::Continue,
                        Framed::TooLong(tag) => session.bad_input(tag.as_deref(), "command line too long", io).await?,
                        Framed::Fatal | Framed::Eof => Next::Close,
                    }
                }
                Next::Close => return Ok(()),
                Next::StartTls => {
                    io.flush().await?;
                    let Some(acceptor) = &self.tls else { return Ok(()) };
                    // Bytes pipelined after STARTTLS came in the clear: never parse them (RFC 3501 §6.2.1).
                    reader = Reader::new(self.limits);
                    io.get_mut().upgrade(acceptor).await?;
                    session.tls_started();
                    Next::Continue
                }
                Next::Authenticate { tag } => {
                    io.flush().await?;
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
            };
            io.flush().await?;
        }
    }

    /// IDLE (RFC 2177): changes are pushed as they happen until the client sends DONE.
    async fn idle(
        &self,
        session: &mut Session,
        reader: &mut Reader,
        io: &mut BufWriter<Stream>,
        tag: &str,
    ) -> io::Result<Next> {
        io.flush().await?;
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
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
            }
        }
    }

    async fn autologout(&self, io: &mut BufWriter<Stream>) -> io::Result<()> {
        io.write_all(&response::status(None, Status::Bye, None, "autologout; idle for too long")).await?;
        io.flush().await
    }
}
