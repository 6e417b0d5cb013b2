//! One milter conversation per message, over TCP: negotiation, the session's steps replayed
//! (connect, HELO, MAIL, RCPT, header fields, body), then the filter's changes and verdict at
//! the end of the body, turned into a [`Verdict`].
//!
//! The whole conversation runs at the end of DATA, so a refusal at any step refuses the
//! message (all recipients): the node cannot refuse a recipient it already took.
//! `SMFIR_DISCARD` refuses too (550): dropping mail after a 250 would lose it silently, and
//! a refusal at least tells the sender.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, CodecError, Command, Decoder, Response, action, protocol};
use crate::inbound::edit::Edit;
use crate::inbound::filter::{self, Filter, FilterMetrics, OnFailure, Outcome};
use crate::inbound::{Arrival, ConfigError, Verdict};
use crate::smtp::reply::replies;

/// The most a filter may send as a new body: a bound on what a broken one makes us hold.
const MAX_NEW_BODY: usize = 64 << 20;

/// One `[[inbound.milter]]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterConfig {
    /// The filter's `host:port`.
    pub address: String,
    /// How long the whole conversation for one message may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// What to do with mail when the filter cannot be asked.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Whether mail from authenticated senders (submission) goes through it too.
    #[serde(default)]
    pub scan_submission: bool,
}

fn default_timeout() -> u64 {
    30
}

/// Why a conversation failed.
#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("unreachable: {0}")]
    Connect(std::io::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("closed the connection")]
    Closed,
    #[error("bad packet: {0}")]
    Codec(#[from] CodecError),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// How the filter ended the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Deliver (with the changes collected).
    Accept,
    /// Refuse for good, with the filter's text if it gave one.
    Reject(Option<String>),
    /// Refuse for now, with the filter's text if it gave one.
    Tempfail(Option<String>),
    /// The filter wanted the message thrown away: refused instead (see the module's doc).
    Discard,
}

/// What a conversation decided: its end and the changes asked for at the end of the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub end: End,
    /// Header changes, in the order the filter sent them.
    pub changes: Vec<Response>,
    /// The new body, if the filter replaced it.
    pub body: Option<Vec<u8>>,
    /// The quarantine reason, if the filter asked for one.
    pub quarantine: Option<String>,
}

/// A milter to ask about every message.
#[derive(Debug, Clone)]
pub struct Client {
    address: String,
    timeout: Duration,
    on_failure: OnFailure,
    scan_submission: bool,
    metrics: Arc<FilterMetrics>,
}

impl Client {
    /// A client for `config`, counting into `metrics`.
    pub fn new(config: &MilterConfig, metrics: Arc<FilterMetrics>) -> Result<Client, ConfigError> {
        let valid = config.address.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !valid {
            return Err(ConfigError(format!("milter address {:?}: want host:port", config.address)));
        }
        if config.timeout_secs == 0 {
            return Err(ConfigError("milter timeout_secs must be at least 1".into()));
        }
        Ok(Client {
            address: config.address.clone(),
            timeout: Duration::from_secs(config.timeout_secs),
            on_failure: config.on_failure,
            scan_submission: config.scan_submission,
            metrics,
        })
    }

    /// Asks the filter about the message (as the stages before left it) and applies its answer.
    pub async fn run(&self, arrival: &Arrival<'_>, message: &[u8], verdict: &mut Verdict) {
        if arrival.login.is_some() && !self.scan_submission {
            return;
        }
        filter::strip_forged(message, verdict);
        let mut current = verdict.headers.as_bytes().to_vec();
        current.extend_from_slice(verdict.rewritten.as_deref().unwrap_or(message));
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.converse(arrival, &current)).await;
        let took = started.elapsed();
        let outcome = match result.unwrap_or(Err(MilterError::Timeout)) {
            Ok(decision) => {
                tracing::info!(
                    msg = %arrival.id, milter = %self.address, end = ?decision.end, changes = decision.changes.len(),
                    new_body = decision.body.is_some(), quarantine = ?decision.quarantine,
                    ms = took.as_millis() as u64, "milter scan"
                );
                apply(decision, &current, verdict)
            }
            Err(e) => {
                tracing::warn!(msg = %arrival.id, milter = %self.address, error = %e, on_failure = ?self.on_failure, "milter scan failed");
                self.on_failure.apply(Filter::Milter, &e.to_string(), verdict);
                Outcome::Failed
            }
        };
        self.metrics.record(Filter::Milter, took, outcome);
    }

    async fn converse(&self, arrival: &Arrival<'_>, message: &[u8]) -> Result<Decision, MilterError> {
        let stream = TcpStream::connect(&self.address).await.map_err(MilterError::Connect)?;
        let mut conn = Conversation { stream, decoder: Decoder::new(), protocol: 0 };
        let decision = conn.run(arrival, message).await;
        // A polite goodbye; the filter may already have gone, which changes nothing.
        let mut quit = Vec::new();
        if Command::Quit.encode(&mut quit).is_ok() {
            let _ = conn.stream.write_all(&quit).await;
        }
        decision
    }
}

