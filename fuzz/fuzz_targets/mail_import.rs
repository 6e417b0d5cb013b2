//! Fuzzes the readers of `sirms ctl import` (`sirms_mailnode::import`): Dovecot's
//! `dovecot-uidlist` and `dovecot-keywords`, Maildir file names' flags, the mbox splitter with
//! its unescaping, private headers and `From ` line dates, the CRLF conversion, vpopmail's
//! `vpasswd`, and the IMAP
//! source's response framing and parsing — every one of them reads what another server left
//! or sends, which may be anything.
//!
//! Input: the first byte picks the reader, the rest is the file.
//!
//! Checked: nothing panics; a uidlist's UIDs are non-zero and its names have no `/` or info
//! part; there are always 26 keyword letters; flags from a name carry only valid keywords;
//! every mbox message is CRLF-only (no bare LF), no larger than the input plus its added CRs,
//! and their number is at most the `From ` lines in the input; a `From ` line date is within
//! the years the parser accepts; `to_crlf` leaves no bare LF and only adds CRs; an IMAP frame
//! consumes at most the input, holds the literals it announced (no NUL left in its text but
//! their markers), and a FETCH's body is one of them; a `vpasswd` user has a name without
//! `@`, `/` or `:`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sirms_mailnode::import::imap::response;
use sirms_mailnode::import::{dovecot, maildir, mbox, to_crlf, vpopmail};
use sirms_storage::Flags;

fn crlf_only(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'))
}

fn without_cr_before_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, file)) = data.split_first() else { return };
    match which % 7 {
        0 => {
            if let Some(list) = dovecot::UidList::parse(file) {
                assert!(list.uid_validity > 0);
                for (name, &uid) in &list.uids {
                    assert!(uid > 0);
                    assert!(!name.is_empty() && !name.contains('/') && !name.contains(':'));
                    assert_eq!(list.uid_of(name), Some(uid));
                }
            }
        }
        1 => {
            let letters = dovecot::parse_keywords(file);
            assert_eq!(letters.len(), dovecot::MAX_KEYWORDS);
            let name = String::from_utf8_lossy(file);
            let flags = maildir::flags_of(&name, &letters);
            assert!(flags.keywords.iter().all(|k| Flags::valid_keyword(k)));
        }
        2 => {
            let froms = file.windows(5).filter(|w| w == b"From ").count();
            let mut count = 0;
            for message in mbox::Mbox::new(file, "fuzz").take(10_000) {
                count += 1;
                let Ok(message) = message else { continue };
                assert!(crlf_only(&message.bytes));
                assert!(message.bytes.len() <= 2 * file.len());
                assert!(message.uid.is_none());
            }
            assert!(count <= froms, "{count} messages from {froms} From lines");
        }
        3 => {
            if let Some(t) = mbox::from_line_date(file) {
                // 1970-01-01 to the end of 9999-12-31, give or take a zone (under a day) and a
                // leap second.
                assert!((-2 * 86_400..=253_402_300_800 + 2 * 86_400).contains(&t), "{t}");
            }
        }
        5 => {
            let mut rest = file;
            while let Ok(Some((mut frame, used))) = response::frame(rest) {
                assert!(used > 0 && used <= rest.len());
                let markers = frame.text.iter().filter(|&&b| b == 0).count();
                assert_eq!(markers, frame.literals.len());
                let literals = frame.literals.clone();
                if let Ok(values) = response::values(&frame.text) {
                    if let Some(fetched) = response::fetched(&values, &mut frame) {
                        if let Some(body) = fetched.body {
                            assert!(literals.contains(&body) || frame.text.len() >= body.len());
                        }
                    }
                }
                rest = &rest[used..];
            }
        }
        6 => {
            for user in vpopmail::parse_vpasswd(file) {
                assert!(!user.name.is_empty() && !user.name.contains(['@', '/', ':']));
                assert!(!user.hash.contains(':') && !user.dir.contains(':'));
            }
        }
        _ => {
            let out = to_crlf(file.to_vec());
            assert!(crlf_only(&out));
            assert_eq!(without_cr_before_lf(&out), without_cr_before_lf(file));
            assert!(out.len() <= 2 * file.len());
        }
    }
});
