//! IMAP's modified UTF-7 for mailbox names (RFC 3501 §5.1.3): the store speaks UTF-8, the wire this.

use base64::Engine;
use base64::alphabet::Alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

/// Base64 with `,` instead of `/` and no padding, as RFC 3501 §5.1.3 asks.
fn engine() -> GeneralPurpose {
    // The alphabet is a constant of the RFC; building it cannot fail.
    let alphabet = Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
        .unwrap_or(base64::alphabet::STANDARD);
    let config = GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false);
    GeneralPurpose::new(&alphabet, config)
}

/// Encodes a UTF-8 mailbox name for the wire.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine().encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Why a wire name is not valid modified UTF-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mailbox name is not valid modified UTF-7")]
pub struct Mutf7Error;

/// Decodes a wire mailbox name to UTF-8.
///
/// Names that are not valid modified UTF-7 but are valid UTF-8 (clients that send raw UTF-8)
/// are refused: accepting them would give one mailbox two spellings.
pub fn decode(wire: &[u8]) -> Result<String, Mutf7Error> {
    let mut out = String::with_capacity(wire.len());
    let mut i = 0;
    while i < wire.len() {
        let b = wire[i];
        if !(0x20..=0x7e).contains(&b) {
            return Err(Mutf7Error);
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let end = wire[i + 1..].iter().position(|&c| c == b'-').map(|p| i + 1 + p).ok_or(Mutf7Error)?;
        let encoded = &wire[i + 1..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let bytes = engine().decode(encoded).map_err(|_| Mutf7Error)?;
            if bytes.len() % 2 != 0 {
                return Err(Mutf7Error);
            }
            let units: Vec<u16> = bytes.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
            let text = String::from_utf16(&units).map_err(|_| Mutf7Error)?;
            // A shift sequence must not hide printable ASCII (RFC 3501: "MUST be represented by themselves").
            if text.chars().any(|c| (' '..='~').contains(&c)) {
                return Err(Mutf7Error);
            }
            out.push_str(&text);
        }
        i = end + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (utf8, wire) in [
            ("INBOX", "INBOX"),
            ("Tom & Jerry", "Tom &- Jerry"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("😀", "&2D3eAA-"),
        ] {
            assert_eq!(encode(utf8), wire);
            assert_eq!(decode(wire.as_bytes()).as_deref(), Ok(utf8));
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decode(b"&Jjo").is_err());
        assert!(decode(b"&AGE-").is_err(), "encoded ASCII");
        assert!(decode("Entwürfe".as_bytes()).is_err());
        assert!(decode(b"&A-").is_err());
    }
}
