//! POP3 command lines (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH) parsed into typed commands.

use std::fmt;

use thiserror::Error;

/// Longest command line the server accepts, CRLF included (RFC 2449 §4).
pub const MAX_COMMAND_LINE: usize = 255;

/// Longest ordinary argument (RFC 1939 §3).
///
/// User names, passwords and SASL initial responses are bounded only by the line: addresses are often longer than
/// 40 octets, and RFC 2449 raised the line limit precisely so that such arguments fit.
pub const MAX_ARGUMENT: usize = 40;

/// Longest SASL mechanism name (RFC 4422 §3.1).
const MAX_MECHANISM: usize = 20;

/// A credential from the client, kept out of `Debug` output so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The credential itself, for the one place that has to check it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One POP3 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS string`; the password may contain spaces (RFC 1939 §7).
    Pass(Secret),
    /// `APOP name digest`; parsed so it can be refused politely, since APOP is off.
    Apop { name: String, digest: String },
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<u32>),
    /// `RETR msg`
    Retr(u32),
    /// `DELE msg`
    Dele(u32),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `QUIT`
    Quit,
    /// `TOP msg n`
    Top { msg: u32, lines: u32 },
    /// `UIDL [msg]`
    Uidl(Option<u32>),
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
    /// `AUTH [mechanism [initial-response]]`; the mechanism is upper-cased, the response is still base64.
    Auth { mechanism: Option<String>, initial_response: Option<Secret> },
}

/// Why a command line was rejected; the `Display` text is what follows `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CommandError {
    /// Longer than [`MAX_COMMAND_LINE`] with its CRLF.
    #[error("line too long (limit is {MAX_COMMAND_LINE} octets including CRLF)")]
    LineTooLong,
    /// Nothing before the CRLF.
    #[error("empty command line")]
    Empty,
    /// A keyword this server does not implement.
    #[error("unknown command")]
    Unknown,
    /// Fewer arguments than the command needs.
    #[error("missing argument")]
    MissingArgument,
    /// More arguments than the command takes.
    #[error("too many arguments")]
    TooManyArguments,
    /// Two spaces in a row, or a space at the end of the line.
    #[error("empty argument (separate arguments with a single space)")]
    EmptyArgument,
    /// An argument longer than [`MAX_ARGUMENT`] where RFC 1939 sets that limit.
    #[error("argument too long (limit is {MAX_ARGUMENT} octets)")]
    ArgumentTooLong,
    /// A message number or line count that is not plain decimal or does not fit in 32 bits.
    #[error("invalid number")]
    InvalidNumber,
    /// A control character anywhere, or non-ASCII where only ASCII is allowed.
    #[error("invalid character in command line")]
    InvalidCharacter,
    /// A user name or password that is not UTF-8.
    #[error("argument is not valid UTF-8")]
    InvalidUtf8,
    /// An APOP digest that is not 32 hex digits.
    #[error("invalid APOP digest")]
    InvalidDigest,
    /// A SASL mechanism name outside RFC 4422's syntax.
    #[error("invalid SASL mechanism name")]
    InvalidMechanism,
}

