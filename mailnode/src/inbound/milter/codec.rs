//! The milter protocol's packets (Sendmail's libmilter protocol, version 6, as Postfix speaks
//! it): commands the MTA sends encoded to bytes, the filter's responses decoded from a byte
//! stream. No sockets here: a state machine over bytes, so it can be tested and fuzzed alone.
//!
//! A packet is a 4-byte big-endian length (command byte included), a command byte, and data;
//! strings in data end with NUL.

/// The largest packet either side may send: a body chunk is at most 64 KiB, so anything far
/// larger is a broken or hostile filter, refused before its bytes are buffered.
pub const MAX_PACKET: usize = 1 << 20;
/// The largest body chunk sent in one `SMFIC_BODY` (the protocol's own limit).
pub const MAX_BODY_CHUNK: usize = 65535;
/// The protocol version offered.
pub const VERSION: u32 = 6;

/// Actions the node lets a filter take (`SMFIF_*`): header and body changes and quarantine;
/// no envelope changes, which a check at the end of DATA cannot make any more.
pub mod action {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_BODY: u32 = 0x02;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    /// Everything the node applies.
    pub const SUPPORTED: u32 = ADD_HEADERS | CHANGE_BODY | CHANGE_HEADERS | QUARANTINE;
}

/// Protocol flags (`SMFIP_*`): steps a filter does not want (`NO_*`) or does not answer (`NR_*`).
pub mod protocol {
    pub const NO_CONNECT: u32 = 0x01;
    pub const NO_HELO: u32 = 0x02;
    pub const NO_MAIL: u32 = 0x04;
    pub const NO_RCPT: u32 = 0x08;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NR_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const NR_CONNECT: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    /// Every flag the client honours: offered in negotiation.
    pub const OFFERED: u32 = NO_CONNECT
        | NO_HELO
        | NO_MAIL
        | NO_RCPT
        | NO_BODY
        | NO_HEADERS
        | NO_EOH
        | NR_HEADER
        | NO_UNKNOWN
        | NO_DATA
        | SKIP
        | NR_CONNECT
        | NR_HELO
        | NR_MAIL
        | NR_RCPT
        | NR_DATA
        | NR_EOH
        | NR_BODY;
}

/// A command the MTA sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// `O`: the version, actions and protocol flags offered.
    Negotiate { version: u32, actions: u32, protocol: u32 },
    /// `D`: macros for the command `stage` (`C`, `M`, `E`…) that follows.
    Macros { stage: u8, pairs: &'a [(&'a str, &'a str)] },
    /// `C`: the client, `family` `4` or `6` with its address and port.
    Connect { hostname: &'a str, family: u8, port: u16, address: &'a str },
    /// `H`: the EHLO/HELO name.
    Helo(&'a str),
    /// `M`: the reverse path, with its angle brackets.
    Mail(&'a str),
    /// `R`: one recipient, with its angle brackets.
    Rcpt(&'a str),
    /// `T`: DATA begins.
    Data,
    /// `L`: one header field.
    Header { name: &'a str, value: &'a str },
    /// `N`: end of the header block.
    EndOfHeaders,
    /// `B`: a chunk of body, at most [`MAX_BODY_CHUNK`].
    Body(&'a [u8]),
    /// `E`: end of the body: the filter's changes and verdict follow.
    EndOfBody,
    /// `Q`: end of the conversation.
    Quit,
}

/// Why bytes are no packet the node accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("empty packet")]
    Empty,
    #[error("response {0:?} is too short")]
    Short(char),
    #[error("reply code {0:?} is not a 4xx or 5xx")]
    BadReplyCode(String),
}

impl Command<'_> {
    /// Appends this command's packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut data = Vec::new();
        let code = match self {
            Command::Negotiate { version, actions, protocol } => {
                for n in [version, actions, protocol] {
                    data.extend_from_slice(&n.to_be_bytes());
                }
                b'O'
            }
            Command::Macros { stage, pairs } => {
                data.push(*stage);
                for (name, value) in pairs.iter() {
                    push_str(&mut data, name);
                    push_str(&mut data, value);
                }
                b'D'
            }
            Command::Connect { hostname, family, port, address } => {
                push_str(&mut data, hostname);
                data.push(*family);
                data.extend_from_slice(&port.to_be_bytes());
                push_str(&mut data, address);
                b'C'
            }
            Command::Helo(name) => {
                push_str(&mut data, name);
                b'H'
            }
            Command::Mail(from) => {
                push_str(&mut data, from);
                b'M'
            }
            Command::Rcpt(to) => {
                push_str(&mut data, to);
                b'R'
            }
            Command::Data => b'T',
            Command::Header { name, value } => {
                push_str(&mut data, name);
                push_str(&mut data, value);
                b'L'
            }
            Command::EndOfHeaders => b'N',
            Command::Body(chunk) => {
                data.extend_from_slice(chunk);
                b'B'
            }
            Command::EndOfBody => b'E',
            Command::Quit => b'Q',
        };
        let len = data.len() + 1;
        if len > MAX_PACKET {
            return Err(CodecError::TooLarge(len));
        }
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(code);
        out.extend_from_slice(&data);
        Ok(())
    }
}

/// A NUL-terminated string; a NUL inside would end it early on the other side, so none is sent.
fn push_str(data: &mut Vec<u8>, s: &str) {
    data.extend(s.bytes().filter(|&b| b != 0));
    data.push(0);
}

/// A filter's response.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// `O`: the version, actions and protocol flags the filter wants.
    Negotiate { version: u32, actions: u32, protocol: u32 },
    /// `a`: accept the message; no more callbacks.
    Accept,
    /// `c`: go on.
    Continue,
    /// `r`: refuse for good.
    Reject,
    /// `t`: refuse for now.
    Tempfail,
    /// `d`: accept and throw away.
    Discard,
    /// `y`: refuse with this reply (`code` 4xx or 5xx, `text` after it).
    ReplyCode { code: u16, text: String },
    /// `h`: add a header field at the end.
    AddHeader { name: String, value: String },
    /// `i`: insert a header field before the `index`th (from 0).
    InsertHeader { index: u32, name: String, value: String },
    /// `m`: change the `index`th (from 1) field called `name`; an empty value removes it.
    ChangeHeader { index: u32, name: String, value: String },
    /// `b`: a chunk of the new body (the chunks together replace the body).
    ReplaceBody(Vec<u8>),
    /// `q`: quarantine the message, for this reason.
    Quarantine(String),
    /// `p`: still working; wait on.
    Progress,
    /// `s`: skip the rest of the body.
    Skip,
    /// A response the node did not allow (envelope changes): ignored, logged.
    Other(u8),
}

