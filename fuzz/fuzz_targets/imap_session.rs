//! Fuzzes the IMAP session (`sirms_mailnode::imap::Session`) over a `MemoryStore`.
//!
//! Input: what the client sends. The target frames it as the connection loop does, in
//! short: a command is a line up to LF (a CR before it is dropped and CRLF put back); a
//! line ending in a literal announcement `{n}` or `{n+}` takes the next `n` bytes (at most
//! what is left) and the line after them as part of the same command. Each command goes
//! through the pre-decoder and imap-codec (`extension::decode`) into `Session::execute`, or
//! to `Session::bad_input` when it does not decode. IDLE is ended by the next line, and an
//! AUTHENTICATE continuation takes the next line as its response (`*` cancels). STARTTLS is
//! taken as done. At most 64 commands per input.
//!
//! Each input gets a new, empty `MemoryStore` (which behaves as `LocalStore` does in all the
//! store conformance suite checks), so nothing carries over from one input to the next and
//! an input alone reproduces what it found. One user, `alice@example.test`, password `pw`,
//! plaintext logins allowed.
//!
//! Checked: no panic; every write ends with CRLF; a decoded command that leaves the session
//! running is answered with a tagged line carrying its own tag (or a `+` continuation for
//! IDLE and AUTHENTICATE); output per command is bounded; nothing is run after the session
//! asks to close.

#![no_main]

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use imap_codec::imap_types::auth::AuthenticateData;
use imap_codec::imap_types::secret::Secret;
use libfuzzer_sys::fuzz_target;
use sirms_mailnode::auth::Authenticator;
use sirms_mailnode::auth::throttle::{Throttle, ThrottleConfig};
use sirms_mailnode::directory::{DirectoryConfig, DirectoryData};
use sirms_mailnode::imap::extension;
use sirms_mailnode::imap::{Next, Session, SessionConfig};
use sirms_mailnode::quota::Quotas;
use sirms_storage::{MailStore, MemoryStore};

const MAX_COMMANDS: usize = 64;
/// Generous: a FETCH of BODY[] of every message the input could have appended.
const MAX_OUTPUT_PER_COMMAND: usize = 4 << 20;

fn directory() -> Arc<DirectoryData> {
    static DIRECTORY: std::sync::OnceLock<Arc<DirectoryData>> = std::sync::OnceLock::new();
    DIRECTORY
        .get_or_init(|| {
            let cfg: DirectoryConfig = toml::from_str(
                r#"
domains = ["example.test"]
users = [ { address = "alice@example.test", password = "{plain}pw", quota_bytes = 65536 } ]
"#,
            )
            .expect("directory config");
            Arc::new(DirectoryData::from_config(&cfg).expect("directory"))
        })
        .clone()
}

