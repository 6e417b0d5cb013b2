//! The ManageSieve session (RFC 5804) as a state machine: bytes in, reply bytes and
//! [`Action`]s out, no I/O. The driver feeds what it read to [`Session::input`], performs the
//! actions (checking a password, reading or writing the user's script files, the TLS
//! handshake) and reports each with [`Session::complete`].

use bytes::Bytes;

use super::command::{self, Command, CommandError, Parsed, Response};
use super::reply;
use crate::auth::sasl;
use crate::pop3::Secret;
use crate::sieve::scripts::{self, ACTIVE_FILE, Scripts};

/// Longest literal before login: room for an AUTHENTICATE PLAIN response, no more.
const MAX_LITERAL_BEFORE_LOGIN: usize = 4 * 1024;

/// Checks a script; the error text (with its line) goes back to the client.
pub type Validator = fn(&[u8]) -> Result<(), String>;

/// How a listener's sessions behave.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Named in the greeting.
    pub hostname: String,
    /// STARTTLS can be offered (a certificate is configured).
    pub tls_available: bool,
    /// AUTHENTICATE is allowed without TLS (tests and closed networks only).
    pub plaintext_without_tls: bool,
    /// Largest script.
    pub max_script_size: usize,
    /// Most scripts per user.
    pub max_scripts: usize,
    /// Failed logins after which the session ends.
    pub max_auth_failures: u32,
    /// The Sieve extensions the server runs, space-separated, for the `SIEVE` capability.
    pub extensions: String,
    /// Most redirects one script may do (the `MAXREDIRECTS` capability).
    pub max_redirects: u32,
    /// Parses a script the way delivery will.
    pub validate: Validator,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send these bytes (maybe none), then read more input.
    Reply(Vec<u8>),
    /// Send these bytes, then close.
    Close(Vec<u8>),
    /// Do this, then call [`Session::complete`].
    Action(Action),
}

/// I/O the session needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Check the password: [`Outcome::Authenticated`], [`Outcome::BadCredentials`] or [`Outcome::Unavailable`].
    Authenticate { user: String, password: Secret },
    /// Send `reply`, drop input read past it (it came in the clear), run the handshake, then
    /// [`Outcome::TlsStarted`]; on a failed handshake close without calling back.
    StartTls { reply: Vec<u8> },
    /// Read the logged-in user's files: [`Outcome::Files`] or [`Outcome::Unavailable`].
    Load,
    /// Write (`Some`) or remove (`None`) these of the user's files, in order:
    /// [`Outcome::Written`] or [`Outcome::Unavailable`].
    Write(Vec<(String, Option<Bytes>)>),
}

/// The result of an [`Action`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The canonical login.
    Authenticated(String),
    BadCredentials,
    /// The check, the read or the write failed; the client may try again.
    Unavailable,
    TlsStarted,
    Files(Vec<sirms_storage::UserFile>),
    Written,
}

/// A command waiting for the user's scripts, or for its writes.
#[derive(Debug)]
enum Pending {
    Put {
        name: String,
        script: Vec<u8>,
    },
    List,
    SetActive(String),
    Get(String),
    Delete(String),
    Rename {
        from: String,
        to: String,
    },
    HaveSpace {
        name: String,
        size: u64,
    },
    /// Writes are out; OK when they are done.
    Writing,
}

#[derive(Debug)]
enum State {
    Anonymous,
    /// AUTHENTICATE "PLAIN" sent no initial response: the next line is it.
    SaslResponse,
    Authenticated,
    Waiting(Pending),
    /// Out: a password check or the handshake.
    Busy,
    Closed,
}

/// One session.
pub struct Session {
    config: SessionConfig,
    tls: bool,
    state: State,
    user: Option<String>,
    auth_failures: u32,
}

impl Session {
    /// A new session; `tls` on implicit-TLS listeners.
    pub fn new(config: SessionConfig, tls: bool) -> Session {
        Session { config, tls, state: State::Anonymous, user: None, auth_failures: 0 }
    }