/// One connection to a filter, with what negotiation settled.
struct Conversation {
    stream: TcpStream,
    decoder: Decoder,
    /// The protocol flags the filter asked for.
    protocol: u32,
}

impl Conversation {
    async fn run(&mut self, arrival: &Arrival<'_>, message: &[u8]) -> Result<Decision, MilterError> {
        let offer =
            Command::Negotiate { version: codec::VERSION, actions: action::SUPPORTED, protocol: protocol::OFFERED };
        self.send(&offer).await?;
        match self.read().await? {
            Response::Negotiate { version, protocol, .. } if version >= 2 => {
                self.protocol = protocol & protocol::OFFERED;
            }
            other => return Err(MilterError::Protocol(format!("negotiation answered with {other:?}"))),
        }
        let ended = |end| Ok(Decision { end, changes: Vec::new(), body: None, quarantine: None });
        let (family, address) = match arrival.client {
            IpAddr::V4(a) => (b'4', a.to_string()),
            IpAddr::V6(a) => (b'6', format!("IPv6:{a}")),
        };
        // The node does not look up the client's name: the bracketed address stands for it, as
        // an MTA writes an unresolved client.
        let hostname = format!("[{}]", arrival.client);
        let connect = Command::Connect { hostname: &hostname, family, port: 0, address: &address };
        if let Some(end) = self.step(&connect, protocol::NO_CONNECT, protocol::NR_CONNECT).await? {
            return ended(end);
        }
        if let Some(end) = self.step(&Command::Helo(arrival.helo), protocol::NO_HELO, protocol::NR_HELO).await? {
            return ended(end);
        }
        let login = arrival.login.unwrap_or("");
        let macros = [("{auth_authen}", login), ("i", arrival.id)];
        let macros = if login.is_empty() { &macros[1..] } else { &macros[..] };
        self.send(&Command::Macros { stage: b'M', pairs: macros }).await?;
        let from = format!("<{}>", arrival.from);
        if let Some(end) = self.step(&Command::Mail(&from), protocol::NO_MAIL, protocol::NR_MAIL).await? {
            return ended(end);
        }
        for rcpt in &arrival.recipients {
            let to = format!("<{rcpt}>");
            if let Some(end) = self.step(&Command::Rcpt(&to), protocol::NO_RCPT, protocol::NR_RCPT).await? {
                return ended(end);
            }
        }
        if let Some(end) = self.step(&Command::Data, protocol::NO_DATA, protocol::NR_DATA).await? {
            return ended(end);
        }
        let edit = Edit::parse(message);
        for (name, value) in edit.fields() {
            let name = String::from_utf8_lossy(name);
            let value = String::from_utf8_lossy(value);
            let header = Command::Header { name: &name, value: &value };
            if let Some(end) = self.step(&header, protocol::NO_HEADERS, protocol::NR_HEADER).await? {
                return ended(end);
            }
        }
        if let Some(end) = self.step(&Command::EndOfHeaders, protocol::NO_EOH, protocol::NR_EOH).await? {
            return ended(end);
        }
        for chunk in edit.body().chunks(codec::MAX_BODY_CHUNK) {
            match self.answer(&Command::Body(chunk), protocol::NO_BODY, protocol::NR_BODY).await? {
                Step::Next => {}
                Step::SkipBody => break,
                Step::End(end) => return ended(end),
            }
        }
        self.send(&Command::Macros { stage: b'E', pairs: &[("i", arrival.id)] }).await?;
        self.send(&Command::EndOfBody).await?;
        self.end_of_body().await
    }

