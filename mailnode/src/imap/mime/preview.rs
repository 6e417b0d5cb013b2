//! The preview of a message (RFC 8970): the start of its text as one line, for a client's
//! message list. The text is the first text part (an HTML one converted to text by
//! mail-parser), whitespace runs and control characters collapsed to single spaces, at most
//! [`MAX_CHARS`] characters.

use mail_parser::Message;

/// RFC 8970 §3.1: a preview is at most 256 characters (not octets).
pub const MAX_CHARS: usize = 256;

/// The preview of `message`: empty when it has no text (the RFC's empty string, not NIL).
pub fn text(message: &Message<'_>) -> String {
    let Some(body) = message.body_text(0) else { return String::new() };
    let mut preview = String::new();
    let mut chars = 0;
    for word in body.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        if chars > 0 {
            if chars == MAX_CHARS {
                break;
            }
            preview.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars == MAX_CHARS {
                return preview;
            }
            preview.push(c);
            chars += 1;
        }
    }
    preview
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::mime;

    fn preview_of(raw: &str) -> String {
        text(&mime::parse(raw.as_bytes()).expect("parses"))
    }

    #[test]
    fn plain_text_on_one_line() {
        let raw = "Subject: x\r\n\r\nHello   there,\r\n\r\n\tsee you\x07 soon.\r\n";
        assert_eq!(preview_of(raw), "Hello there, see you soon.");
    }

    #[test]
    fn html_without_its_markup() {
        let raw = "Subject: x\r\nContent-Type: text/html\r\n\r\n<html><body><p>Hi <b>Bob</b></p><p>Lunch?</p></body></html>\r\n";
        let preview = preview_of(raw);
        assert!(!preview.contains('<') && preview.contains("Hi") && preview.contains("Bob"), "{preview}");
    }

    #[test]
    fn at_most_256_characters_not_octets() {
        let raw = format!("Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n", "ü".repeat(300));
        let preview = preview_of(&raw);
        assert_eq!(preview.chars().count(), MAX_CHARS);
        assert!(preview.chars().all(|c| c == 'ü'));
    }

    #[test]
    fn no_text_is_empty() {
        let raw = "Subject: x\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n";
        assert_eq!(preview_of(raw), "");
    }
}
