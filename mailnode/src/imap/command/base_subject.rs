//! The base subject of a message (RFC 5256 §2.1), which SORT SUBJECT and both THREAD
//! algorithms compare: the subject without `Re:`, `Fwd:`, `[list]` prefixes, `(fwd)` trailers
//! and `[fwd: …]` wrappers, with its whitespace folded.
//!
//! The ABNF of §5 the steps below follow (case-insensitive):
//!
//! ```text
//! subj-trailer  = "(fwd)" / WSP
//! subj-fwd-hdr  = "[fwd:"
//! subj-fwd-trl  = "]"
//! subj-blob     = "[" *BLOBCHAR "]" *WSP      ; BLOBCHAR: any byte but "[" and "]"
//! subj-refwd    = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
//! subj-leader   = (*subj-blob subj-refwd) / WSP
//! ```

/// A base subject, ready to compare, and whether the subject marked a reply or forward.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseSubject {
    /// The base subject in upper case: i;unicode-casemap (RFC 5051) compares titlecased text,
    /// and upper case is the titlecase of everything but a handful of digraphs.
    pub key: String,
    /// A `Re:`/`Fwd:` leader, a `(fwd)` trailer or a `[fwd: …]` wrapper was removed
    /// (what THREAD=REFERENCES step 5 calls "a reply or forward").
    pub reply_or_forward: bool,
}

/// The base subject of `subject`, a Subject field with its RFC 2047 encoded words decoded.
pub fn base_subject(subject: &str) -> BaseSubject {
    // (1) Tabs and line breaks become spaces, runs of spaces one space.
    let mut text = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') { ' ' } else { c };
        if c == ' ' && text.ends_with(' ') {
            continue;
        }
        text.push(c);
    }
    let mut reply_or_forward = false;
    // Every step below cuts at an ASCII byte ('[', ']', ':', ' ', a letter), so the
    // remaining text is always valid UTF-8 and each round makes it strictly shorter.
    let mut rest: &str = &text;
    loop {
        // (2) Trailers: "(fwd)" and whitespace, as often as they come.
        loop {
            if let Some(shorter) = rest.strip_suffix(' ') {
                rest = shorter;
            } else if rest.len() >= 5 && rest.as_bytes()[rest.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                rest = &rest[..rest.len() - 5];
                reply_or_forward = true;
            } else {
                break;
            }
        }
        // (3) to (5): leaders and leading blobs, until neither is left.
        loop {
            if let Some(shorter) = rest.strip_prefix(' ') {
                rest = shorter;
                continue;
            }
            let bytes = rest.as_bytes();
            let (last_blob, after_blobs) = blobs(bytes);
            if let Some(len) = refwd(bytes, after_blobs) {
                rest = &rest[len..];
                reply_or_forward = true;
            } else if after_blobs > 0 {
                // (4) one blob at a time, as long as a base subject is left after it. The blobs
                // are followed by no leader (just checked), so all of them go at once, but the
                // last when nothing follows it: the same result, without rescanning them.
                let cut = if bytes[after_blobs..].iter().any(|&b| b != b' ') { after_blobs } else { last_blob };
                if cut == 0 {
                    break;
                }
                rest = &rest[cut..];
            } else {
                break;
            }
        }
        // (6) A "[fwd: …]" wrapper: unwrap it and start again from (2).
        if rest.len() >= 6 && rest.as_bytes()[..5].eq_ignore_ascii_case(b"[fwd:") && rest.ends_with(']') {
            rest = &rest[5..rest.len() - 1];
            reply_or_forward = true;
            continue;
        }
        break;
    }
    BaseSubject { key: rest.to_uppercase(), reply_or_forward }
}

/// The length of the subj-blob starting at `at`, with its trailing whitespace.
fn blob(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let close = bytes[at + 1..].iter().position(|&b| b == b'[' || b == b']')?;
    let mut end = at + 1 + close;
    if bytes[end] != b']' {
        return None;
    }
    end += 1;
    while matches!(bytes.get(end), Some(b' ' | b'\t')) {
        end += 1;
    }
    Some(end - at)
}