    /// A step before the body's end: `Some` if the filter's answer ends the conversation.
    async fn step(&mut self, command: &Command<'_>, skip: u32, no_reply: u32) -> Result<Option<End>, MilterError> {
        Ok(match self.answer(command, skip, no_reply).await? {
            Step::End(end) => Some(end),
            Step::Next | Step::SkipBody => None,
        })
    }

    /// Sends `command` unless the filter asked not to get it (`skip`), and reads its answer
    /// unless the filter said it gives none (`no_reply`).
    async fn answer(&mut self, command: &Command<'_>, skip: u32, no_reply: u32) -> Result<Step, MilterError> {
        if self.protocol & skip != 0 {
            return Ok(Step::Next);
        }
        self.send(command).await?;
        if self.protocol & no_reply != 0 {
            return Ok(Step::Next);
        }
        loop {
            return match self.read().await? {
                Response::Continue => Ok(Step::Next),
                Response::Progress => continue,
                Response::Skip if matches!(command, Command::Body(_)) => Ok(Step::SkipBody),
                Response::Accept => Ok(Step::End(End::Accept)),
                response => match verdict_of(&response) {
                    Some(end) => Ok(Step::End(end)),
                    None => Err(MilterError::Protocol(format!("{response:?} before the end of the body"))),
                },
            };
        }
    }

    /// Collects the changes after `SMFIC_BODYEOB` until the filter's verdict.
    async fn end_of_body(&mut self) -> Result<Decision, MilterError> {
        let mut decision = Decision { end: End::Accept, changes: Vec::new(), body: None, quarantine: None };
        loop {
            let response = self.read().await?;
            match response {
                Response::Progress => {}
                Response::Accept | Response::Continue => return Ok(decision),
                Response::AddHeader { .. } | Response::InsertHeader { .. } | Response::ChangeHeader { .. } => {
                    decision.changes.push(response)
                }
                Response::ReplaceBody(chunk) => {
                    let body = decision.body.get_or_insert_with(Vec::new);
                    if body.len() + chunk.len() > MAX_NEW_BODY {
                        return Err(MilterError::Protocol("new body over the limit".into()));
                    }
                    body.extend_from_slice(&chunk);
                }
                Response::Quarantine(reason) => decision.quarantine = Some(reason),
                Response::Other(code) => {
                    tracing::info!(code = %(code as char), "milter asked for a change the node does not make; ignored");
                }
                other => match verdict_of(&other) {
                    Some(end) => {
                        decision.end = end;
                        return Ok(decision);
                    }
                    None => return Err(MilterError::Protocol(format!("{other:?} at the end of the body"))),
                },
            }
        }
    }

    async fn send(&mut self, command: &Command<'_>) -> Result<(), MilterError> {
        let mut out = Vec::new();
        command.encode(&mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn read(&mut self) -> Result<Response, MilterError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(response) = self.decoder.decode()? {
                return Ok(response);
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(MilterError::Closed);
            }
            self.decoder.push(&chunk[..n]);
        }
    }
}

/// What a filter's answer to one step means.
enum Step {
    /// On to the next step.
    Next,
    /// `SMFIR_SKIP` to a body chunk: no more body.
    SkipBody,
    /// The conversation is over.
    End(End),
}

/// The refusal a response means, if it is one.
fn verdict_of(response: &Response) -> Option<End> {
    Some(match response {
        Response::Reject => End::Reject(None),
        Response::Tempfail => End::Tempfail(None),
        Response::Discard => End::Discard,
        Response::ReplyCode { code, text } if *code >= 500 => End::Reject(Some(text.clone())),
        Response::ReplyCode { text, .. } => End::Tempfail(Some(text.clone())),
        _ => return None,
    })
}

