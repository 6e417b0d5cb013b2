//! Fetching a policy file: `GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (RFC 8461
//! §3.3) over a connection the caller opened, with the certificate checked for
//! `mta-sts.DOMAIN`, no redirects followed, a 200 with `text/plain` required, and the whole
//! exchange bounded in bytes and time.
//!
//! The request is HTTP/1.0, so the answer cannot be chunked: it ends at its
//! `Content-Length` or when the server closes, and [`parse_response`] stays small.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::policy::MAX_POLICY_BYTES;
use crate::outbound::client::Io;

/// The request path (§3.2).
pub const PATH: &str = "/.well-known/mta-sts.txt";
/// Longest status line and header block read.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Why no policy came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connection: {0}")]
    Io(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer larger than the limit")]
    TooLarge,
    #[error("answer is not HTTP: {0}")]
    Malformed(&'static str),
    #[error("HTTP status {0} (redirects are not followed)")]
    Status(u16),
    #[error("content type {0:?} is not text/plain")]
    ContentType(String),
    #[error("body shorter than its Content-Length")]
    Truncated,
}

/// Fetches the policy of the host `mta-sts.DOMAIN` (`host`) over `io`, within `limit`.
pub async fn fetch(
    io: Box<dyn Io>,
    connector: &TlsConnector,
    host: &str,
    limit: Duration,
) -> Result<Vec<u8>, FetchError> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| FetchError::Tls(e.to_string()))?;
    let exchange = async {
        let mut tls = connector.connect(name, io).await.map_err(|e| FetchError::Tls(e.to_string()))?;
        let request = format!("GET {PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sirms\r\nAccept: text/plain\r\n\r\n");
        tls.write_all(request.as_bytes()).await.map_err(|e| FetchError::Io(e.to_string()))?;
        tls.flush().await.map_err(|e| FetchError::Io(e.to_string()))?;
        let mut raw = Vec::new();
        let cap = (MAX_HEAD_BYTES + MAX_POLICY_BYTES + 1) as u64;
        // A server that closes without TLS close_notify still sent its whole answer when the
        // Content-Length says so; `parse_response` decides.
        if let Err(e) = (&mut tls).take(cap).read_to_end(&mut raw).await
            && e.kind() != std::io::ErrorKind::UnexpectedEof
        {
            return Err(FetchError::Io(e.to_string()));
        }
        if raw.len() as u64 == cap {
            return Err(FetchError::TooLarge);
        }
        parse_response(&raw).map(<[u8]>::to_vec)
    };
    tokio::time::timeout(limit, exchange).await.map_err(|_| FetchError::Timeout(limit))?
}

/// The body of a whole HTTP/1.x answer, if it is a `200` with `text/plain`; the body ends at
/// its `Content-Length`, or with the input.
pub fn parse_response(raw: &[u8]) -> Result<&[u8], FetchError> {
    let window = &raw[..raw.len().min(MAX_HEAD_BYTES)];
    // The header ends at the first blank line, whichever line end the server uses.
    let crlf = find(window, b"\r\n\r\n").map(|at| (at, 4));
    let lf = find(window, b"\n\n").map(|at| (at, 2));
    let (head_len, sep) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).ok_or(FetchError::Malformed("no end of header"))?,
    };
    let head = std::str::from_utf8(&raw[..head_len]).map_err(|_| FetchError::Malformed("header not UTF-8"))?;
    let body = &raw[head_len + sep..];
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(FetchError::Malformed("no status line"));
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(FetchError::Malformed("not HTTP/1"));
    }
    let code: u16 = (code.len() == 3).then(|| code.parse().ok()).flatten().ok_or(FetchError::Malformed("status"))?;
    if code != 200 {
        return Err(FetchError::Status(code));
    }
    let (mut content_type, mut length) = (None, None);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(FetchError::Malformed("header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            content_type.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| FetchError::Malformed("Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(FetchError::Malformed("two Content-Lengths"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(FetchError::Malformed("Transfer-Encoding in an answer to HTTP/1.0"));
        }
    }
    let content_type = content_type.unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("text/plain") {
        return Err(FetchError::ContentType(content_type.chars().take(64).collect()));
    }
    let body = match length {
        Some(n) if n > MAX_POLICY_BYTES => return Err(FetchError::TooLarge),
        Some(n) => body.get(..n).ok_or(FetchError::Truncated)?,
        None => body,
    };
    if body.len() > MAX_POLICY_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_200_gives_its_body() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        assert_eq!(parse_response(raw), Ok(&b"hello"[..]));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\nContent-Type: TEXT/PLAIN\n\nall of it"), Ok(&b"all of it"[..]));
    }

    #[test]
    fn anything_else_is_refused() {
        fn r(raw: &str) -> Result<&[u8], FetchError> {
            parse_response(raw.as_bytes())
        }
        assert_eq!(r("HTTP/1.1 301 Moved\r\nLocation: https://evil\r\n\r\n"), Err(FetchError::Status(301)));
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx"),
            Err(FetchError::ContentType("text/html".into()))
        );
        assert_eq!(r("HTTP/1.1 200 OK\r\n\r\nx"), Err(FetchError::ContentType(String::new())));
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nx"),
            Err(FetchError::Truncated)
        );
        assert!(matches!(
            r("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx"),
            Err(FetchError::Malformed(_))
        ));
        assert!(matches!(r("SMTP 220 hi\r\n\r\n"), Err(FetchError::Malformed(_))));
        assert!(matches!(r("HTTP/1.1 200 OK\r\nContent-Type: text/plain"), Err(FetchError::Malformed(_))));
        let huge =
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", MAX_POLICY_BYTES + 1);
        assert_eq!(r(&huge), Err(FetchError::TooLarge));
        let long_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(r(&long_head), Err(FetchError::Malformed(_))));
    }
}