    /// The capability listing and the greeting's OK.
    pub fn greeting(&self) -> Vec<u8> {
        let mut out = self.capabilities();
        reply::ok(&mut out, None, &format!("{} ManageSieve ready", self.config.hostname));
        out
    }

    /// The logged-in user.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn capabilities(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |name: &str, value: Option<&str>| {
            reply::string(&mut out, name.as_bytes());
            if let Some(value) = value {
                out.push(b' ');
                reply::string(&mut out, value.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        };
        line("IMPLEMENTATION", Some("SIRMS"));
        let sasl = if self.tls || self.config.plaintext_without_tls { "PLAIN" } else { "" };
        line("SASL", Some(sasl));
        line("SIEVE", Some(&self.config.extensions));
        if !self.tls && self.config.tls_available && self.user.is_none() {
            line("STARTTLS", None);
        }
        line("MAXREDIRECTS", Some(&self.config.max_redirects.to_string()));
        if let Some(user) = &self.user {
            line("OWNER", Some(user));
        }
        line("VERSION", Some("1.0"));
        out
    }

    /// Handles the command at the start of `input`: how many bytes it took, and what next
    /// (`Reply` of nothing with 0 bytes taken: read more).
    pub fn input(&mut self, input: &[u8]) -> (usize, Next) {
        let max_literal = if self.user.is_some() { self.config.max_script_size } else { MAX_LITERAL_BEFORE_LOGIN };
        if matches!(self.state, State::SaslResponse) {
            return match command::parse_response(input, max_literal) {
                Response::Incomplete => (0, Next::Reply(Vec::new())),
                Response::Invalid(used) => (used, self.auth_failed(Some("invalid SASL response"))),
                Response::Text(text, used) => (used, self.sasl_plain(text.expose().as_bytes())),
            };
        }
        match command::parse(input, max_literal) {
            Parsed::Incomplete => (0, Next::Reply(Vec::new())),
            Parsed::Invalid(e @ CommandError::TooLong(_), used) => {
                let mut out = Vec::new();
                reply::bye(&mut out, None, &e.to_string());
                self.state = State::Closed;
                (used, Next::Close(out))
            }
            Parsed::Invalid(e, used) => {
                let mut out = Vec::new();
                reply::no(&mut out, None, &e.to_string());
                (used, Next::Reply(out))
            }
            Parsed::Command(command, used) => (used, self.command(command)),
        }
    }

