//! The SMTP client that hands a queued message to one remote server: greeting, EHLO
//! (HELO if refused), STARTTLS (opportunistic, or required by the domain's policy), MAIL,
//! one RCPT per recipient, DATA.
//!
//! Every step has a timeout and every reply goes through [`ReplyParser`]'s limits. The
//! result says, per recipient, what the server said — or that this server did not take the
//! message at all, so the caller tries the next MX.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsConnector;

use super::reply::{MAX_REPLY_LINE, Reply, ReplyError, ReplyParser};
use crate::smtp::dsn::Dsn;
use crate::stuffing::{LoneCr, dot_stuff};

/// Anything an SMTP session can run over: plain TCP, or TLS after STARTTLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What happened to one recipient on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptStatus {
    /// The server took responsibility (its final reply).
    Delivered(String),
    /// The server took responsibility but does not speak DSN, so the sender's DSN requests
    /// end here (RFC 3461 §4.2: a "relayed" notice is owed to one who asked for success).
    Relayed(String),
    /// A temporary failure: try again later.
    Deferred(String),
    /// A permanent failure: bounce.
    Failed(String),
}

/// Why a server did not take the message at all (the next MX may).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotTaken(pub String);

/// How every [`NotTaken`] about STARTTLS starts.
const TLS_STAGE: &str = "STARTTLS";

/// How a [`NotTaken`] for a server without REQUIRETLS starts.
const REQUIRETLS_STAGE: &str = "REQUIRETLS";

impl NotTaken {
    /// Whether TLS was the trouble (not offered, refused, the handshake or the certificate).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with(TLS_STAGE)
    }

    /// Whether the server could not carry a REQUIRETLS message: TLS failed, or it does not
    /// offer the extension.
    pub fn fails_requiretls(&self) -> bool {
        self.is_tls() || self.0.starts_with(REQUIRETLS_STAGE)
    }
}

/// One message for one server.
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    /// Our name in EHLO.
    pub helo: &'a str,
    /// Reverse path; empty for the null sender (bounces).
    pub from: &'a str,
    pub rcpts: &'a [String],
    pub message: &'a [u8],
    /// Limit for each command's reply (RFC 5321 §4.5.3.2 suggests minutes).
    pub timeout: Duration,
    /// The sender's DSN requests, passed on when the server speaks DSN.
    pub dsn: &'a Dsn,
    /// RFC 8689: the server must offer REQUIRETLS (after TLS, which the caller makes
    /// required and checked), and MAIL passes it on.
    pub requiretls: bool,
}

/// How a session uses STARTTLS.
pub struct StartTls<'a> {
    pub connector: &'a TlsConnector,
    /// The name the certificate is checked for (the MX host).
    pub name: ServerName<'static>,
    /// The session must not go on in clear text: no STARTTLS offered, a refusal or a failed
    /// handshake (say, a certificate the connector rejects) end it before MAIL.
    pub required: bool,
}

/// Why a session broke off.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error("{0}")]
    Reply(#[from] ReplyError),
    #[error("TLS: {0}")]
    Tls(String),
}

struct Conn {
    io: BufReader<Box<dyn Io>>,
    timeout: Duration,
}