/// Splits the input into commands as described at the top.
fn commands(mut input: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !input.is_empty() && out.len() < MAX_COMMANDS {
        let mut command = Vec::new();
        loop {
            let (line, rest) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (&input[..i], &input[i + 1..]),
                None => (input, &input[input.len()..]),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            command.extend_from_slice(line);
            command.extend_from_slice(b"\r\n");
            input = rest;
            match literal_length(line) {
                Some(n) if !input.is_empty() => {
                    let n = n.min(input.len());
                    command.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
                _ => break,
            }
        }
        out.push(command);
    }
    out
}

/// `n` when the line ends with `{n}` or `{n+}`.
fn literal_length(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let body = body.strip_suffix(b"+").unwrap_or(body);
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The tag a well-formed command starts with, as a client would read it.
fn tag_of(command: &[u8]) -> Option<&[u8]> {
    let end = command.iter().position(|&b| b == b' ')?;
    let tag = &command[..end];
    (!tag.is_empty() && tag.iter().all(|&b| b.is_ascii_graphic() && b != b'+' && b != b'*')).then_some(tag)
}

fn check_written(out: &[u8]) {
    assert!(out.len() <= MAX_OUTPUT_PER_COMMAND, "{} bytes for one command", out.len());
    if !out.is_empty() {
        assert!(out.ends_with(b"\r\n"), "output does not end with CRLF: {:?}", String::from_utf8_lossy(out));
    }
}

/// The last line of `out` (the completion of a command).
fn last_line(out: &[u8]) -> &[u8] {
    let body = out.strip_suffix(b"\r\n").unwrap_or(out);
    match body.windows(2).rposition(|w| w == b"\r\n") {
        Some(i) => &body[i + 2..],
        None => body,
    }
}

async fn drive(store: Arc<dyn MailStore>, input: &[u8]) {
    let mut config = SessionConfig::new("imap.example.test");
    config.allow_plaintext_auth = true;
    let directory = directory();
    let throttle = Throttle::new(&ThrottleConfig::default(), &[]).expect("throttle");
    let authenticator = fixture().authenticator.restarted(Arc::new(throttle));
    let quotas = Quotas::new(store.clone(), directory);
    let mut session =
        Session::new(Arc::new(config), store, authenticator, quotas, IpAddr::V4(Ipv4Addr::LOCALHOST), false);
    check_written(&session.greeting());

    let mut queue = commands(input).into_iter();
    while let Some(command) = queue.next() {
        let mut out: Vec<u8> = Vec::new();
        let next = match extension::decode(&command) {
            Ok(decoded) => {
                let next = session.execute(decoded, &mut out).await.expect("write to a Vec");
                if next == Next::Continue {
                    let tag = tag_of(&command).expect("a decoded command has a tag");
                    let last = last_line(&out);
                    assert!(
                        last.starts_with(tag) && last.get(tag.len()) == Some(&b' '),
                        "command {:?} not completed with its tag: {:?}",
                        String::from_utf8_lossy(&command),
                        String::from_utf8_lossy(&out)
                    );
                }
                next
            }
            Err(text) => session.bad_input(None, text, &mut out).await.expect("write to a Vec"),
        };
        check_written(&out);
        match next {
            Next::Continue => {}
            Next::Close => return,
            Next::StartTls => session.tls_started(),
            // Compression is the connection's, below the session: nothing to do here.
            Next::Compress => {}
            Next::Idle { tag } => {
                assert!(last_line(&out).starts_with(b"+"), "IDLE without a continuation");
                let line = queue.next().unwrap_or_default();
                let done = line.eq_ignore_ascii_case(b"DONE\r\n");
                let mut out = Vec::new();
                let next = session.idle_done(&tag, done, &mut out).await.expect("write to a Vec");
                check_written(&out);
                if next == Next::Close {
                    return;
                }
            }
            Next::Authenticate { tag } => {
                assert!(last_line(&out).starts_with(b"+"), "AUTHENTICATE without a continuation");
                let line = queue.next().unwrap_or_default();
                let line = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
                let data = if line == b"*" {
                    AuthenticateData::Cancel
                } else {
                    AuthenticateData::Continue(Secret::new(Cow::Owned(line)))
                };
                let mut out = Vec::new();
                let next = session.authenticate_response(&tag, data, &mut out).await.expect("write to a Vec");
                check_written(&out);
                if next == Next::Close {
                    return;
                }
            }
        }
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    /// Its password-check threads serve every input: threads spawned per input cost time,
    /// and their exits, still under way when libFuzzer checks for leaks, were reported as
    /// leaks under AddressSanitizer. Each input gets a `restarted` copy (fresh throttle and
    /// login cache).
    authenticator: Authenticator,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Paused time: the throttle's delays after failed logins and every timer pass at once
        // instead of costing the fuzzer real seconds.
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
        let throttle = Throttle::new(&ThrottleConfig::default(), &[]).expect("throttle");
        let authenticator = Authenticator::new(directory(), Arc::new(throttle));
        Fixture { runtime, authenticator }
    })
}

fuzz_target!(|input: &[u8]| {
    let fixture = fixture();
    fixture.runtime.block_on(drive(Arc::new(MemoryStore::new()), input));
});
