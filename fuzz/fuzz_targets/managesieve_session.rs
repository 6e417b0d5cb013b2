//! Fuzzes the ManageSieve session (`sirms_mailnode::managesieve::Session`) with its command
//! parser, against an in-memory set of the user's files.
//!
//! Input layout:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | bit 0 TLS from the start, bit 1 plaintext logins allowed, bit 2 logins fail, bit 3 the store fails |
//! | 1 | how the input is cut into reads (1..=255 bytes each; 0: all at once) |
//! | 2.. | what the client sends |
//!
//! Checked: no panic; every reply ends in CRLF, and a status line starts `OK`, `NO` or
//! `BYE`; nothing is read or written before a login succeeds; only script files and the
//! active marker are written, each name a valid user file name, each script within the size
//! limit and accepted by the validator; the active marker names a script that exists; the
//! files stay within the script limit; a closed session takes no more input; one command's
//! reply is bounded (a listing or a script at most, never the input echoed without bound).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sirms_mailnode::managesieve::{Action, Next, Outcome, Session, SessionConfig};
use sirms_mailnode::sieve::scripts::{self, ACTIVE_FILE, Scripts};
use sirms_storage::UserFile;

const MAX_SCRIPT: usize = 512;
const MAX_SCRIPTS: usize = 3;

fn config(plaintext: bool) -> SessionConfig {
    SessionConfig {
        hostname: "fuzz.test".into(),
        tls_available: true,
        plaintext_without_tls: plaintext,
        max_script_size: MAX_SCRIPT,
        max_scripts: MAX_SCRIPTS,
        max_auth_failures: 3,
        extensions: "fileinto".into(),
        max_redirects: 4,
        // Cheap and decidable: scripts starting with "bad" do not parse.
        validate: |s| if s.starts_with(b"bad") { Err("line 1: bad".into()) } else { Ok(()) },
    }
}

fn check_reply(out: &[u8]) {
    assert!(out.is_empty() || out.ends_with(b"\r\n"), "reply without CRLF: {:?}", String::from_utf8_lossy(out));
    // Bounded: the capabilities, a listing of at most MAX_SCRIPTS names, or a script.
    assert!(out.len() <= 64 * 1024, "reply of {} bytes", out.len());
}

fuzz_target!(|data: &[u8]| {
    let [flags, cut, input @ ..] = data else { return };
    let (tls, plaintext, deny, broken) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0, flags & 8 != 0);
    let mut session = Session::new(config(plaintext), tls);
    let mut files: Vec<UserFile> = Vec::new();
    let mut logged_in = false;
    check_reply(&session.greeting());
    let chunk = if *cut == 0 { input.len().max(1) } else { usize::from(*cut) };
    let mut buffer: Vec<u8> = Vec::new();
    let mut closed = false;
    for piece in input.chunks(chunk) {
        buffer.extend_from_slice(piece);
        loop {
            assert!(!closed, "input after close");
            let (used, mut next) = session.input(&buffer);
            assert!(used <= buffer.len());
            buffer.drain(..used);
            loop {
                match next {
                    Next::Reply(out) => {
                        check_reply(&out);
                        break;
                    }
                    Next::Close(out) => {
                        check_reply(&out);
                        closed = true;
                        break;
                    }
                    Next::Action(Action::Authenticate { .. }) => {
                        let outcome = if deny { Outcome::BadCredentials } else { Outcome::Authenticated("u@fuzz.test".into()) };
                        logged_in = !deny;
                        next = session.complete(outcome);
                    }
                    Next::Action(Action::StartTls { reply }) => {
                        check_reply(&reply);
                        buffer.clear();
                        next = session.complete(Outcome::TlsStarted);
                    }
                    Next::Action(Action::Load) => {
                        assert!(logged_in, "files read before login");
                        next = session.complete(if broken { Outcome::Unavailable } else { Outcome::Files(files.clone()) });
                    }
                    Next::Action(Action::Write(writes)) => {
                        assert!(logged_in, "files written before login");
                        for (name, content) in writes {
                            assert!(sirms_storage::user_file::check_name(&name).is_ok(), "bad file name {name:?}");
                            if name != ACTIVE_FILE {
                                assert!(scripts::script_name(&name).is_some(), "not a script's file: {name}");
                                if let Some(content) = &content {
                                    assert!(content.len() <= MAX_SCRIPT);
                                    assert!(!content.starts_with(b"bad"), "an invalid script stored");
                                }
                            }
                            files.retain(|f| f.name != name);
                            if let Some(content) = content {
                                files.push(UserFile { name, content: Bytes::from(content.to_vec()) });
                            }
                        }
                        let now = Scripts::from_files(&files);
                        assert!(now.scripts.len() <= MAX_SCRIPTS, "{} scripts", now.scripts.len());
                        if let Some(marker) = files.iter().find(|f| f.name == ACTIVE_FILE) {
                            let name = String::from_utf8_lossy(&marker.content);
                            assert!(now.get(&name).is_some(), "the active marker names no script: {name}");
                        }
                        next = session.complete(Outcome::Written);
                    }
                }
            }
            if closed || used == 0 {
                break;
            }
        }
        if closed {
            break;
        }
    }
});
