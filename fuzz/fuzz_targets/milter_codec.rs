//! Fuzzes the milter response decoder (`mailnode::inbound::milter::codec::Decoder`): the bytes
//! a milter filter sends back to the node.
//!
//! Byte 0 of the input picks how the rest is cut into reads (1 to 256 bytes each); the rest is
//! the filter's byte stream. Checked:
//!
//! - nothing panics;
//! - allocation is bounded: the decoder never holds more than what was pushed and not yet
//!   decoded, and refuses a packet announced over `MAX_PACKET` before buffering it;
//! - a decoded response never holds more bytes than the packet it came from (≤ `MAX_PACKET`);
//! - a reply code is 4xx or 5xx, and its text has no NUL;
//! - errors are final for the stream, and **cutting the stream into reads changes nothing**:
//!   the responses and the error are the same as decoding it in one push.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_mailnode::inbound::milter::codec::{CodecError, Decoder, MAX_PACKET, Response};

/// Decodes `stream` pushed in reads of `cut` bytes; the responses until the first error.
fn decode(stream: &[u8], cut: usize) -> (Vec<Response>, Option<CodecError>) {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for read in stream.chunks(cut) {
        decoder.push(read);
        assert!(decoder.buffered() <= stream.len());
        loop {
            match decoder.decode() {
                Ok(Some(response)) => {
                    check(&response);
                    out.push(response);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn check(response: &Response) {
    match response {
        Response::ReplyCode { code, text } => {
            assert!((400..600).contains(code), "{code}");
            assert!(!text.contains('\0') && text.len() <= MAX_PACKET * 3);
        }
        Response::AddHeader { name, value }
        | Response::InsertHeader { name, value, .. }
        | Response::ChangeHeader { name, value, .. } => {
            // Lossy UTF-8 at most triples a byte (U+FFFD for each bad byte).
            assert!(!name.contains('\0') && name.len() + value.len() <= MAX_PACKET * 3);
        }
        Response::ReplaceBody(body) => assert!(body.len() < MAX_PACKET),
        Response::Quarantine(reason) => assert!(reason.len() <= MAX_PACKET * 3),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let whole = decode(stream, stream.len().max(1));
    let pieces = decode(stream, usize::from(cut) + 1);
    assert_eq!(whole, pieces, "cutting into reads of {} changed the outcome", usize::from(cut) + 1);
});