impl Conn {
    async fn reply(&mut self) -> Result<Reply, SessionError> {
        let mut parser = ReplyParser::default();
        loop {
            let mut line = Vec::new();
            let limit = (MAX_REPLY_LINE + 2) as u64;
            let mut bounded = (&mut self.io).take(limit);
            let read = bounded.read_until(b'\n', &mut line);
            let n =
                tokio::time::timeout(self.timeout, read).await.map_err(|_| SessionError::Timeout(self.timeout))??;
            if n == 0 {
                return Err(SessionError::Closed);
            }
            if line.last() != Some(&b'\n') {
                return Err(if n as u64 == limit { ReplyError::LineTooLong.into() } else { SessionError::Closed });
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(reply) = parser.line(&line)? {
                return Ok(reply);
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(self.timeout, write).await.map_err(|_| SessionError::Timeout(self.timeout))??;
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Reply, SessionError> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// EHLO, or HELO if the server does not know EHLO.
    async fn hello(&mut self, helo: &str) -> Result<Reply, SessionError> {
        let ehlo = self.command(&format!("EHLO {helo}")).await?;
        if ehlo.is_positive() {
            return Ok(ehlo);
        }
        self.command(&format!("HELO {helo}")).await
    }

    async fn starttls(self, connector: &TlsConnector, name: ServerName<'static>) -> Result<Conn, SessionError> {
        // Bytes after the 220 came before TLS and could be an injected reply: refuse them.
        if !self.io.buffer().is_empty() {
            return Err(SessionError::Tls("server sent data after its STARTTLS reply".into()));
        }
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, self.io.into_inner()))
            .await
            .map_err(|_| SessionError::Timeout(self.timeout))?
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        Ok(Conn { io: BufReader::new(Box::new(tls)), timeout: self.timeout })
    }
}

/// Runs one session over `io`, with STARTTLS as `tls` says (none: clear text only).
pub async fn deliver(
    io: Box<dyn Io>,
    tls: Option<StartTls<'_>>,
    t: &Transfer<'_>,
) -> Result<Vec<RcptStatus>, NotTaken> {
    let mut conn = Conn { io: BufReader::new(io), timeout: t.timeout };
    let not_taken = |stage: &str, e: &dyn std::fmt::Display| NotTaken(format!("{stage}: {e}"));
    let greeting = conn.reply().await.map_err(|e| not_taken("greeting", &e))?;
    if !greeting.is_positive() {
        return Err(NotTaken(format!("greeting: {}", greeting.summary())));
    }
    let mut hello = conn.hello(t.helo).await.map_err(|e| not_taken("EHLO", &e))?;
    if !hello.is_positive() {
        return Err(NotTaken(format!("EHLO/HELO: {}", hello.summary())));
    }
    let required = tls.as_ref().is_some_and(|tls| tls.required);
    if let Some(tls) = tls
        && hello.has_extension("STARTTLS")
    {
        let reply = conn.command("STARTTLS").await.map_err(|e| not_taken(TLS_STAGE, &e))?;
        if reply.code == 220 {
            conn = conn.starttls(tls.connector, tls.name).await.map_err(|e| not_taken(TLS_STAGE, &e))?;
            hello = conn.hello(t.helo).await.map_err(|e| not_taken("EHLO after TLS", &e))?;
            if !hello.is_positive() {
                return Err(NotTaken(format!("EHLO after TLS: {}", hello.summary())));
            }
        } else if required {
            let _ = conn.command("QUIT").await;
            return Err(NotTaken(format!("{TLS_STAGE} refused ({}) but required", reply.summary())));
        }
    } else if required {
        // Never in clear text when the domain asked for TLS: stripping STARTTLS from the
        // EHLO reply is exactly the attack this stops.
        let _ = conn.command("QUIT").await;
        return Err(NotTaken(format!("{TLS_STAGE} not offered but required")));
    }
    if t.requiretls && !hello.has_extension("REQUIRETLS") {
        let _ = conn.command("QUIT").await;
        return Err(NotTaken(format!("{REQUIRETLS_STAGE} not offered by the server")));
    }
    let mut statuses = vec![RcptStatus::Deferred("not tried".into()); t.rcpts.len()];
    if let Err(e) = transaction(&mut conn, &hello, t, &mut statuses).await {
        // The connection broke mid-transaction: whoever has no final answer waits for a retry.
        for s in statuses.iter_mut().filter(|s| !matches!(s, RcptStatus::Delivered(_) | RcptStatus::Failed(_))) {
            *s = RcptStatus::Deferred(e.to_string());
        }
    }
    let _ = conn.command("QUIT").await;
    Ok(statuses)
}

/// MAIL, RCPT, DATA; fills `statuses` as answers come.
async fn transaction(
    conn: &mut Conn,
    hello: &Reply,
    t: &Transfer<'_>,
    statuses: &mut [RcptStatus],
) -> Result<(), SessionError> {
    let mut mail = format!("MAIL FROM:<{}>", t.from);
    if hello.has_extension("SIZE") {
        mail.push_str(&format!(" SIZE={}", t.message.len()));
    }
    if hello.has_extension("8BITMIME") && !t.message.is_ascii() {
        mail.push_str(" BODY=8BITMIME");
    }
    let dsn = hello.has_extension("DSN");
    if dsn {
        mail.push_str(&t.dsn.mail_parameters());
    }
    if t.requiretls {
        mail.push_str(" REQUIRETLS");
    }
    let reply = conn.command(&mail).await?;
    if !reply.is_positive() {
        statuses.fill(verdict(&reply));
        return Ok(());
    }
    let mut accepted = Vec::new();
    for (i, rcpt) in t.rcpts.iter().enumerate() {
        let parameters = if dsn { t.dsn.rcpt_parameters(rcpt) } else { String::new() };
        let reply = conn.command(&format!("RCPT TO:<{rcpt}>{parameters}")).await?;
        if reply.is_positive() {
            accepted.push(i);
        } else {
            statuses[i] = verdict(&reply);
        }
    }
    if accepted.is_empty() {
        return Ok(());
    }
    let reply = conn.command("DATA").await?;
    let last = if reply.code == 354 {
        conn.send(&dot_stuffed(t.message)).await?;
        conn.reply().await?
    } else {
        reply
    };
    for i in accepted {
        statuses[i] = match last.is_positive() {
            true if !dsn && t.dsn.rcpt(&t.rcpts[i]).notify.success() => RcptStatus::Relayed(last.summary()),
            true => RcptStatus::Delivered(last.summary()),
            false => verdict(&last),
        };
    }
    Ok(())
}

/// A negative reply's meaning for the recipient.
fn verdict(reply: &Reply) -> RcptStatus {
    if reply.is_permanent() { RcptStatus::Failed(reply.summary()) } else { RcptStatus::Deferred(reply.summary()) }
}

/// The DATA payload: CRLF line ends only (bare LF and bare CR become CRLF, so no server sees
/// an ambiguous line end), leading dots doubled (RFC 5321 §4.5.2), and the final `.` line.
pub fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    dot_stuff(message, &mut out, LoneCr::LineEnd);
    out.extend_from_slice(b".\r\n");
    out
}

/// TLS for opportunistic STARTTLS (RFC 7435): encrypt whenever the server offers it, without
/// checking its certificate — MX hosts rarely have one for the name we look up, and refusing
/// would only push the mail to plain text.
pub fn opportunistic_tls() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    super::pkix::connector_with(provider, verifier)
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(dot_stuffed(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuffed(b".\n..x\rend"), b"..\r\n...x\r\nend\r\n.\r\n");
        assert_eq!(dot_stuffed(b""), b".\r\n");
        assert_eq!(dot_stuffed(b"x\r\n\r\n"), b"x\r\n\r\n.\r\n");
    }