/// Cuts a byte stream into [`Response`]s. Bytes are buffered only up to one packet.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Adds bytes read from the filter.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole response, `None` until one has arrived; an error ends the stream.
    pub fn decode(&mut self) -> Result<Option<Response>, CodecError> {
        let Some(head) = self.buffer.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 {
            return Err(CodecError::Empty);
        }
        if len > MAX_PACKET {
            return Err(CodecError::TooLarge(len));
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let packet: Vec<u8> = self.buffer.drain(..4 + len).skip(4).collect();
        parse_response(packet[0], &packet[1..]).map(Some)
    }
}

fn parse_response(code: u8, data: &[u8]) -> Result<Response, CodecError> {
    let short = || CodecError::Short(code as char);
    let mut strings = data.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned());
    Ok(match code {
        b'O' => {
            let n = |i: usize| data.get(i * 4..i * 4 + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            Response::Negotiate {
                version: n(0).ok_or_else(short)?,
                actions: n(1).ok_or_else(short)?,
                protocol: n(2).ok_or_else(short)?,
            }
        }
        b'a' => Response::Accept,
        b'c' => Response::Continue,
        b'r' => Response::Reject,
        b't' => Response::Tempfail,
        b'd' => Response::Discard,
        b'p' => Response::Progress,
        b's' => Response::Skip,
        b'y' => {
            let line = strings.next().unwrap_or_default();
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            if !(400..600).contains(&code) {
                return Err(CodecError::BadReplyCode(line.chars().take(40).collect()));
            }
            // "550 5.7.1 text" or "550-5.7.1 first line\r\n550 5.7.1 last": keep the words.
            let text = line.get(4..).unwrap_or("").split("\r\n").last().unwrap_or("").to_string();
            let text = match text.get(..3).map(|c| c.parse::<u16>()) {
                Some(Ok(_)) => text.get(4..).unwrap_or("").to_string(),
                _ => text,
            };
            // The node writes its own enhanced status code: drop the filter's.
            let text = match text.split_once(' ') {
                Some((first, rest)) if is_enhanced_status(first) => rest.to_string(),
                _ => text,
            };
            Response::ReplyCode { code, text }
        }
        b'h' => {
            Response::AddHeader { name: strings.next().ok_or_else(short)?, value: strings.next().unwrap_or_default() }
        }
        b'i' | b'm' => {
            let index = data.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(short)?;
            let mut strings = data[4..].split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned());
            let name = strings.next().ok_or_else(short)?;
            let value = strings.next().unwrap_or_default();
            if code == b'i' {
                Response::InsertHeader { index, name, value }
            } else {
                Response::ChangeHeader { index, name, value }
            }
        }
        b'b' => Response::ReplaceBody(data.to_vec()),
        b'q' => Response::Quarantine(strings.next().unwrap_or_default()),
        other => Response::Other(other),
    })
}

