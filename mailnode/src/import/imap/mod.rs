//! A live IMAP server as an import's source (`sirms ctl import --imap imaps://user@host`):
//! every folder, each message with its flags and internal date, fetched one at a time so
//! memory holds one message, never a mailbox.
//!
//! Over implicit TLS (`imaps://`, port 993) or STARTTLS (`imap://`, port 143; refused if the
//! server does not offer it), the certificate checked against the system's roots unless the
//! admin says otherwise. The protocol's parsing is in [`response`].

pub mod response;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use sirms_storage::{Flags, SystemFlags};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use self::response::{Fetched, Frame, Value};
use super::{ImportError, SourceMessage, to_crlf};
use crate::imap::mutf7;

/// Longest wait for any one response (a big message on a slow link included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most messages listed per folder.
const MAX_MESSAGES: usize = 10_000_000;

/// Where the source server is: `imap://user@host[:port]` or `imaps://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Implicit TLS (`imaps`); otherwise STARTTLS.
    pub implicit_tls: bool,
}

impl ImapUrl {
    /// Parses the URL; the user part is percent-decoded (`%40` for an `@` in the login).
    pub fn parse(url: &str) -> Result<ImapUrl, ImportError> {
        let bad = |why: &str| ImportError::NotASource(format!("{url}: {why} (want imap://user@host or imaps://…)"));
        let (implicit_tls, rest) = if let Some(r) = url.strip_prefix("imaps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("imap://") {
            (false, r)
        } else {
            return Err(bad("not an imap:// or imaps:// URL"));
        };
        let rest = rest.trim_end_matches('/');
        let (user, host_port) = rest.rsplit_once('@').ok_or_else(|| bad("no user"))?;
        let user = percent_decode(user).ok_or_else(|| bad("bad escape in the user"))?;
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().map_err(|_| bad("bad port"))?)
            }
            _ => (host_port.trim_matches(['[', ']']).to_string(), if implicit_tls { 993 } else { 143 }),
        };
        if user.is_empty() || host.is_empty() {
            return Err(bad("empty user or host"));
        }
        Ok(ImapUrl { host, port, user, implicit_tls })
    }
}

