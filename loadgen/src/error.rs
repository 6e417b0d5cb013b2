//! How a benchmark step fails: the arguments are unusable, the wire broke, or the server said no.

use std::io;
use std::net::SocketAddr;

/// Why a connection, a command or a whole run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The arguments or an input file are unusable; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The TCP connection could not be made.
    #[error("connect to {target}{from}: {err}")]
    Connect { target: SocketAddr, from: String, err: io::Error },
    /// A step did not finish before its deadline (`--timeout`).
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// Reading from or writing to the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the connection while a reply was due.
    #[error("connection closed by the server")]
    Closed,
    /// A reply line or reply was longer than the limit for its protocol.
    #[error("reply longer than {0} bytes")]
    TooLong(usize),
    /// The server sent something that is not a reply of its protocol.
    #[error("malformed reply {0}")]
    Malformed(String),
    /// The server answered a command with a refusal (SMTP 4xx/5xx, IMAP NO/BAD, POP3 -ERR).
    #[error("{command} refused: {reply}")]
    Refused { command: &'static str, reply: String },
    /// A step around the timed work failed (an IMAP login for the delivery check, emptying
    /// a mailbox), named with what it was for.
    #[error("{step}: {err}")]
    Step { step: String, err: Box<Error> },
}

impl Error {
    /// This error as the failure of `step`.
    pub(crate) fn during(self, step: impl Into<String>) -> Error {
        Error::Step { step: step.into(), err: Box::new(self) }
    }

    /// A `Malformed` error that shows the offending bytes.
    pub(crate) fn malformed(bytes: &[u8]) -> Error {
        Error::Malformed(printable(bytes))
    }

    /// A `Refused` error for `command` with the server's reply line.
    pub(crate) fn refused(command: &'static str, reply: &[u8]) -> Error {
        Error::Refused { command, reply: escaped(reply) }
    }
}

/// Server bytes as a quoted string for one-line reports (see `escaped`).
pub(crate) fn printable(bytes: &[u8]) -> String {
    format!("\"{}\"", escaped(bytes))
}

/// Server bytes as text of at most 200 characters with control characters escaped: a hostile
/// server decides what it sends, not what the report or the terminal does with it.
pub(crate) fn escaped(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let mut out: String = text.trim_end_matches(['\r', '\n']).chars().flat_map(char::escape_debug).collect();
    if bytes.len() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_shortens() {
        assert_eq!(printable(b"550 no\r\n"), "\"550 no\"");
        assert_eq!(printable(b"a\x1b[2Jb"), "\"a\\u{1b}[2Jb\"");
        let long = vec![b'x'; 500];
        assert!(printable(&long).ends_with("…\""));
        assert!(printable(&long).len() < 220);
        assert_eq!(Error::refused("RCPT", b"550 5.1.1 unknown\r\n").to_string(), "RCPT refused: 550 5.1.1 unknown");
    }
}