/// Where the run of subj-blobs at the start ends, and where its last blob starts.
fn blobs(bytes: &[u8]) -> (usize, usize) {
    let (mut last, mut at) = (0, 0);
    while let Some(len) = blob(bytes, at) {
        last = at;
        at += len;
    }
    (last, at)
}

/// The end of the subj-refwd at `at` (after a leader's blobs), if there is one there.
fn refwd(bytes: &[u8], mut at: usize) -> Option<usize> {
    let word = |at: usize, w: &[u8]| bytes.get(at..at + w.len()).is_some_and(|b| b.eq_ignore_ascii_case(w));
    if word(at, b"re") {
        at += 2;
    } else if word(at, b"fw") {
        at += 2;
        if word(at, b"d") {
            at += 1;
        }
    } else {
        return None;
    }
    while matches!(bytes.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    if let Some(len) = blob(bytes, at) {
        at += len;
    }
    (bytes.get(at) == Some(&b':')).then_some(at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(subject: &str) -> String {
        base_subject(subject).key
    }

    #[test]
    fn strips_leaders_trailers_and_wrappers() {
        // imaptest's sort-subject cases (Dovecot gives the same).
        assert_eq!(key("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)"), "B");
        assert_eq!(key("Re: [FWD: c]"), "C");
        assert_eq!(key("re: [fwd: [fwd: re: [fwd: babylon]]]"), "BABYLON");
        assert_eq!(key("Ad: Re: Ad: Re: Ad: x"), "AD: RE: AD: RE: AD: X");
        assert_eq!(key("b (a)"), "B (A)");
        assert_eq!(key("RE: C"), "C");
        assert_eq!(key("Re[2]: hello"), "HELLO");
        assert_eq!(key("Fw : x"), "X");
        assert_eq!(key("FWD:x"), "X");
        // A blob alone is the base subject; a blob before text is not.
        assert_eq!(key("[xyz]"), "[XYZ]");
        assert_eq!(key("[xyz]  "), "[XYZ]");
        assert_eq!(key("[list] topic"), "TOPIC");
        assert_eq!(key("[a][b] Re: [c] topic"), "TOPIC");
        // Whitespace: folded and trimmed; nothing but whitespace is the empty subject.
        assert_eq!(key(" "), "");
        assert_eq!(key(""), "");
        assert_eq!(key("a\t\r\n  b  "), "A B");
        // Not leaders: no colon, or text before the "re".
        assert_eq!(key("Reply"), "REPLY");
        assert_eq!(key("Re"), "RE");
        assert_eq!(key("are: x"), "ARE: X");
        assert_eq!(key("[unclosed Re: x"), "[UNCLOSED RE: X");
        // Non-ASCII text is compared case-insensitively too.
        assert_eq!(key("Re: Ärger über ß"), "ÄRGER ÜBER SS");
        assert_eq!(key("[fwd: ]"), "");
    }

    #[test]
    fn reply_or_forward() {
        for (subject, expected) in [
            ("foo", false),
            ("Re: foo", true),
            ("foo (fwd)", true),
            ("[fwd: foo]", true),
            ("[list] foo", false),
            ("Fwd: [list] foo", true),
        ] {
            assert_eq!(base_subject(subject).reply_or_forward, expected, "{subject}");
        }
    }

    #[test]
    fn hostile_subjects_are_linear_enough() {
        let long = "Re: [x] ".repeat(20_000) + &"(fwd)".repeat(20_000);
        assert_eq!(key(&long), "[X]");
        let brackets = "[".repeat(50_000);
        assert_eq!(key(&brackets), brackets);
        assert_eq!(key(&("[x] ".repeat(50_000) + "y")), "Y");
        assert_eq!(key(&"[x] ".repeat(50_000)), "[X]");
    }
}
