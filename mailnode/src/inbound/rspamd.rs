//! rspamd over its HTTP protocol: the message POSTed to `/checkv2` with the envelope in
//! request headers, rspamd's JSON answer turned into a [`Verdict`]. A small HTTP/1.1 client of
//! its own (one request per connection, `Content-Length` or close-delimited answers, bounded
//! in size and time), since this is the only HTTP the node speaks as a client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::edit::{self, Edit};
use super::filter::{self, Filter, FilterMetrics, OnFailure, Outcome};
use super::{Arrival, ConfigError, Verdict};
use crate::smtp::reply::replies;

/// The largest answer read from rspamd: its JSON for a message with many symbols is a few KiB.
const MAX_REPLY: usize = 1 << 20;

/// `[inbound.rspamd]` in node.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RspamdConfig {
    /// Where rspamd's normal worker listens: `http://host:port`, with `/checkv2` by default.
    pub url: String,
    /// How long one scan may take, connect to answer.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// What to do with mail when rspamd cannot be asked.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Whether mail from authenticated senders (submission) is scanned too.
    #[serde(default)]
    pub scan_submission: bool,
    /// Sent as `Password:` (the controller's password, for workers that require one).
    #[serde(default)]
    pub password: Option<String>,
}

fn default_timeout() -> u64 {
    15
}

