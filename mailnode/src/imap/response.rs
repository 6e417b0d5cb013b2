//! The one place IMAP responses are built: status responses with their codes, untagged data,
//! continuation requests, and the string forms (atom, quoted, literal, NIL) data items use.

use std::fmt::{self, Display, Write as _};

/// What a NUL in message data is sent as, inside literals (Dovecot makes the same choice).
const NUL_SUBSTITUTE: u8 = 0x80;

/// The result word of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Bye,
    PreAuth,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::Bye => "BYE",
            Status::PreAuth => "PREAUTH",
        }
    }
}

/// A response code, the bracketed part of a status response (RFC 3501 §7.1, 3516, 4315, 5530, 7162).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Alert,
    Parse,
    ReadOnly,
    ReadWrite,
    TryCreate,
    Closed,
    Capability(String),
    PermanentFlags(String),
    UidNext(u32),
    UidValidity(u32),
    Unseen(u32),
    HighestModSeq(u64),
    NoModSeq,
    Modified(String),
    /// The UIDs of the messages appended, as a uid-set (several with MULTIAPPEND, RFC 3502).
    AppendUid {
        uid_validity: u32,
        uids: String,
    },
    CopyUid {
        uid_validity: u32,
        source: String,
        destination: String,
    },
    BadCharset,
    Nonexistent,
    AlreadyExists,
    Cannot,
    Limit,
    TooBig,
    Unavailable,
    AuthenticationFailed,
    PrivacyRequired,
    ServerBug,
    NoPerm,
    InUse,
    ClientBug,
    OverQuota,
    UnknownCte,
    ExpungeIssued,
    UseAttr,
    CompressionActive,
}

impl Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Alert => f.write_str("ALERT"),
            Code::Parse => f.write_str("PARSE"),
            Code::ReadOnly => f.write_str("READ-ONLY"),
            Code::ReadWrite => f.write_str("READ-WRITE"),
            Code::TryCreate => f.write_str("TRYCREATE"),
            Code::Closed => f.write_str("CLOSED"),
            Code::Capability(list) => write!(f, "CAPABILITY {list}"),
            Code::PermanentFlags(flags) => write!(f, "PERMANENTFLAGS ({flags})"),
            Code::UidNext(n) => write!(f, "UIDNEXT {n}"),
            Code::UidValidity(n) => write!(f, "UIDVALIDITY {n}"),
            Code::Unseen(n) => write!(f, "UNSEEN {n}"),
            Code::HighestModSeq(n) => write!(f, "HIGHESTMODSEQ {n}"),
            Code::NoModSeq => f.write_str("NOMODSEQ"),
            Code::Modified(set) => write!(f, "MODIFIED {set}"),
            Code::AppendUid { uid_validity, uids } => write!(f, "APPENDUID {uid_validity} {uids}"),
            Code::CopyUid { uid_validity, source, destination } => {
                write!(f, "COPYUID {uid_validity} {source} {destination}")
            }
            Code::BadCharset => f.write_str("BADCHARSET (US-ASCII UTF-8)"),
            Code::Nonexistent => f.write_str("NONEXISTENT"),
            Code::AlreadyExists => f.write_str("ALREADYEXISTS"),
            Code::Cannot => f.write_str("CANNOT"),
            Code::Limit => f.write_str("LIMIT"),
            Code::TooBig => f.write_str("TOOBIG"),
            Code::Unavailable => f.write_str("UNAVAILABLE"),
            Code::AuthenticationFailed => f.write_str("AUTHENTICATIONFAILED"),
            Code::PrivacyRequired => f.write_str("PRIVACYREQUIRED"),
            Code::ServerBug => f.write_str("SERVERBUG"),
            Code::NoPerm => f.write_str("NOPERM"),
            Code::InUse => f.write_str("INUSE"),
            Code::ClientBug => f.write_str("CLIENTBUG"),
            Code::OverQuota => f.write_str("OVERQUOTA"),
            Code::UnknownCte => f.write_str("UNKNOWN-CTE"),
            Code::ExpungeIssued => f.write_str("EXPUNGEISSUED"),
            Code::UseAttr => f.write_str("USEATTR"),
            Code::CompressionActive => f.write_str("COMPRESSIONACTIVE"),
        }
    }
}

/// Human-readable text, kept on one line whatever it was built from.
fn push_text(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
}

/// How a client learns that messages left the view: `* n EXPUNGE` for each, in the order
/// they were removed (`removed` holds their sequence numbers and UIDs), or once QRESYNC is
/// enabled one `* VANISHED` naming their UIDs (RFC 7162 §3.2.10).
pub fn expunged(removed: &[(u32, u32)], qresync: bool) -> Vec<u8> {
    if removed.is_empty() {
        return Vec::new();
    }
    if qresync {
        let mut uids: Vec<u32> = removed.iter().map(|&(_, uid)| uid).collect();
        uids.sort_unstable();
        return format!("* VANISHED {}\r\n", super::selected::render_uids(&uids)).into_bytes();
    }
    removed.iter().flat_map(|(seq, _)| format!("* {seq} EXPUNGE\r\n").into_bytes()).collect()
}