/// `5.7.1` and the like (RFC 3463).
fn is_enhanced_status(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        Command::Negotiate { version: 6, actions: 0x33, protocol: 1 }.encode(&mut out).expect("fits");
        assert_eq!(out, packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x33, 0, 0, 0, 1]));
        out.clear();
        Command::Connect { hostname: "[192.0.2.1]", family: b'4', port: 25, address: "192.0.2.1" }
            .encode(&mut out)
            .expect("fits");
        assert_eq!(out, packet(b'C', b"[192.0.2.1]\x004\x00\x19192.0.2.1\x00"));
        out.clear();
        Command::Header { name: "Subject", value: "a\0b" }.encode(&mut out).expect("fits");
        assert_eq!(out, packet(b'L', b"Subject\0ab\0"));
        out.clear();
        Command::Macros { stage: b'E', pairs: &[("i", "q1")] }.encode(&mut out).expect("fits");
        assert_eq!(out, packet(b'D', b"Ei\0q1\0"));
        assert!(Command::Body(&vec![0; MAX_PACKET]).encode(&mut out).is_err());
    }

    #[test]
    fn decodes_responses_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend(packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x21, 0, 0, 0, 0x80]));
        stream.extend(packet(b'h', b"X-Spam\0Yes\0"));
        stream.extend(packet(b'm', b"\0\0\0\x02Subject\0\0"));
        stream.extend(packet(b'i', b"\0\0\0\0X-First\0one\0"));
        stream.extend(packet(b'y', b"554 5.7.1 Gtube pattern\0"));
        stream.extend(packet(b'q', b"spam\0"));
        stream.extend(packet(b'b', b"new body"));
        stream.extend(packet(b'+', b"<x@y>\0"));
        let want = vec![
            Response::Negotiate { version: 6, actions: 0x21, protocol: 0x80 },
            Response::AddHeader { name: "X-Spam".into(), value: "Yes".into() },
            Response::ChangeHeader { index: 2, name: "Subject".into(), value: String::new() },
            Response::InsertHeader { index: 0, name: "X-First".into(), value: "one".into() },
            Response::ReplyCode { code: 554, text: "Gtube pattern".into() },
            Response::Quarantine("spam".into()),
            Response::ReplaceBody(b"new body".to_vec()),
            Response::Other(b'+'),
        ];
        for split in [1, 3, 7, stream.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                d.push(piece);
                while let Some(r) = d.decode().expect("valid") {
                    got.push(r);
                }
            }
            assert_eq!(got, want, "split {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    /// Decodes `stream` in reads of `cut` bytes: the responses until the first error.
    fn all(stream: &[u8], cut: usize) -> (Vec<Response>, Option<CodecError>) {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for read in stream.chunks(cut) {
            d.push(read);
            loop {
                match d.decode() {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    /// The fuzz target's invariant, over every truncation and one-byte corruption of a stream.
    #[test]
    fn damaged_streams_decode_the_same_however_they_are_cut() {
        let mut stream = packet(b'O', &[0, 0, 0, 6, 0, 0, 0, 0x21, 0, 0, 0, 0x80]);
        stream.extend(packet(b'i', b"\0\0\0\x01X-A\0b\0"));
        stream.extend(packet(b'y', b"550 5.7.1 no\0"));
        stream.extend(packet(b'b', b"body"));
        let mut inputs: Vec<Vec<u8>> = (0..=stream.len()).map(|n| stream[..n].to_vec()).collect();
        for i in 0..stream.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = stream.clone();
                damaged[i] ^= flip;
                inputs.push(damaged);
            }
        }
        for input in inputs {
            let whole = all(&input, input.len().max(1));
            for cut in [1, 2, 5] {
                assert_eq!(all(&input, cut), whole, "{input:?} in reads of {cut}");
            }
        }
    }

    #[test]
    fn refuses_bad_packets() {
        let mut d = Decoder::new();
        d.push(&[0x7f, 0, 0, 0]);
        assert!(matches!(d.decode(), Err(CodecError::TooLarge(_))));
        let mut d = Decoder::new();
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.decode(), Err(CodecError::Empty));
        let mut d = Decoder::new();
        d.push(&packet(b'O', &[0, 0]));
        assert_eq!(d.decode(), Err(CodecError::Short('O')));
        let mut d = Decoder::new();
        d.push(&packet(b'y', b"250 ok\0"));
        assert!(matches!(d.decode(), Err(CodecError::BadReplyCode(_))));
        let mut d = Decoder::new();
        d.push(&packet(b'y', b"451-4.7.1 first\r\n451 4.7.1 later\0"));
        assert_eq!(d.decode(), Ok(Some(Response::ReplyCode { code: 451, text: "later".into() })));
    }
}