/// Why a scan did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("unreachable: {0}")]
    Connect(std::io::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("answer over {MAX_REPLY} bytes")]
    TooLarge,
    #[error("bad HTTP answer: {0}")]
    Http(&'static str),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A connection's worth of settings for one rspamd.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`, resolved at each scan (rspamd may move).
    authority: String,
    path: String,
    timeout: Duration,
    on_failure: OnFailure,
    scan_submission: bool,
    password: Option<String>,
    metrics: Arc<FilterMetrics>,
}

impl Client {
    /// A client for `config`, counting into `metrics`.
    pub fn new(config: &RspamdConfig, metrics: Arc<FilterMetrics>) -> Result<Client, ConfigError> {
        let rest = config.url.strip_prefix("http://").ok_or_else(|| {
            ConfigError(format!("rspamd url {:?}: only http://host:port[/path] is supported", config.url))
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/checkv2"),
        };
        let valid_port = authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !valid_port || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError(format!("rspamd url {:?}: want http://host:port[/path]", config.url)));
        }
        if config.timeout_secs == 0 {
            return Err(ConfigError("rspamd timeout_secs must be at least 1".into()));
        }
        Ok(Client {
            authority: authority.to_string(),
            path: path.to_string(),
            timeout: Duration::from_secs(config.timeout_secs),
            on_failure: config.on_failure,
            scan_submission: config.scan_submission,
            password: config.password.clone(),
            metrics,
        })
    }

    /// Scans the message (as the stages before left it) and adds rspamd's verdict.
    pub async fn run(&self, arrival: &Arrival<'_>, message: &[u8], verdict: &mut Verdict) {
        if arrival.login.is_some() && !self.scan_submission {
            return;
        }
        filter::strip_forged(message, verdict);
        let current = verdict.rewritten.as_deref().unwrap_or(message);
        let mut scanned = Vec::with_capacity(verdict.headers.len() + current.len());
        scanned.extend_from_slice(verdict.headers.as_bytes());
        scanned.extend_from_slice(current);
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.ask(arrival, &scanned)).await;
        let took = started.elapsed();
        let outcome = match result.unwrap_or(Err(ScanError::Timeout)) {
            Ok(answer) => {
                tracing::info!(
                    msg = %arrival.id, action = %answer.action, score = answer.score,
                    symbols = ?answer.symbols.keys().collect::<Vec<_>>(), ms = took.as_millis() as u64, "rspamd scan"
                );
                apply(&answer, message, verdict)
            }
            Err(e) => {
                tracing::warn!(msg = %arrival.id, error = %e, on_failure = ?self.on_failure, "rspamd scan failed");
                self.on_failure.apply(Filter::Rspamd, &e.to_string(), verdict);
                Outcome::Failed
            }
        };
        self.metrics.record(Filter::Rspamd, took, outcome);
    }

    /// One HTTP exchange: the request, then the whole answer parsed.
    async fn ask(&self, arrival: &Arrival<'_>, message: &[u8]) -> Result<Answer, ScanError> {
        let mut stream = TcpStream::connect(&self.authority).await.map_err(ScanError::Connect)?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.path,
            self.authority,
            message.len()
        );
        let mut header = |name: &str, value: &str| {
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            head.push_str(&format!("{name}: {value}\r\n"));
        };
        header("IP", &arrival.client.to_string());
        header("Helo", arrival.helo);
        header("From", arrival.from);
        for rcpt in &arrival.recipients {
            header("Rcpt", rcpt);
        }
        header("Queue-Id", arrival.id);
        if let Some(login) = arrival.login {
            header("User", login);
        }
        if let Some(password) = &self.password {
            header("Password", password);
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(message).await?;
        stream.flush().await?;
        let raw = read_bounded(&mut stream).await?;
        let body = http_body(&raw)?;
        Ok(serde_json::from_slice(body)?)
    }
}

/// Reads until rspamd closes (we asked it to) or the answer's declared length is in.
async fn read_bounded(stream: &mut TcpStream) -> Result<Vec<u8>, ScanError> {
    let mut raw = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(raw);
        }
        if raw.len() + n > MAX_REPLY {
            return Err(ScanError::TooLarge);
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Ok(body) = http_body(&raw)
            && complete(&raw, body)
        {
            return Ok(raw);
        }
    }
}

/// Whether an answer with a `Content-Length` has all of its body.
fn complete(raw: &[u8], body: &[u8]) -> bool {
    content_length(raw).is_some_and(|len| body.len() >= len)
}

fn content_length(raw: &[u8]) -> Option<usize> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

/// The body of a whole HTTP answer, after checking its status is 200; cut to its
/// `Content-Length` when it has one.
pub fn http_body(raw: &[u8]) -> Result<&[u8], ScanError> {
    let end = find(raw, b"\r\n\r\n").ok_or(ScanError::Http("no end of header"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| ScanError::Http("header not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(ScanError::Http("no status line"));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(ScanError::Http("no status code"))?;
    if status != 200 {
        return Err(ScanError::Status(status));
    }
    let chunked = head.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("transfer-encoding") && !v.trim().eq_ignore_ascii_case("identity")
        })
    });
    if chunked {
        return Err(ScanError::Http("transfer encodings are not supported"));
    }
    let body = &raw[end + 4..];
    Ok(match content_length(raw) {
        Some(len) => body.get(..len).ok_or(ScanError::Http("answer shorter than its Content-Length"))?,
        None => body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The parts of rspamd's `/checkv2` answer the node acts on.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Answer {
    pub action: String,
    pub score: f64,
    #[serde(default)]
    pub required_score: Option<f64>,
    /// The new subject, for `rewrite subject`.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub symbols: BTreeMap<String, serde::de::IgnoredAny>,
    #[serde(default)]
    pub messages: Messages,
    /// Header changes rspamd's modules ask for (milter_headers), in milter terms.
    #[serde(default)]
    pub milter: Option<MilterPart>,
}

/// rspamd's texts for the client.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Messages {
    #[serde(default)]
    pub smtp_message: Option<String>,
}

/// `milter.add_headers` and `milter.remove_headers` of an answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MilterPart {
    #[serde(default)]
    pub add_headers: BTreeMap<String, AddHeader>,
    /// Field name to the occurrence to remove (from 1), or 0 for all.
    #[serde(default)]
    pub remove_headers: BTreeMap<String, i64>,
}

/// A field to add: a bare value, `{ "value": …, "order": … }`, or a list of either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AddHeader {
    Value(String),
    Ordered { value: String },
    Many(Vec<AddHeader>),
}

impl AddHeader {
    fn values(&self) -> Vec<&str> {
        match self {
            AddHeader::Value(v) | AddHeader::Ordered { value: v } => vec![v.as_str()],
            AddHeader::Many(all) => all.iter().flat_map(AddHeader::values).collect(),
        }
    }
}

/// Turns rspamd's answer on `message` (as received) into the verdict; how the scan ended.
pub fn apply(answer: &Answer, message: &[u8], verdict: &mut Verdict) -> Outcome {
    let why = answer.messages.smtp_message.as_deref();
    let outcome = match answer.action.as_str() {
        "reject" => {
            verdict.refuse = Some(replies::filter_rejected(why));
            return Outcome::Refused;
        }
        "soft reject" => {
            verdict.refuse = Some(replies::filter_soft_rejected(why));
            return Outcome::Refused;
        }
        "greylist" => {
            verdict.refuse = Some(replies::greylisted());
            return Outcome::Refused;
        }
        "add header" => {
            add(verdict, filter::SPAM_HEADER, "Yes");
            verdict.junk = true;
            Outcome::Marked
        }
        "rewrite subject" => {
            add(verdict, filter::SPAM_HEADER, "Yes");
            if let Some(subject) = &answer.subject {
                let mut edit = Edit::parse(verdict.rewritten.as_deref().unwrap_or(message));
                edit.change("Subject", 1, subject);
                verdict.rewritten = Some(edit.to_bytes());
            }
            Outcome::Marked
        }
        // "no action" and anything a later rspamd invents: deliver, with its name on it.
        _ => Outcome::Clean,
    };
    let score = match answer.required_score {
        Some(required) => format!("{:.2} / {:.2}", answer.score, required),
        None => format!("{:.2}", answer.score),
    };
    add(verdict, filter::SCORE_HEADER, &score);
    add(verdict, filter::ACTION_HEADER, &answer.action);
    verdict.spam_score = Some(spamtest(answer.score, answer.required_score));
    if let Some(milter) = &answer.milter {
        let ours = [filter::SPAM_HEADER, filter::SCORE_HEADER, filter::ACTION_HEADER, filter::UNSCANNED_HEADER];
        for (name, value) in &milter.add_headers {
            if ours.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                continue;
            }
            for v in value.values() {
                add(verdict, name, v);
            }
        }
        // Removals apply to the message as the sender wrote it (a forged `X-Spam:`), never
        // to the fields the node's own stages put on top.
        let removals: Vec<_> = milter.remove_headers.iter().filter(|(_, n)| **n >= 0).collect();
        if !removals.is_empty() {
            let mut edit = Edit::parse(verdict.rewritten.as_deref().unwrap_or(message));
            for (name, n) in removals {
                edit.remove(name, usize::try_from(*n).unwrap_or(0));
            }
            verdict.rewritten = Some(edit.to_bytes());
        }
    }
    outcome
}

fn add(verdict: &mut Verdict, name: &str, value: &str) {
    verdict.headers.push_str(&String::from_utf8_lossy(&edit::field(name, value)));
}

/// rspamd's score on Sieve's `spamtest` scale (RFC 5235): 1 clean … 10 at or past the reject
/// threshold (rspamd's default of 15 without one).
fn spamtest(score: f64, required: Option<f64>) -> f64 {
    let required = required.filter(|r| *r > 0.0).unwrap_or(15.0);
    1.0 + 9.0 * (score / required).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"X-Spam: Yes\r\nSubject: hello\r\n\r\nbody\r\n";

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn reject_refuses_with_rspamds_text() {
        let mut v = Verdict::default();
        let a = answer(r#"{"action":"reject","score":15,"messages":{"smtp_message":"Gtube pattern"}}"#);
        assert_eq!(apply(&a, MESSAGE, &mut v), Outcome::Refused);
        assert_eq!(v.refuse.expect("refused").to_bytes(), b"550 5.7.1 Gtube pattern\r\n");
    }

    #[test]
    fn soft_reject_and_greylist_defer() {
        for action in ["soft reject", "greylist"] {
            let mut v = Verdict::default();
            apply(&answer(&format!(r#"{{"action":"{action}","score":6}}"#)), MESSAGE, &mut v);
            let r = v.refuse.expect("refused");
            assert_eq!((r.code, r.status), (451, Some("4.7.1")), "{action}");
        }
    }

    #[test]
    fn add_header_files_into_junk() {
        let mut v = Verdict::default();
        let a = answer(r#"{"action":"add header","score":7.5,"required_score":15}"#);
        assert_eq!(apply(&a, MESSAGE, &mut v), Outcome::Marked);
        assert!(v.junk && v.refuse.is_none());
        assert_eq!(v.headers, "X-Spam: Yes\r\nX-Spam-Score: 7.50 / 15.00\r\nX-Spam-Action: add header\r\n");
        assert_eq!(v.spam_score, Some(5.5), "half the reject threshold: the middle of 1..=10");
    }

    #[test]
    fn rewrite_subject_rewrites_and_no_action_only_scores() {
        let mut v = Verdict::default();
        let a = answer(r#"{"action":"rewrite subject","score":9,"subject":"*** SPAM *** hello"}"#);
        apply(&a, MESSAGE, &mut v);
        assert_eq!(v.rewritten.as_deref(), Some(&b"X-Spam: Yes\r\nSubject: *** SPAM *** hello\r\n\r\nbody\r\n"[..]));
        assert!(!v.junk);
        let mut v = Verdict::default();
        assert_eq!(apply(&answer(r#"{"action":"no action","score":-0.1}"#), MESSAGE, &mut v), Outcome::Clean);
        assert_eq!(v.headers, "X-Spam-Score: -0.10\r\nX-Spam-Action: no action\r\n");
        assert!(!v.junk && v.rewritten.is_none() && v.refuse.is_none());
    }

    #[test]
    fn milter_headers_are_added_and_forged_ones_removed() {
        let mut v = Verdict::default();
        let a = answer(
            r#"{"action":"no action","score":1,"milter":{"add_headers":{"X-Rspamd-Server":"r1",
            "X-Spam":{"value":"No","order":0},"X-L":[{"value":"a"},"b"]},"remove_headers":{"X-Spam":0}}}"#,
        );
        apply(&a, MESSAGE, &mut v);
        assert!(v.headers.ends_with("X-L: a\r\nX-L: b\r\nX-Rspamd-Server: r1\r\n"), "{}", v.headers);
        assert!(!v.headers.contains("X-Spam: No"));
        assert_eq!(v.rewritten.as_deref(), Some(&b"Subject: hello\r\n\r\nbody\r\n"[..]));
    }

    #[test]
    fn http_answers_are_checked() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(http_body(ok).expect("ok"), b"{}");
        assert!(matches!(http_body(b"HTTP/1.1 500 Oops\r\n\r\n"), Err(ScanError::Status(500))));
        assert!(http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}").is_err());
        assert!(http_body(b"garbage").is_err());
    }

    #[test]
    fn urls() {
        let config = |url: &str| RspamdConfig {
            url: url.into(),
            timeout_secs: 5,
            on_failure: OnFailure::Accept,
            scan_submission: false,
            password: None,
        };
        let m = Arc::new(FilterMetrics::default());
        let c = Client::new(&config("http://127.0.0.1:11333"), m.clone()).expect("valid");
        assert_eq!((c.authority.as_str(), c.path.as_str()), ("127.0.0.1:11333", "/checkv2"));
        let c = Client::new(&config("http://rspamd.internal:80/custom"), m.clone()).expect("valid");
        assert_eq!(c.path, "/custom");
        for bad in ["https://x:1", "http://nohost", "http://:1", "127.0.0.1:11333"] {
            assert!(Client::new(&config(bad), m.clone()).is_err(), "{bad}");
        }
    }
}