    /// Runs `deliver` against a scripted server: each entry is what the server sends after
    /// reading one line (the first entry is the greeting); returns the statuses and what the
    /// client sent.
    async fn scripted(script: &[&str], rcpts: &[&str]) -> (Result<Vec<RcptStatus>, NotTaken>, String) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let script: Vec<String> = script.iter().map(|s| s.to_string()).collect();
        let server_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut lines = script.into_iter();
            if let Some(greeting) = lines.next() {
                server.write_all(greeting.as_bytes()).await.ok();
            }
            let mut reader = BufReader::new(&mut server);
            let mut in_data = false;
            for answer in lines {
                loop {
                    let mut line = Vec::new();
                    if reader.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return String::from_utf8_lossy(&seen).into_owned();
                    }
                    seen.extend_from_slice(&line);
                    if !in_data || line == b".\r\n" {
                        break;
                    }
                }
                in_data = answer.starts_with("354");
                reader.get_mut().write_all(answer.as_bytes()).await.ok();
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let t = Transfer {
            helo: "node1.test",
            from: "a@ours.test",
            rcpts: &rcpts,
            message: b"Subject: x\r\n\r\n.dot\r\n",
            timeout: Duration::from_secs(5),
            dsn: &Dsn::default(),
            requiretls: false,
        };
        let result = deliver(Box::new(client), None, &t).await;
        (result, server_task.await.unwrap_or_default())
    }

    #[tokio::test]
    async fn a_full_transaction_with_one_refused_recipient() {
        let (result, sent) = scripted(
            &[
                "220 mx ESMTP\r\n",
                "250-mx\r\n250 SIZE 100000\r\n",
                "250 ok\r\n",
                "250 ok\r\n",
                "550 5.1.1 no such user\r\n",
                "451 4.3.0 try later\r\n",
                "354 go\r\n",
                "250 2.0.0 queued as X\r\n",
                "221 bye\r\n",
            ],
            &["b@far.test", "c@far.test", "d@far.test"],
        )
        .await;
        assert_eq!(
            result.unwrap(),
            [
                RcptStatus::Delivered("250 2.0.0 queued as X".into()),
                RcptStatus::Failed("550 5.1.1 no such user".into()),
                RcptStatus::Deferred("451 4.3.0 try later".into()),
            ]
        );
        assert!(
            sent.starts_with("EHLO node1.test\r\nMAIL FROM:<a@ours.test> SIZE=20\r\nRCPT TO:<b@far.test>\r\n"),
            "{sent}"
        );
        assert!(sent.contains("DATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n"), "{sent}");
    }

    #[tokio::test]
    async fn refusals_before_the_transaction_mean_try_the_next_server() {
        let (result, _) = scripted(&["554 go away\r\n"], &["b@far.test"]).await;
        assert_eq!(result, Err(NotTaken("greeting: 554 go away".into())));
        let (result, sent) = scripted(
            &["220 mx\r\n", "500 what\r\n", "250 hi\r\n", "452 4.3.1 full\r\n", "221 bye\r\n"],
            &["b@far.test"],
        )
        .await;
        assert_eq!(result.unwrap(), [RcptStatus::Deferred("452 4.3.1 full".into())]);
        assert!(sent.starts_with("EHLO node1.test\r\nHELO node1.test\r\nMAIL FROM:<a@ours.test>\r\n"), "{sent}");
    }

    #[tokio::test]
    async fn a_dropped_connection_defers_whoever_has_no_answer() {
        let (result, _) =
            scripted(&["220 mx\r\n", "250 hi\r\n", "250 ok\r\n", "550 no\r\n"], &["b@x.test", "c@x.test"]).await;
        let statuses = result.unwrap();
        assert_eq!(statuses[0], RcptStatus::Failed("550 no".into()));
        assert!(
            matches!(&statuses[1], RcptStatus::Deferred(e) if e.contains("closed") || e.contains("pipe")),
            "{statuses:?}"
        );
    }
}