impl Command {
    /// Parses one command line, given without its CRLF.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.len() > MAX_COMMAND_LINE - 2 {
            return Err(CommandError::LineTooLong);
        }
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        // Control characters (NUL, CR, LF, TAB, DEL) never belong in a command; rejecting them here means no later
        // step can pass them into a log line, a user name or a store lookup.
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(CommandError::InvalidCharacter);
        }
        let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], Some(&line[space + 1..])),
            None => (line, None),
        };
        let is = |name: &str| keyword.eq_ignore_ascii_case(name.as_bytes());

        if is("USER") {
            let [name] = arguments(rest, 1)?.fixed()?;
            Ok(Command::User(text(name)?))
        } else if is("PASS") {
            match rest {
                Some(password) if !password.is_empty() => Ok(Command::Pass(Secret(text(password)?))),
                _ => Err(CommandError::MissingArgument),
            }
        } else if is("APOP") {
            let [name, digest] = arguments(rest, 2)?.fixed()?;
            let digest = ascii(digest)?;
            if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CommandError::InvalidDigest);
            }
            Ok(Command::Apop { name: text(name)?, digest: digest.to_ascii_lowercase() })
        } else if is("STAT") {
            arguments(rest, 0)?.fixed::<0>().map(|_| Command::Stat)
        } else if is("LIST") {
            arguments(rest, 1)?.optional_number().map(Command::List)
        } else if is("RETR") {
            let [msg] = arguments(rest, 1)?.fixed()?;
            Ok(Command::Retr(number(msg)?))
        } else if is("DELE") {
            let [msg] = arguments(rest, 1)?.fixed()?;
            Ok(Command::Dele(number(msg)?))
        } else if is("NOOP") {
            arguments(rest, 0)?.fixed::<0>().map(|_| Command::Noop)
        } else if is("RSET") {
            arguments(rest, 0)?.fixed::<0>().map(|_| Command::Rset)
        } else if is("QUIT") {
            arguments(rest, 0)?.fixed::<0>().map(|_| Command::Quit)
        } else if is("TOP") {
            let [msg, lines] = arguments(rest, 2)?.fixed()?;
            Ok(Command::Top { msg: number(msg)?, lines: number(lines)? })
        } else if is("UIDL") {
            arguments(rest, 1)?.optional_number().map(Command::Uidl)
        } else if is("CAPA") {
            arguments(rest, 0)?.fixed::<0>().map(|_| Command::Capa)
        } else if is("STLS") {
            arguments(rest, 0)?.fixed::<0>().map(|_| Command::Stls)
        } else if is("AUTH") {
            let args = arguments(rest, 2)?;
            let mechanism = args.get(0).map(mechanism).transpose()?;
            let initial_response = args.get(1).map(|r| ascii(r).map(|r| Secret(r.to_owned()))).transpose()?;
            Ok(Command::Auth { mechanism, initial_response })
        } else {
            Err(CommandError::Unknown)
        }
    }
}

/// The space-separated arguments after a keyword, at most as many as the command takes.
struct Arguments<'a> {
    items: [&'a [u8]; 2],
    len: usize,
}

/// Splits `rest` into arguments, rejecting empty ones and more than `max`.
fn arguments(rest: Option<&[u8]>, max: usize) -> Result<Arguments<'_>, CommandError> {
    let mut args = Arguments { items: [&[]; 2], len: 0 };
    let Some(rest) = rest else { return Ok(args) };
    for arg in rest.split(|&b| b == b' ') {
        if arg.is_empty() {
            return Err(CommandError::EmptyArgument);
        }
        if args.len == max || args.len == args.items.len() {
            return Err(CommandError::TooManyArguments);
        }
        args.items[args.len] = arg;
        args.len += 1;
    }
    Ok(args)
}

impl<'a> Arguments<'a> {
    /// Exactly `N` arguments.
    fn fixed<const N: usize>(&self) -> Result<[&'a [u8]; N], CommandError> {
        if self.len < N {
            return Err(CommandError::MissingArgument);
        }
        if self.len > N {
            return Err(CommandError::TooManyArguments);
        }
        let mut out: [&[u8]; N] = [&[]; N];
        out.copy_from_slice(&self.items[..N]);
        Ok(out)
    }

    /// The argument at `index`, if the client gave that many.
    fn get(&self, index: usize) -> Option<&'a [u8]> {
        self.items[..self.len].get(index).copied()
    }

    /// Zero or one message number.
    fn optional_number(&self) -> Result<Option<u32>, CommandError> {
        self.get(0).map(number).transpose()
    }
}

/// A message number or line count: decimal digits only, so `+1`, `-1`, `0x1` and ` 1` are all rejected.
fn number(arg: &[u8]) -> Result<u32, CommandError> {
    if arg.len() > MAX_ARGUMENT {
        return Err(CommandError::ArgumentTooLong);
    }
    if arg.is_empty() {
        return Err(CommandError::InvalidNumber);
    }
    arg.iter().try_fold(0u32, |acc, &b| {
        let digit = if b.is_ascii_digit() { u32::from(b - b'0') } else { return Err(CommandError::InvalidNumber) };
        acc.checked_mul(10).and_then(|n| n.checked_add(digit)).ok_or(CommandError::InvalidNumber)
    })
}