    fn command(&mut self, command: Command) -> Next {
        let mut out = Vec::new();
        match (&self.state, command) {
            (State::Closed | State::Busy | State::Waiting(_) | State::SaslResponse, _) => {
                // The driver runs one command at a time: nothing arrives here meanwhile.
                return Next::Close(out);
            }
            (_, Command::Logout) => {
                reply::ok(&mut out, None, "bye");
                self.state = State::Closed;
                return Next::Close(out);
            }
            (_, Command::Capability) => {
                out = self.capabilities();
                reply::ok(&mut out, None, "capabilities listed");
            }
            (_, Command::Noop(tag)) => match tag {
                Some(tag) => reply::ok_tag(&mut out, &tag),
                None => reply::ok(&mut out, None, "done"),
            },
            (State::Anonymous, Command::StartTls) if !self.tls && self.config.tls_available => {
                reply::ok(&mut out, None, "begin TLS negotiation now");
                self.state = State::Busy;
                return Next::Action(Action::StartTls { reply: out });
            }
            (_, Command::StartTls) => reply::no(&mut out, None, "TLS is not available now"),
            (State::Anonymous, Command::Authenticate { mechanism, initial }) => {
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    reply::no(&mut out, None, "only the PLAIN mechanism is supported");
                } else if !self.tls && !self.config.plaintext_without_tls {
                    reply::no(&mut out, Some("ENCRYPT-NEEDED"), "use STARTTLS first");
                } else if let Some(initial) = initial {
                    return self.sasl_plain(initial.expose().as_bytes());
                } else {
                    self.state = State::SaslResponse;
                    reply::string(&mut out, b"");
                    out.extend_from_slice(b"\r\n");
                }
            }
            (State::Anonymous, _) => reply::no(&mut out, None, "log in first"),
            (State::Authenticated, Command::Authenticate { .. }) => reply::no(&mut out, None, "already logged in"),
            (State::Authenticated, Command::Unauthenticate) => {
                self.user = None;
                self.state = State::Anonymous;
                reply::ok(&mut out, None, "logged out; log in again");
            }
            (State::Authenticated, Command::CheckScript(script)) => match (self.config.validate)(&script) {
                Ok(()) => reply::ok(&mut out, None, "script is valid"),
                Err(why) => reply::no(&mut out, None, &why),
            },
            (State::Authenticated, Command::PutScript { name, script }) => {
                if let Some(refusal) = self.refuse_script(&name, script.len() as u64) {
                    return refusal;
                }
                if let Err(why) = (self.config.validate)(&script) {
                    reply::no(&mut out, None, &why);
                    return Next::Reply(out);
                }
                return self.load(Pending::Put { name, script });
            }
            (State::Authenticated, Command::HaveSpace { name, size }) => {
                if let Some(refusal) = self.refuse_script(&name, size) {
                    return refusal;
                }
                return self.load(Pending::HaveSpace { name, size });
            }
            (State::Authenticated, Command::ListScripts) => return self.load(Pending::List),
            (State::Authenticated, Command::SetActive(name)) => return self.load(Pending::SetActive(name)),
            (State::Authenticated, Command::GetScript(name)) => return self.load(Pending::Get(name)),
            (State::Authenticated, Command::DeleteScript(name)) => return self.load(Pending::Delete(name)),
            (State::Authenticated, Command::RenameScript { from, to }) => {
                if !scripts::valid_name(&to) {
                    reply::no(&mut out, None, "invalid script name");
                    return Next::Reply(out);
                }
                return self.load(Pending::Rename { from, to });
            }
        }
        Next::Reply(out)
    }

    /// A refusal for a script named `name` of `size` octets, before looking at the others.
    fn refuse_script(&self, name: &str, size: u64) -> Option<Next> {
        let mut out = Vec::new();
        if !scripts::valid_name(name) {
            reply::no(&mut out, None, "invalid script name");
        } else if size > self.config.max_script_size as u64 {
            let text = format!("scripts are limited to {} octets", self.config.max_script_size);
            reply::no(&mut out, Some("QUOTA/MAXSIZE"), &text);
        } else {
            return None;
        }
        Some(Next::Reply(out))
    }

    fn load(&mut self, pending: Pending) -> Next {
        self.state = State::Waiting(pending);
        Next::Action(Action::Load)
    }

    fn sasl_plain(&mut self, response: &[u8]) -> Next {
        if response == b"*" {
            self.state = State::Anonymous;
            let mut out = Vec::new();
            reply::no(&mut out, None, "authentication cancelled");
            return Next::Reply(out);
        }
        match sasl::decode_plain(response) {
            Ok(credentials) => {
                self.state = State::Busy;
                Next::Action(Action::Authenticate { user: credentials.user, password: credentials.password })
            }
            Err(e) => self.auth_failed(Some(&e.to_string())),
        }
    }

    fn auth_failed(&mut self, why: Option<&str>) -> Next {
        self.auth_failures += 1;
        self.state = State::Anonymous;
        let mut out = Vec::new();
        if self.auth_failures >= self.config.max_auth_failures {
            self.state = State::Closed;
            reply::bye(&mut out, None, "too many failed logins");
            return Next::Close(out);
        }
        reply::no(&mut out, None, why.unwrap_or("authentication failed"));
        Next::Reply(out)
    }

    /// Reports an action's outcome; returns what next.
    pub fn complete(&mut self, outcome: Outcome) -> Next {
        let mut out = Vec::new();
        let state = std::mem::replace(&mut self.state, State::Closed);
        match (state, outcome) {
            (State::Busy, Outcome::Authenticated(user)) => {
                self.user = Some(user);
                self.state = State::Authenticated;
                reply::ok(&mut out, None, "logged in");
            }
            (State::Busy, Outcome::BadCredentials) => return self.auth_failed(None),
            (State::Busy, Outcome::TlsStarted) => {
                // RFC 5804 §2.2: the capabilities again, as they are under TLS.
                self.tls = true;
                self.state = State::Anonymous;
                out = self.capabilities();
                reply::ok(&mut out, None, "TLS started");
            }
            (State::Busy, _) => {
                self.state = State::Anonymous;
                reply::no(&mut out, Some("TRYLATER"), "login temporarily unavailable");
            }
            (State::Waiting(_), Outcome::Unavailable) => {
                self.state = self.logged_in();
                reply::no(&mut out, Some("TRYLATER"), "scripts temporarily unavailable");
            }
            (State::Waiting(Pending::Writing), Outcome::Written) => {
                self.state = self.logged_in();
                reply::ok(&mut out, None, "done");
            }
            (State::Waiting(pending), Outcome::Files(files)) => {
                self.state = self.logged_in();
                return self.decide(pending, Scripts::from_files(&files));
            }
            (_, _) => return Next::Close(out),
        }
        Next::Reply(out)
    }

    fn logged_in(&self) -> State {
        if self.user.is_some() { State::Authenticated } else { State::Anonymous }
    }

    /// Answers `pending` from the user's scripts, or sends the writes it takes.
    fn decide(&mut self, pending: Pending, scripts: Scripts) -> Next {
        let mut out = Vec::new();
        let exists = |name: &str| scripts.get(name).is_some();
        let is_active = |name: &str| scripts.active.as_deref() == Some(name);
        let writes = match pending {
            Pending::List => {
                for (name, _) in &scripts.scripts {
                    reply::string(&mut out, name.as_bytes());
                    if is_active(name) {
                        out.extend_from_slice(b" ACTIVE");
                    }
                    out.extend_from_slice(b"\r\n");
                }
                reply::ok(&mut out, None, "listed");
                return Next::Reply(out);
            }
            Pending::Get(name) => {
                match scripts.get(&name) {
                    Some(script) => {
                        reply::literal(&mut out, script);
                        out.extend_from_slice(b"\r\n");
                        reply::ok(&mut out, None, "script follows");
                    }
                    None => reply::no(&mut out, Some("NONEXISTENT"), "no such script"),
                }
                return Next::Reply(out);
            }
            Pending::HaveSpace { name, .. } | Pending::Put { name, .. }
                if !exists(&name) && scripts.scripts.len() >= self.config.max_scripts =>
            {
                let text = format!("at most {} scripts; delete one first", self.config.max_scripts);
                reply::no(&mut out, Some("QUOTA/MAXSCRIPTS"), &text);
                return Next::Reply(out);
            }
            Pending::HaveSpace { size, .. } => {
                let _ = size;
                reply::ok(&mut out, None, "putscript would succeed");
                return Next::Reply(out);
            }
            Pending::Put { name, script } => vec![(scripts::file_name(&name), Some(Bytes::from(script)))],
            Pending::SetActive(name) if name.is_empty() => vec![(ACTIVE_FILE.to_string(), None)],
            Pending::SetActive(name) if exists(&name) => vec![(ACTIVE_FILE.to_string(), Some(Bytes::from(name)))],
            Pending::Delete(name) if is_active(&name) => {
                reply::no(&mut out, Some("ACTIVE"), "the active script cannot be deleted; deactivate it first");
                return Next::Reply(out);
            }
            Pending::Delete(name) if exists(&name) => vec![(scripts::file_name(&name), None)],
            Pending::Rename { to, .. } if exists(&to) => {
                reply::no(&mut out, Some("ALREADYEXISTS"), "a script has that name");
                return Next::Reply(out);
            }
            Pending::Rename { from, to } if exists(&from) => {
                // New name first, the old one last: a write cut short leaves the script twice,
                // never nowhere, and the active marker never names a script that is gone.
                let mut writes = vec![(scripts::file_name(&to), scripts.get(&from).cloned())];
                if is_active(&from) {
                    writes.push((ACTIVE_FILE.to_string(), Some(Bytes::from(to))));
                }
                writes.push((scripts::file_name(&from), None));
                writes
            }
            Pending::SetActive(_) | Pending::Delete(_) | Pending::Rename { .. } => {
                reply::no(&mut out, Some("NONEXISTENT"), "no such script");
                return Next::Reply(out);
            }
            Pending::Writing => return Next::Close(out),
        };
        self.state = State::Waiting(Pending::Writing);
        Next::Action(Action::Write(writes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn config() -> SessionConfig {
        SessionConfig {
            hostname: "mx.test".into(),
            tls_available: true,
            plaintext_without_tls: false,
            max_script_size: 100,
            max_scripts: 2,
            max_auth_failures: 2,
            extensions: "fileinto vacation".into(),
            max_redirects: 4,
            validate: |s| if s.starts_with(b"bad") { Err("line 1: unknown command \"bad\"".into()) } else { Ok(()) },
        }
    }

    /// Feeds `input` whole; returns the reply text and the action asked for, if any.
    fn feed(s: &mut Session, input: &str) -> (String, Option<Action>) {
        let (used, next) = s.input(input.as_bytes());
        assert_eq!(used, input.len(), "{input:?} not taken whole");
        match next {
            Next::Reply(out) | Next::Close(out) => (String::from_utf8(out).unwrap(), None),
            Next::Action(action) => (String::new(), Some(action)),
        }
    }

    fn text(next: Next) -> String {
        match next {
            Next::Reply(out) | Next::Close(out) => String::from_utf8(out).unwrap(),
            Next::Action(a) => panic!("unexpected action {a:?}"),
        }
    }

    fn logged_in() -> Session {
        let mut s = Session::new(config(), true);
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0alice@example.test\0pw");
        let (_, action) = feed(&mut s, &format!("AUTHENTICATE \"PLAIN\" \"{plain}\"\r\n"));
        assert!(matches!(action, Some(Action::Authenticate { ref user, .. }) if user == "alice@example.test"));
        assert_eq!(text(s.complete(Outcome::Authenticated("alice@example.test".into()))), "OK \"logged in\"\r\n");
        s
    }

    fn file(name: &str, content: &str) -> sirms_storage::UserFile {
        sirms_storage::UserFile { name: name.into(), content: Bytes::from(content.to_string()) }
    }

    #[test]
    fn the_greeting_offers_starttls_and_hides_plain_until_tls() {
        let s = Session::new(config(), false);
        let greeting = String::from_utf8(s.greeting()).unwrap();
        assert!(greeting.contains("\"SASL\" \"\"\r\n") && greeting.contains("\"STARTTLS\"\r\n"), "{greeting}");
        assert!(
            greeting.contains("\"SIEVE\" \"fileinto vacation\"")
                && greeting.ends_with("OK \"mx.test ManageSieve ready\"\r\n")
        );
        let mut s = Session::new(config(), false);
        assert!(feed(&mut s, "AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n").0.starts_with("NO (ENCRYPT-NEEDED)"));
        let (_, action) = feed(&mut s, "STARTTLS\r\n");
        assert!(matches!(action, Some(Action::StartTls { .. })));
        let after = text(s.complete(Outcome::TlsStarted));
        assert!(after.contains("\"SASL\" \"PLAIN\"") && !after.contains("STARTTLS"), "{after}");
    }

    #[test]
    fn put_list_get_activate_rename_and_delete() {
        let mut s = logged_in();
        let (_, action) = feed(&mut s, "PUTSCRIPT \"rules\" {5+}\r\nkeep;\r\n");
        assert_eq!(action, Some(Action::Load));
        let next = s.complete(Outcome::Files(vec![]));
        assert_eq!(next, Next::Action(Action::Write(vec![("sieve.rules".into(), Some(Bytes::from_static(b"keep;")))])));
        assert_eq!(text(s.complete(Outcome::Written)), "OK \"done\"\r\n");

        let files = vec![file("sieve.rules", "keep;"), file("sieve.other", "discard;"), file(ACTIVE_FILE, "rules")];
        feed(&mut s, "LISTSCRIPTS\r\n");
        assert_eq!(
            text(s.complete(Outcome::Files(files.clone()))),
            "\"other\"\r\n\"rules\" ACTIVE\r\nOK \"listed\"\r\n"
        );
        feed(&mut s, "GETSCRIPT \"rules\"\r\n");
        assert_eq!(text(s.complete(Outcome::Files(files.clone()))), "{5}\r\nkeep;\r\nOK \"script follows\"\r\n");
        feed(&mut s, "DELETESCRIPT \"rules\"\r\n");
        assert!(text(s.complete(Outcome::Files(files.clone()))).starts_with("NO (ACTIVE)"));
        feed(&mut s, "SETACTIVE \"missing\"\r\n");
        assert!(text(s.complete(Outcome::Files(files.clone()))).starts_with("NO (NONEXISTENT)"));
        feed(&mut s, "RENAMESCRIPT \"rules\" \"other\"\r\n");
        assert!(text(s.complete(Outcome::Files(files.clone()))).starts_with("NO (ALREADYEXISTS)"));
        feed(&mut s, "RENAMESCRIPT \"rules\" \"new\"\r\n");
        let writes = s.complete(Outcome::Files(files.clone()));
        assert_eq!(
            writes,
            Next::Action(Action::Write(vec![
                ("sieve.new".into(), Some(Bytes::from_static(b"keep;"))),
                (ACTIVE_FILE.into(), Some(Bytes::from_static(b"new"))),
                ("sieve.rules".into(), None),
            ]))
        );
        s.complete(Outcome::Written);
        feed(&mut s, "PUTSCRIPT \"third\" {5+}\r\nkeep;\r\n");
        assert!(text(s.complete(Outcome::Files(files))).starts_with("NO (QUOTA/MAXSCRIPTS)"));
    }

    #[test]
    fn bad_scripts_are_refused_with_their_line_and_big_ones_before_they_are_sent() {
        let mut s = logged_in();
        assert_eq!(feed(&mut s, "CHECKSCRIPT {6+}\r\nbad x;\r\n").0, "NO \"line 1: unknown command \\\"bad\\\"\"\r\n");
        assert!(feed(&mut s, "PUTSCRIPT \"a\" {6+}\r\nbad x;\r\n").0.starts_with("NO \"line 1"));
        assert!(feed(&mut s, "HAVESPACE \"a\" 101\r\n").0.starts_with("NO (QUOTA/MAXSIZE)"));
        let (used, next) = s.input(b"PUTSCRIPT \"a\" {101+}\r\n");
        assert!(used > 0 && matches!(next, Next::Close(ref out) if out.starts_with(b"BYE")));
    }

    #[test]
    fn logins_fail_closed_after_the_limit_and_literals_stay_small_before_login() {
        let mut s = Session::new(config(), true);
        feed(&mut s, "AUTHENTICATE \"PLAIN\"\r\n");
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0a\0b");
        let (_, action) = feed(&mut s, &format!("\"{plain}\"\r\n"));
        assert!(matches!(action, Some(Action::Authenticate { .. })));
        assert!(text(s.complete(Outcome::BadCredentials)).starts_with("NO"));
        assert!(feed(&mut s, "LISTSCRIPTS\r\n").0.starts_with("NO \"log in first\""));
        feed(&mut s, "AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n");
        assert!(matches!(s.complete(Outcome::BadCredentials), Next::Close(ref out) if out.starts_with(b"BYE")));
        let mut s = Session::new(config(), true);
        let (_, next) = s.input(format!("NOOP {{{}+}}\r\n", MAX_LITERAL_BEFORE_LOGIN + 1).as_bytes());
        assert!(matches!(next, Next::Close(_)));
    }
}
