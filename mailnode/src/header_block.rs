//! The header block of a raw message: everything up to and with the first empty line (CRLF or
//! bare LF), which SEARCH and SORT read without the body and a bounce returns.

/// The header block at the start of `raw`, with the empty line that ends it.
pub fn of(raw: &[u8]) -> &[u8] {
    match raw {
        [b'\n', ..] => return &raw[..1],
        [b'\r', b'\n', ..] => return &raw[..2],
        _ => {}
    }
    let mut at = 0;
    while let Some(p) = raw[at..].iter().position(|&b| b == b'\n') {
        let next = at + p + 1;
        match raw.get(next..) {
            Some([b'\n', ..]) => return &raw[..next + 1],
            Some([b'\r', b'\n', ..]) => return &raw[..next + 2],
            _ => at = next,
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn blocks_end_at_the_first_empty_line() {
        assert_eq!(of(b"A: b\r\nC: d\r\n\r\nbody\r\n\r\n"), b"A: b\r\nC: d\r\n\r\n");
        assert_eq!(of(b"A: b\n\nbody"), b"A: b\n\n");
        assert_eq!(of(b"A: b\r\n continued"), b"A: b\r\n continued");
        assert_eq!(of(b"\r\nbody"), b"\r\n");
    }
}