/// An argument that must be printable ASCII (control characters were already rejected for the whole line).
fn ascii(arg: &[u8]) -> Result<&str, CommandError> {
    if !arg.is_ascii() {
        return Err(CommandError::InvalidCharacter);
    }
    std::str::from_utf8(arg).map_err(|_| CommandError::InvalidCharacter)
}

/// A user name or password: UTF-8 is allowed there because people put it in both.
fn text(arg: &[u8]) -> Result<String, CommandError> {
    std::str::from_utf8(arg).map(str::to_owned).map_err(|_| CommandError::InvalidUtf8)
}

/// A SASL mechanism name (RFC 4422 §3.1: upper-case letters, digits, `-` and `_`), upper-cased.
fn mechanism(arg: &[u8]) -> Result<String, CommandError> {
    let valid = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    if arg.len() > MAX_MECHANISM || !arg.iter().all(valid) {
        return Err(CommandError::InvalidMechanism);
    }
    ascii(arg).map(str::to_ascii_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, CommandError> {
        Command::parse(line.as_bytes())
    }

    #[test]
    fn simple_commands_any_case() {
        for (line, cmd) in [
            ("STAT", Command::Stat),
            ("stat", Command::Stat),
            ("Noop", Command::Noop),
            ("rSeT", Command::Rset),
            ("QUIT", Command::Quit),
            ("capa", Command::Capa),
            ("STLS", Command::Stls),
        ] {
            assert_eq!(parse(line), Ok(cmd), "{line}");
        }
    }

    #[test]
    fn numbered_commands() {
        assert_eq!(parse("LIST"), Ok(Command::List(None)));
        assert_eq!(parse("list 2"), Ok(Command::List(Some(2))));
        assert_eq!(parse("UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(parse("UIDL 7"), Ok(Command::Uidl(Some(7))));
        assert_eq!(parse("RETR 1"), Ok(Command::Retr(1)));
        assert_eq!(parse("DELE 0001"), Ok(Command::Dele(1)));
        assert_eq!(parse("TOP 1 10"), Ok(Command::Top { msg: 1, lines: 10 }));
        assert_eq!(parse("TOP 1 0"), Ok(Command::Top { msg: 1, lines: 0 }));
        assert_eq!(parse("RETR 4294967295"), Ok(Command::Retr(u32::MAX)));
    }

    #[test]
    fn strict_numbers() {
        for line in
            ["RETR +1", "RETR -1", "RETR 0x1", "RETR 1a", "RETR 4294967296", "RETR 99999999999999999999", "TOP 1 -0"]
        {
            assert_eq!(parse(line), Err(CommandError::InvalidNumber), "{line}");
        }
        assert_eq!(parse(&format!("RETR {}", "1".repeat(41))), Err(CommandError::ArgumentTooLong));
    }

    #[test]
    fn argument_counts_and_separators() {
        assert_eq!(parse("RETR"), Err(CommandError::MissingArgument));
        assert_eq!(parse("TOP 1"), Err(CommandError::MissingArgument));
        assert_eq!(parse("RETR 1 2"), Err(CommandError::TooManyArguments));
        assert_eq!(parse("LIST 1 2"), Err(CommandError::TooManyArguments));
        assert_eq!(parse("TOP 1 2 3"), Err(CommandError::TooManyArguments));
        assert_eq!(parse("STAT x"), Err(CommandError::TooManyArguments));
        assert_eq!(parse("STAT "), Err(CommandError::EmptyArgument));
        assert_eq!(parse("RETR  1"), Err(CommandError::EmptyArgument));
        assert_eq!(parse("RETR 1 "), Err(CommandError::EmptyArgument));
        assert_eq!(parse("USER a b"), Err(CommandError::TooManyArguments));
        assert_eq!(parse("PASS"), Err(CommandError::MissingArgument));
        assert_eq!(parse("PASS "), Err(CommandError::MissingArgument));
    }

    #[test]
    fn user_and_pass() {
        assert_eq!(parse("USER mrose"), Ok(Command::User("mrose".into())));
        assert_eq!(parse("user jörg@example.org"), Ok(Command::User("jörg@example.org".into())));
        let long = format!("USER {}@example.org", "a".repeat(60));
        assert!(matches!(parse(&long), Ok(Command::User(_))));
        assert_eq!(parse("PASS secret with  spaces "), Ok(Command::Pass(Secret::new("secret with  spaces "))));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let debug = format!("{:?}", parse("PASS hunter2"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn apop_parses() {
        assert_eq!(
            parse("APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Ok(Command::Apop { name: "mrose".into(), digest: "c4c9334bac560ecc979e58001b3e22fb".into() })
        );
        assert_eq!(parse("APOP mrose c4c9"), Err(CommandError::InvalidDigest));
        assert_eq!(parse("APOP mrose"), Err(CommandError::MissingArgument));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(parse("AUTH"), Ok(Command::Auth { mechanism: None, initial_response: None }));
        assert_eq!(parse("auth plain"), Ok(Command::Auth { mechanism: Some("PLAIN".into()), initial_response: None }));
        assert_eq!(
            parse("AUTH PLAIN AHRlc3QAdGVzdA=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some(Secret::new("AHRlc3QAdGVzdA=="))
            })
        );
        assert_eq!(
            parse("AUTH PLAIN ="),
            Ok(Command::Auth { mechanism: Some("PLAIN".into()), initial_response: Some(Secret::new("=")) })
        );
        assert_eq!(parse("AUTH PL/AIN"), Err(CommandError::InvalidMechanism));
        assert_eq!(parse(&format!("AUTH {}", "A".repeat(21))), Err(CommandError::InvalidMechanism));
        assert_eq!(parse("AUTH PLAIN a b"), Err(CommandError::TooManyArguments));
        // A long initial response is fine as long as the line fits.
        let long = format!("AUTH PLAIN {}", "A".repeat(200));
        assert!(matches!(parse(&long), Ok(Command::Auth { .. })));
    }

    #[test]
    fn line_limit_counts_crlf() {
        let fits = format!("PASS {}", "x".repeat(MAX_COMMAND_LINE - 2 - 5));
        assert_eq!(fits.len() + 2, MAX_COMMAND_LINE);
        assert!(parse(&fits).is_ok());
        let over = format!("{fits}x");
        assert_eq!(parse(&over), Err(CommandError::LineTooLong));
        assert_eq!(Command::parse(&[b'A'; 10_000]), Err(CommandError::LineTooLong));
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(parse("HELO"), Err(CommandError::Unknown));
        assert_eq!(parse("STATS"), Err(CommandError::Unknown));
        assert_eq!(parse(" STAT"), Err(CommandError::Unknown));
        assert_eq!(parse("ST"), Err(CommandError::Unknown));
    }

    #[test]
    fn control_characters_and_garbage() {
        assert_eq!(Command::parse(b"STAT\0"), Err(CommandError::InvalidCharacter));
        assert_eq!(Command::parse(b"\0"), Err(CommandError::InvalidCharacter));
        assert_eq!(Command::parse(b"RETR 1\r"), Err(CommandError::InvalidCharacter));
        assert_eq!(Command::parse(b"RETR\t1"), Err(CommandError::InvalidCharacter));
        assert_eq!(Command::parse(b"PASS a\x7fb"), Err(CommandError::InvalidCharacter));
        assert_eq!(Command::parse(b"\xff\xfe"), Err(CommandError::Unknown));
        assert_eq!(Command::parse(b"USER \xff"), Err(CommandError::InvalidUtf8));
        assert_eq!(Command::parse(b"PASS \xc3"), Err(CommandError::InvalidUtf8));
        assert_eq!(Command::parse(b"AUTH PLAIN \xc3\xa9"), Err(CommandError::InvalidCharacter));
        assert_eq!(Command::parse("RETR ١".as_bytes()), Err(CommandError::InvalidNumber));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every short line over an alphabet of interesting bytes.
        let alphabet: &[u8] = b"AELRSTUOP 0159\0\r\n\xff.+-=*";
        let mut line = Vec::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for prefix in [&b""[..], b"RETR ", b"TOP ", b"AUTH ", b"USER ", b"PASS "] {
                        line.clear();
                        line.extend_from_slice(prefix);
                        line.extend_from_slice(&[*a, *b, *c]);
                        let _ = Command::parse(&line);
                    }
                }
            }
        }
    }
}
