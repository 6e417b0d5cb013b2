//! Selecting what TOP returns from a whole message.

/// The prefix of `message` that `TOP n lines` sends: the header, the blank line ending it and `lines` body lines.
///
/// Lines end at LF, with or without a CR before it, so stored messages with bare LF work too. A message without a
/// blank line is all header and is returned whole; so is one whose body has fewer than `lines` lines.
pub(crate) fn top(message: &[u8], lines: u32) -> &[u8] {
    let mut taken = 0;
    // `None` while still in the header, then the number of body lines still to take.
    let mut body_left: Option<u32> = None;
    for line in message.split_inclusive(|&b| b == b'\n') {
        match body_left.as_mut() {
            None if line == b"\r\n" || line == b"\n" => body_left = Some(lines),
            None => {}
            Some(0) => return &message[..taken],
            Some(left) => *left -= 1,
        }
        taken += line.len();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::top;

    const MSG: &[u8] = b"From: a\r\nSubject: b\r\n\r\none\r\ntwo\r\nthree\r\n";

    #[test]
    fn zero_lines_is_header_and_blank_line() {
        assert_eq!(top(MSG, 0), b"From: a\r\nSubject: b\r\n\r\n");
    }

    #[test]
    fn some_lines() {
        assert_eq!(top(MSG, 2), b"From: a\r\nSubject: b\r\n\r\none\r\ntwo\r\n");
    }

    #[test]
    fn beyond_the_body_is_whole_message() {
        assert_eq!(top(MSG, 3), MSG);
        assert_eq!(top(MSG, u32::MAX), MSG);
    }

    #[test]
    fn no_blank_line_is_all_header() {
        assert_eq!(top(b"From: a\r\nSubject: b\r\n", 0), b"From: a\r\nSubject: b\r\n");
        assert_eq!(top(b"From: a", 0), b"From: a");
    }

    #[test]
    fn last_body_line_without_crlf() {
        let msg = b"H: 1\r\n\r\nx\r\ny";
        assert_eq!(top(msg, 1), b"H: 1\r\n\r\nx\r\n");
        assert_eq!(top(msg, 2), msg);
    }

    #[test]
    fn bare_lf_message() {
        assert_eq!(top(b"H: 1\n\nx\ny\n", 1), b"H: 1\n\nx\n");
    }

    #[test]
    fn empty_header() {
        assert_eq!(top(b"\r\nbody\r\n", 0), b"\r\n");
    }

    #[test]
    fn empty_message() {
        assert_eq!(top(b"", 5), b"");
    }

    #[test]
    fn blank_lines_in_body_count_as_lines() {
        assert_eq!(top(b"H: 1\r\n\r\n\r\n\r\nx\r\n", 2), b"H: 1\r\n\r\n\r\n\r\n");
    }
}