fn percent_decode(text: &str) -> Option<String> {
    crate::hex_escape::decode(text, b'%')
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One folder of the source, as its LIST named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapFolder {
    /// The name on the wire (modified UTF-7, the server's delimiter).
    pub wire: String,
    /// The name here: UTF-8, `/` between levels, INBOX for the inbox.
    pub name: String,
}

/// A logged-in session with the source server.
pub struct ImapSource {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    tag: u32,
    origin: String,
}

fn io_error(origin: &str, e: std::io::Error) -> ImportError {
    ImportError::Io { path: origin.to_string(), source: e }
}

fn refused(origin: &str, why: String) -> ImportError {
    ImportError::NotASource(format!("{origin}: {why}"))
}

impl ImapSource {
    /// Connects, secures the connection and logs in. `verify`: check the server's certificate
    /// against the system's roots (off only for a test server with a self-signed one).
    /// `password` may be left out for a server that greets with PREAUTH.
    pub async fn connect(url: &ImapUrl, password: Option<&str>, verify: bool) -> Result<ImapSource, ImportError> {
        let origin = format!("imap://{}@{}:{}", url.user, url.host, url.port);
        let tcp = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect((url.host.as_str(), url.port)))
            .await
            .map_err(|_| refused(&origin, "no connection in 15 s".into()))?
            .map_err(|e| io_error(&origin, e))?;
        let tls = tls_connector(verify)?;
        let name = ServerName::try_from(url.host.clone()).map_err(|e| refused(&origin, e.to_string()))?;
        let mut source = ImapSource { io: Box::new(tcp), buf: Vec::new(), tag: 0, origin: origin.clone() };
        if url.implicit_tls {
            source = source.secured(&tls, name.clone()).await?;
        }
        let (greeting, _) = source.read_frame().await?;
        let greeting = String::from_utf8_lossy(&greeting.text).into_owned();
        let preauth = greeting.to_ascii_uppercase().starts_with("* PREAUTH");
        if !preauth && !greeting.to_ascii_uppercase().starts_with("* OK") {
            return Err(refused(&origin, format!("greeting: {greeting}")));
        }
        if !url.implicit_tls && !preauth {
            let capability = source.command("CAPABILITY").await?;
            let offered = capability
                .iter()
                .any(|(f, _)| String::from_utf8_lossy(&f.text).to_ascii_uppercase().contains("STARTTLS"));
            if !offered {
                return Err(refused(&origin, "no STARTTLS offered: will not send the password in clear".into()));
            }
            source.command("STARTTLS").await?;
            source = source.secured(&tls, name).await?;
        }
        if !preauth {
            let password =
                password.ok_or_else(|| refused(&origin, "the server wants a login: give a password".into()))?;
            if password.contains(['\r', '\n']) {
                return Err(refused(&origin, "a password cannot hold a line break".into()));
            }
            source.command(&format!("LOGIN {} {}", quote(&url.user), quote(password))).await?;
        }
        Ok(source)
    }

    async fn secured(self, tls: &TlsConnector, name: ServerName<'static>) -> Result<ImapSource, ImportError> {
        if !self.buf.is_empty() {
            // Bytes after the STARTTLS answer were sent in clear: an injection attempt.
            return Err(refused(&self.origin, "data after STARTTLS's answer".into()));
        }
        let origin = self.origin.clone();
        let stream = tls.connect(name, self.io).await.map_err(|e| io_error(&origin, e))?;
        Ok(ImapSource { io: Box::new(stream), buf: Vec::new(), tag: self.tag, origin })
    }

    async fn read_frame(&mut self) -> Result<(Frame, Vec<Value>), ImportError> {
        loop {
            let framed = response::frame(&self.buf).map_err(|e| refused(&self.origin, e.to_string()))?;
            if let Some((frame, used)) = framed {
                self.buf.drain(..used);
                let values = response::values(&frame.text).map_err(|e| refused(&self.origin, e.to_string()))?;
                return Ok((frame, values));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = tokio::time::timeout(RESPONSE_TIMEOUT, self.io.read(&mut chunk))
                .await
                .map_err(|_| refused(&self.origin, format!("no answer in {RESPONSE_TIMEOUT:?}")))?
                .map_err(|e| io_error(&self.origin, e))?;
            if n == 0 {
                return Err(refused(&self.origin, "the server closed the connection".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command; its untagged responses, or the server's NO/BAD as an error.
    async fn command(&mut self, command: &str) -> Result<Vec<(Frame, Vec<Value>)>, ImportError> {
        self.tag += 1;
        let tag = format!("i{}", self.tag);
        let line = format!("{tag} {command}\r\n");
        self.io.write_all(line.as_bytes()).await.map_err(|e| io_error(&self.origin, e))?;
        self.io.flush().await.map_err(|e| io_error(&self.origin, e))?;
        let mut untagged = Vec::new();
        loop {
            let (frame, values) = self.read_frame().await?;
            match values.first() {
                Some(Value::Atom(t)) if *t == tag => {
                    let ok = matches!(values.get(1), Some(Value::Atom(s)) if s.eq_ignore_ascii_case("OK"));
                    if !ok {
                        let verb = command.split(' ').next().unwrap_or(command);
                        let text = String::from_utf8_lossy(&frame.text).into_owned();
                        return Err(refused(&self.origin, format!("{verb}: {text}")));
                    }
                    return Ok(untagged);
                }
                Some(Value::Atom(star)) if star == "*" => {
                    if untagged.len() >= MAX_MESSAGES {
                        return Err(refused(&self.origin, "too many responses to one command".into()));
                    }
                    untagged.push((frame, values));
                }
                _ => {} // a continuation request or noise: not for this client
            }
        }
    }

    /// Every selectable folder.
    pub async fn folders(&mut self) -> Result<Vec<ImapFolder>, ImportError> {
        let mut out = Vec::new();
        for (_, values) in self.command("LIST \"\" \"*\"").await? {
            let [_, Value::Atom(list), Value::List(attrs), delimiter, name, ..] = values.as_slice() else { continue };
            if !list.eq_ignore_ascii_case("LIST") {
                continue;
            }
            let noselect = attrs
                .iter()
                .filter_map(Value::text)
                .any(|a| a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent"));
            let Some(wire) = name.text() else { continue };
            if noselect {
                continue;
            }
            let levels: Vec<String> = match delimiter.text() {
                Some(d) if !d.is_empty() => wire.split(d.as_str()).map(str::to_string).collect(),
                _ => vec![wire.clone()],
            };
            let decoded: Vec<String> =
                levels.iter().map(|l| mutf7::decode(l.as_bytes()).unwrap_or_else(|_| l.clone())).collect();
            let name = if wire.eq_ignore_ascii_case("INBOX") { "INBOX".to_string() } else { decoded.join("/") };
            out.push(ImapFolder { wire, name });
        }
        out.sort_by(|a, b| (a.name != "INBOX", &a.name).cmp(&(b.name != "INBOX", &b.name)));
        Ok(out)
    }

    /// Opens `folder` read-only: its UIDVALIDITY, and each message's UID, flags, date and size.
    pub async fn examine(&mut self, folder: &ImapFolder) -> Result<(Option<u32>, Vec<Fetched>), ImportError> {
        let opened = self.command(&format!("EXAMINE {}", quote(&folder.wire))).await?;
        let uid_validity = opened.iter().find_map(|(frame, _)| {
            let text = String::from_utf8_lossy(&frame.text).to_ascii_uppercase();
            let at = text.find("[UIDVALIDITY ")?;
            text[at + 13..].split(']').next()?.trim().parse().ok()
        });
        let exists = opened.iter().any(|(_, v)| matches!(v.get(2), Some(Value::Atom(a)) if a.eq_ignore_ascii_case("EXISTS") && v.get(1) != Some(&Value::Atom("0".into()))));
        if !exists {
            return Ok((uid_validity, Vec::new()));
        }
        let mut metas = Vec::new();
        for (mut frame, values) in self.command("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE)").await? {
            if let Some(f) = response::fetched(&values, &mut frame).filter(|f| f.uid.is_some()) {
                metas.push(f);
            }
        }
        metas.sort_by_key(|f| f.uid);
        Ok((uid_validity, metas))
    }

    /// One message of the examined folder, as it will be stored.
    pub async fn message(&mut self, folder: &ImapFolder, meta: &Fetched) -> Result<SourceMessage, ImportError> {
        let uid = meta.uid.unwrap_or(0);
        let origin = format!("{} {} UID {uid}", self.origin, folder.name);
        let mut body = None;
        for (mut frame, values) in self.command(&format!("UID FETCH {uid} (UID BODY.PEEK[])")).await? {
            if let Some(f) = response::fetched(&values, &mut frame).filter(|f| f.uid == Some(uid)) {
                body = f.body.or(body);
            }
        }
        let bytes = body.ok_or_else(|| refused(&origin, "the server sent no body".into()))?;
        Ok(SourceMessage {
            bytes: to_crlf(bytes),
            flags: flags(meta),
            internal_date: meta.internal_date,
            uid: meta.uid,
            origin,
        })
    }
}

/// The flags a source message carries here (`\Recent` is the session's, not the message's).
fn flags(meta: &Fetched) -> Flags {
    let mut system = SystemFlags::empty();
    let mut keywords = Vec::new();
    for flag in meta.flags.iter().flatten() {
        let bit = match flag.to_ascii_lowercase().as_str() {
            "\\seen" => SystemFlags::SEEN,
            "\\answered" => SystemFlags::ANSWERED,
            "\\flagged" => SystemFlags::FLAGGED,
            "\\deleted" => SystemFlags::DELETED,
            "\\draft" => SystemFlags::DRAFT,
            "$forwarded" => SystemFlags::FORWARDED,
            _ => {
                if Flags::valid_keyword(flag) {
                    keywords.push(flag.clone());
                }
                continue;
            }
        };
        system = system.union(bit);
    }
    Flags::new(system, keywords)
}

/// An IMAP quoted string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn tls_connector(verify: bool) -> Result<TlsConnector, ImportError> {
    if !verify {
        return Ok(crate::outbound::client::opportunistic_tls());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ImportError::NotASource("no trusted root certificates on this system (ca-certificates)".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImportError::NotASource(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ImapUrl::parse("imaps://old%40example.com@mail.example.com").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port, u.implicit_tls),
            ("old@example.com", "mail.example.com", 993, true)
        );
        let u = ImapUrl::parse("imap://bob@127.0.0.1:1143/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.implicit_tls), ("127.0.0.1", 1143, false));
        for bad in ["http://x@y", "imap://host", "imap://@host", "imap://u@h:port", "imap://u%zz@h"] {
            assert!(ImapUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_and_quoting() {
        let meta = Fetched {
            flags: Some(vec!["\\Seen".into(), "\\Recent".into(), "$Label1".into(), "$Forwarded".into()]),
            ..Default::default()
        };
        let f = flags(&meta);
        assert!(f.system.contains(SystemFlags::SEEN) && f.system.contains(SystemFlags::FORWARDED));
        assert_eq!(f.keywords, vec!["$Label1".to_string()]);
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