/// A status response: `tag` is `None` for an untagged one (`* OK …`, `* BYE …`).
pub fn status(tag: Option<&str>, status: Status, code: Option<&Code>, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + text.len());
    out.extend_from_slice(tag.unwrap_or("*").as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.word().as_bytes());
    if let Some(code) = code {
        out.extend_from_slice(format!(" [{code}]").as_bytes());
    }
    out.push(b' ');
    push_text(&mut out, if text.is_empty() { "done" } else { text });
    out.extend_from_slice(b"\r\n");
    out
}

/// A command continuation request (`+ text`).
pub fn continuation(text: &str) -> Vec<u8> {
    let mut out = b"+ ".to_vec();
    push_text(&mut out, text);
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether `bytes` can go on the wire as a quoted string.
fn quotable(bytes: &[u8]) -> bool {
    bytes.len() <= 1024 && bytes.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// Builds one untagged data response, item by item; [`Data::finish`] gives the bytes.
#[derive(Debug, Default)]
pub struct Data {
    out: Vec<u8>,
}

impl Data {
    /// Starts `* ` followed by `word`.
    pub fn new(word: impl Display) -> Data {
        let mut out = Vec::with_capacity(64);
        let _ = write!(Writer(&mut out), "* {word}");
        Data { out }
    }

    /// An empty buffer, for structures (ENVELOPE, BODYSTRUCTURE) nested in another response.
    pub fn fragment() -> Data {
        Data { out: Vec::new() }
    }

    /// Makes room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    /// Appends text verbatim (atoms, numbers, punctuation the caller knows to be valid).
    pub fn raw(&mut self, text: impl Display) -> &mut Data {
        let _ = write!(Writer(&mut self.out), "{text}");
        self
    }

    /// Appends raw bytes verbatim.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Data {
        self.out.extend_from_slice(bytes);
        self
    }

    /// Appends a string: quoted when it can be, a literal otherwise.
    pub fn string(&mut self, bytes: &[u8]) -> &mut Data {
        if quotable(bytes) {
            self.out.push(b'"');
            for &b in bytes {
                if b == b'"' || b == b'\\' {
                    self.out.push(b'\\');
                }
                self.out.push(b);
            }
            self.out.push(b'"');
        } else {
            self.literal(bytes);
        }
        self
    }

    /// Appends a literal (bodies are always sent this way), with any NUL sent as 0x80.
    ///
    /// A literal is CHAR8, which excludes NUL (RFC 3501 §9), and strict clients reject the
    /// whole response otherwise; a same-length substitute keeps RFC822.SIZE and partial
    /// offsets true. The exact bytes remain available through BINARY's literal8.
    pub fn literal(&mut self, bytes: &[u8]) -> &mut Data {
        let _ = write!(Writer(&mut self.out), "{{{}}}\r\n", bytes.len());
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        for b in &mut self.out[start..] {
            if *b == 0 {
                *b = NUL_SUBSTITUTE;
            }
        }
        self
    }

    /// Appends decoded content (BINARY, RFC 3516): a literal, or a literal8 (`~{n}`) with the
    /// exact bytes when it holds a NUL.
    pub fn binary(&mut self, bytes: &[u8]) -> &mut Data {
        if bytes.contains(&0) {
            let _ = write!(Writer(&mut self.out), "~{{{}}}\r\n", bytes.len());
            self.out.extend_from_slice(bytes);
            self
        } else {
            self.literal(bytes)
        }
    }

    /// Appends a string or `NIL`.
    pub fn nstring(&mut self, bytes: Option<&[u8]>) -> &mut Data {
        match bytes {
            Some(b) => self.string(b),
            None => self.raw("NIL"),
        }
    }

    /// Appends an astring (mailbox names): an atom when it is one, else a string.
    pub fn astring(&mut self, text: &str) -> &mut Data {
        let atom = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']'));
        if atom { self.raw(text) } else { self.string(text.as_bytes()) }
    }

    /// The bytes so far, without the line end (to nest one item's rendering in another).
    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// The bytes without a line end (a fragment's rendering).
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// The finished response with its CRLF.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"\r\n");
        self.out
    }
}

/// Lets `write!` format into a byte buffer.
struct Writer<'a>(&'a mut Vec<u8>);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status(Some("a1"), Status::Ok, None, "done"), b"a1 OK done\r\n");
        assert_eq!(status(None, Status::No, Some(&Code::UidNext(7)), "x\r\ny"), b"* NO [UIDNEXT 7] x  y\r\n".to_vec());
    }

    #[test]
    fn strings() {
        let mut d = Data::new("X");
        d.raw(" ").string(b"a \"b\"").raw(" ").string(b"caf\xc3\xa9").raw(" ").nstring(None);
        d.raw(" ").astring("INBOX").raw(" ").astring("a b").raw(" ").astring("");
        assert_eq!(d.finish(), b"* X \"a \\\"b\\\"\" {5}\r\ncaf\xc3\xa9 NIL INBOX \"a b\" \"\"\r\n".to_vec());
    }

    #[test]
    fn nul_in_literals() {
        let mut d = Data::new("X");
        d.raw(" ").string(b"a\0b").raw(" ").literal(b"\0");
        assert_eq!(d.finish(), b"* X {3}\r\na\x80b {1}\r\n\x80\r\n".to_vec());
    }

    #[test]
    fn binary_literals() {
        let mut d = Data::new("X");
        d.raw(" ").binary(b"a\xffb").raw(" ").binary(b"a\0b");
        assert_eq!(d.finish(), b"* X {3}\r\na\xffb ~{3}\r\na\0b\r\n".to_vec());
    }
}