/// Applies a filter's decision on `scanned` (the message as the filter saw it: the earlier
/// stages' header fields on top) to `verdict`; how the scan ended.
pub fn apply(decision: Decision, scanned: &[u8], verdict: &mut Verdict) -> Outcome {
    match decision.end {
        End::Reject(text) => {
            verdict.refuse = Some(replies::filter_rejected(text.as_deref()));
            return Outcome::Refused;
        }
        End::Discard => {
            verdict.refuse = Some(replies::filter_rejected(Some("message discarded by the content filter")));
            return Outcome::Refused;
        }
        End::Tempfail(text) => {
            verdict.refuse = Some(replies::filter_soft_rejected(text.as_deref()));
            return Outcome::Refused;
        }
        End::Accept => {}
    }
    if !decision.changes.is_empty() || decision.body.is_some() {
        // The filter counted fields over the whole header block it saw, the earlier stages'
        // fields included: edit that block, and it becomes the message.
        let mut edit = Edit::parse(scanned);
        for change in &decision.changes {
            match change {
                Response::AddHeader { name, value } => edit.append(name, value),
                Response::InsertHeader { index, name, value } => edit.insert(*index as usize, name, value),
                Response::ChangeHeader { index, name, value } => edit.change(name, *index as usize, value),
                _ => {}
            }
        }
        if let Some(body) = decision.body {
            edit.set_body(body);
        }
        verdict.headers.clear();
        verdict.rewritten = Some(edit.to_bytes());
    }
    if decision.quarantine.is_some() {
        verdict.junk = true;
        return Outcome::Marked;
    }
    Outcome::Clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spill::Received;

    fn decision(end: End) -> Decision {
        Decision { end, changes: Vec::new(), body: None, quarantine: None }
    }

    #[test]
    fn refusals() {
        let cases = [
            (End::Reject(Some("Gtube pattern".into())), "550 5.7.1 Gtube pattern\r\n"),
            (End::Reject(None), "550 5.7.1 message rejected as spam\r\n"),
            (End::Discard, "550 5.7.1 message discarded by the content filter\r\n"),
            (End::Tempfail(Some("later".into())), "451 4.7.1 later\r\n"),
        ];
        for (end, want) in cases {
            let mut v = Verdict::default();
            assert_eq!(apply(decision(end), b"S: x\r\n\r\nb\r\n", &mut v), Outcome::Refused);
            assert_eq!(String::from_utf8(v.refuse.expect("refused").to_bytes()).expect("utf-8"), want);
        }
        assert_eq!(
            verdict_of(&Response::ReplyCode { code: 421, text: "busy".into() }),
            Some(End::Tempfail(Some("busy".into())))
        );
    }

    #[test]
    fn changes_edit_the_whole_header_block() {
        let mut v = Verdict { headers: "Authentication-Results: x; none\r\n".into(), ..Verdict::default() };
        let scanned = b"Authentication-Results: x; none\r\nSubject: hi\r\n\r\nbody\r\n";
        let d = Decision {
            end: End::Accept,
            changes: vec![
                Response::AddHeader { name: "X-Spam".into(), value: "Yes".into() },
                Response::InsertHeader { index: 0, name: "X-First".into(), value: "1".into() },
                Response::ChangeHeader { index: 1, name: "Subject".into(), value: "[SPAM] hi".into() },
            ],
            body: Some(b"new\r\n".to_vec()),
            quarantine: Some("spam".into()),
        };
        assert_eq!(apply(d, scanned, &mut v), Outcome::Marked);
        assert!(v.junk);
        let message = v.apply(Received::Memory(b"ignored".to_vec()));
        assert_eq!(
            String::from_utf8_lossy(message.as_slice()),
            "X-First: 1\r\nAuthentication-Results: x; none\r\nSubject: [SPAM] hi\r\nX-Spam: Yes\r\n\r\nnew\r\n"
        );
    }

    #[test]
    fn no_changes_leave_the_message_alone() {
        let mut v = Verdict { headers: "A: 1\r\n".into(), ..Verdict::default() };
        assert_eq!(apply(decision(End::Accept), b"A: 1\r\n\r\nb\r\n", &mut v), Outcome::Clean);
        assert_eq!(v.headers, "A: 1\r\n");
        assert!(v.rewritten.is_none() && !v.junk);
    }
}

