//! Mail brought in from elsewhere (`sirms ctl import`): the sources' formats, read here, and
//! the Import service through which the admin's `ctl` stores what it read in the cluster.
//!
//! Sources are read as streams: a Maildir one file at a time, an mbox one message at a time.
//! Every message is stored with CRLF line ends (Dovecot and mbox files keep bare LF, and
//! IMAP clients must get CRLF), its flags and its internal date; Dovecot's UIDs and
//! UIDVALIDITY are kept where the target mailbox allows it.

pub mod dovecot;
pub mod imap;
pub mod maildir;
pub mod mbox;
pub mod service;
pub mod vpopmail;

use std::path::Path;

use sirms_storage::Flags;

/// One message read from a source, ready to store.
#[derive(Debug, Clone)]
pub struct SourceMessage {
    /// The message, with CRLF line ends.
    pub bytes: Vec<u8>,
    pub flags: Flags,
    /// Seconds since the Unix epoch, when the source knows it.
    pub internal_date: Option<i64>,
    /// Its UID in the source (Dovecot's uidlist).
    pub uid: Option<u32>,
    /// Where it came from, for the log: a file, or an mbox and a byte offset.
    pub origin: String,
}

/// Why a source, or one of its messages, could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{origin}: {size} bytes is over the largest message a store takes")]
    TooLarge { origin: String, size: u64 },
    #[error("{0}")]
    NotASource(String),
}

impl ImportError {
    fn io(path: &Path, source: std::io::Error) -> ImportError {
        ImportError::Io { path: path.display().to_string(), source }
    }
}

/// `bytes` with every bare LF made CRLF (a CR already before its LF is kept, as is a lone CR).
pub fn to_crlf(bytes: Vec<u8>) -> Vec<u8> {
    let bare = bytes.iter().enumerate().filter(|&(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r')).count();
    if bare == 0 {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bare);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_crlf;

    #[test]
    fn line_ends() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd\n".to_vec()), b"a\r\nb\r\nc\rd\r\n");
        assert_eq!(to_crlf(b"\n".to_vec()), b"\r\n");
        assert_eq!(to_crlf(b"as is\r\n".to_vec()), b"as is\r\n");
        assert_eq!(to_crlf(Vec::new()), b"");
    }
}