/// The conversation against a scripted filter on a loopback socket.
#[cfg(test)]
mod conversation_tests {
    use super::*;
    use crate::spill::Received;
    use tokio::net::TcpListener;

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    /// Reads one packet the client sent: its command byte and data.
    async fn command(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.expect("length");
        let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut p).await.expect("packet");
        (p[0], p[1..].to_vec())
    }

    /// A filter that wants no HELO, answers nothing to headers, skips the body after its first
    /// chunk, says it is working, adds a field and quarantines; the commands it saw.
    async fn filter(listener: TcpListener) -> Vec<u8> {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        loop {
            let (code, data) = command(&mut s).await;
            seen.push(code);
            let reply: Vec<u8> = match code {
                b'O' => {
                    let mut d = 6u32.to_be_bytes().to_vec();
                    d.extend_from_slice(&action::SUPPORTED.to_be_bytes());
                    d.extend_from_slice(&(protocol::NO_HELO | protocol::NR_HEADER).to_be_bytes());
                    packet(b'O', &d)
                }
                b'D' | b'L' => Vec::new(),
                b'B' => {
                    assert!(data.len() <= codec::MAX_BODY_CHUNK);
                    packet(b's', b"")
                }
                b'E' => [
                    packet(b'p', b""),
                    packet(b'h', b"X-Filtered\0yes\0"),
                    packet(b'q', b"looks bad\0"),
                    packet(b'a', b""),
                ]
                .concat(),
                b'Q' => return seen,
                _ => packet(b'c', b""),
            };
            s.write_all(&reply).await.expect("reply");
        }
    }

    fn arrival() -> Arrival<'static> {
        Arrival {
            id: "q1",
            client: "192.0.2.7".parse().expect("ip"),
            helo: "client.test",
            from: "x@remote.test",
            recipients: vec!["alice@example.test", "bob@example.test"],
            login: None,
            tls: false,
        }
    }

    fn client(address: String, on_failure: OnFailure) -> Client {
        let config = MilterConfig { address, timeout_secs: 5, on_failure, scan_submission: false };
        Client::new(&config, Arc::default()).expect("valid config")
    }

    #[tokio::test]
    async fn follows_the_negotiated_steps_and_applies_the_changes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let filter = tokio::spawn(filter(listener));
        let body = vec![b'x'; 3 * codec::MAX_BODY_CHUNK];
        let mut message = b"Subject: hi\r\nX-A: 1\r\n\r\n".to_vec();
        message.extend_from_slice(&body);
        let mut verdict = Verdict::default();
        client(address, OnFailure::Defer).run(&arrival(), &message, &mut verdict).await;
        let seen = filter.await.expect("filter");
        // No HELO (NO_HELO), two headers unanswered, one body chunk then SKIP.
        assert_eq!(seen, b"OCDMRRTLLNBDEQ");
        assert!(verdict.refuse.is_none() && verdict.junk, "{verdict:?}");
        let delivered = verdict.apply(Received::Memory(message.clone()));
        let delivered = delivered.as_slice();
        assert!(delivered.starts_with(b"Subject: hi\r\nX-A: 1\r\nX-Filtered: yes\r\n\r\nxxx"));
        assert_eq!(delivered.len(), message.len() + "X-Filtered: yes\r\n".len());
    }

    #[tokio::test]
    async fn a_filter_that_is_gone_defers_or_marks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let mut verdict = Verdict::default();
        client(address.clone(), OnFailure::Defer).run(&arrival(), b"S: x\r\n\r\nb", &mut verdict).await;
        assert_eq!(verdict.refuse.map(|r| r.code), Some(451));
        let mut verdict = Verdict::default();
        client(address, OnFailure::Accept).run(&arrival(), b"S: x\r\n\r\nb", &mut verdict).await;
        assert!(verdict.refuse.is_none());
        assert!(verdict.headers.starts_with("X-Spam-Unscanned: milter unreachable"), "{}", verdict.headers);
    }

    #[test]
    fn config_builds_the_stages() {
        let config: crate::inbound::InboundConfig = toml::from_str(
            "[rspamd]\nurl = \"http://127.0.0.1:11333\"\non_failure = \"defer\"\n\
             [[milter]]\naddress = \"127.0.0.1:11332\"\n[[milter]]\naddress = \"[::1]:8891\"\ntimeout_secs = 3\n",
        )
        .expect("parses");
        assert_eq!(config.milter.len(), 2);
        assert_eq!(config.rspamd.as_ref().map(|r| r.on_failure), Some(OnFailure::Defer));
        let metrics = crate::metrics::NodeMetrics::new(std::path::PathBuf::from("/nonexistent"));
        assert!(!crate::inbound::Checks::new(&config, "mx.test", &metrics).expect("valid").is_empty());
        assert!(toml::from_str::<crate::inbound::InboundConfig>("[[milter]]\nadress = \"x:1\"\n").is_err());
        let bad: crate::inbound::InboundConfig = toml::from_str("[[milter]]\naddress = \"nowhere\"\n").expect("parses");
        assert!(crate::inbound::Checks::new(&bad, "mx.test", &metrics).is_err());
    }
}
