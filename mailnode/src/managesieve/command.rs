//! ManageSieve commands (RFC 5804 §2) from bytes: atoms, quoted strings and literals
//! (`{N+}` and `{N}`), each command ended by CRLF. Pure and bounded, so it tests and fuzzes
//! without a socket.

use crate::pop3::Secret;

/// Longest command outside its literals.
pub const MAX_LINE: usize = 8 * 1024;
/// Most arguments a command may have (RENAMESCRIPT has the most: two).
const MAX_ARGUMENTS: usize = 4;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `AUTHENTICATE mechanism [initial-response]`.
    Authenticate {
        mechanism: String,
        initial: Option<Secret>,
    },
    StartTls,
    Logout,
    Capability,
    /// `NOOP [tag]`: the tag comes back in the reply's `TAG` code.
    Noop(Option<String>),
    Unauthenticate,
    HaveSpace {
        name: String,
        size: u64,
    },
    PutScript {
        name: String,
        script: Vec<u8>,
    },
    ListScripts,
    /// An empty name deactivates every script.
    SetActive(String),
    GetScript(String),
    DeleteScript(String),
    RenameScript {
        from: String,
        to: String,
    },
    CheckScript(Vec<u8>),
}

/// What a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole command yet: read more.
    Incomplete,
    /// A command, and how many bytes it took.
    Command(Command, usize),
    /// A command that cannot be, and how many bytes to drop (through its line's end) to go on.
    Invalid(CommandError, usize),
}

/// Why a command was refused; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command")]
    Unknown,
    #[error("bad arguments for {0}")]
    Arguments(&'static str),
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A literal or line over the limit; the session closes after saying so.
    #[error("command too long: at most {0} octets")]
    TooLong(usize),
}

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(String),
    Number(u64),
    String(Vec<u8>),
}

/// Parses the command at the start of `input`; `max_literal` bounds every literal (small
/// before login, a script's limit after).
pub fn parse(input: &[u8], max_literal: usize) -> Parsed {
    match line(input, max_literal) {
        Line::Incomplete => Parsed::Incomplete,
        Line::Invalid(e, used) => Parsed::Invalid(e, used),
        Line::Tokens(tokens, used) => match command(tokens) {
            Ok(command) => Parsed::Command(command, used),
            Err(e) => Parsed::Invalid(e, used),
        },
    }
}

/// A client's answer to a SASL challenge (RFC 5804 §2.1): one string on its line.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    Incomplete,
    /// The text, and how many bytes it took.
    Text(Secret, usize),
    /// Not a string; how many bytes to drop.
    Invalid(usize),
}

/// Parses a SASL response at the start of `input`.
pub fn parse_response(input: &[u8], max_literal: usize) -> Response {
    match line(input, max_literal) {
        Line::Incomplete => Response::Incomplete,
        Line::Invalid(_, used) => Response::Invalid(used),
        Line::Tokens(tokens, used) => match tokens.as_slice() {
            [Token::String(text)] => match String::from_utf8(text.clone()) {
                Ok(text) => Response::Text(Secret::new(text), used),
                Err(_) => Response::Invalid(used),
            },
            _ => Response::Invalid(used),
        },
    }
}

/// What a line of tokens parsed to.
enum Line {
    Incomplete,
    Invalid(CommandError, usize),
    Tokens(Vec<Token>, usize),
}

/// The tokens of the line at the start of `input`, through its CRLF.
fn line(input: &[u8], max_literal: usize) -> Line {
    let mut at = 0;
    let mut tokens: Vec<Token> = Vec::new();
    let mut outside_literals = 0;
    loop {
        // Bytes of the command line proper count towards MAX_LINE; literals have their own bound.
        while input.get(at) == Some(&b' ') {
            at += 1;
            outside_literals += 1;
        }
        let Some(&byte) = input.get(at) else {
            return too_long_or_incomplete(input, outside_literals);
        };
        if outside_literals > MAX_LINE {
            return Line::Invalid(CommandError::TooLong(MAX_LINE), drop_line(input));
        }
        match byte {
            b'\r' | b'\n' => {
                let end = if byte == b'\r' {
                    match input.get(at + 1) {
                        Some(b'\n') => at + 2,
                        Some(_) => return Line::Invalid(CommandError::Syntax("CR without LF"), drop_line(input)),
                        None => return Line::Incomplete,
                    }
                } else {
                    at + 1
                };
                return Line::Tokens(tokens, end);
            }
            b'"' => match quoted(&input[at + 1..]) {
                Ok(Some((text, used))) => {
                    tokens.push(Token::String(text));
                    at += 1 + used;
                    outside_literals += 1 + used;
                }
                Ok(None) => return too_long_or_incomplete(input, outside_literals + input.len() - at),
                Err(e) => return Line::Invalid(e, drop_line(input)),
            },
            b'{' => {
                let Some(close) = input[at..].iter().position(|&b| b == b'}') else {
                    return if input.len() - at > 24 {
                        Line::Invalid(CommandError::Syntax("bad literal"), drop_line(input))
                    } else {
                        Line::Incomplete
                    };
                };
                let spec = &input[at + 1..at + close];
                let digits = spec.strip_suffix(b"+").unwrap_or(spec);
                let Some(size) = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty() && d.len() <= 10)
                    .and_then(|d| d.parse::<usize>().ok())
                else {
                    return Line::Invalid(CommandError::Syntax("bad literal"), drop_line(input));
                };
                if size > max_literal {
                    return Line::Invalid(CommandError::TooLong(max_literal), input.len());
                }
                let body = at + close + 1;
                let start = match (input.get(body), input.get(body + 1)) {
                    (Some(b'\r'), Some(b'\n')) => body + 2,
                    (Some(b'\n'), _) => body + 1,
                    (None, _) | (Some(b'\r'), None) => return Line::Incomplete,
                    _ => return Line::Invalid(CommandError::Syntax("no line end after a literal"), drop_line(input)),
                };
                let Some(bytes) = input.get(start..start + size) else { return Line::Incomplete };
                tokens.push(Token::String(bytes.to_vec()));
                at = start + size;
                outside_literals += close + 1;
            }
            _ => {
                let len =
                    input[at..].iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n')).unwrap_or(input.len() - at);
                if at + len == input.len() {
                    return too_long_or_incomplete(input, outside_literals + len);
                }
                let word = &input[at..at + len];
                let token = match std::str::from_utf8(word) {
                    Ok(w) if w.bytes().all(|b| b.is_ascii_digit()) => match w.parse() {
                        Ok(n) => Token::Number(n),
                        Err(_) => return Line::Invalid(CommandError::Syntax("number too large"), drop_line(input)),
                    },
                    Ok(w) if w.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'{' | b'}')) => {
                        Token::Atom(w.to_ascii_uppercase())
                    }
                    _ => return Line::Invalid(CommandError::Syntax("bad atom"), drop_line(input)),
                };
                tokens.push(token);
                at += len;
                outside_literals += len;
            }
        }
        if tokens.len() > MAX_ARGUMENTS + 1 {
            return Line::Invalid(CommandError::Syntax("too many arguments"), drop_line(input));
        }
    }
}

/// More input may finish the command, unless its line is already over the limit.
fn too_long_or_incomplete(input: &[u8], line: usize) -> Line {
    if line > MAX_LINE { Line::Invalid(CommandError::TooLong(MAX_LINE), input.len()) } else { Line::Incomplete }
}

/// How much to drop after a bad command: through the next line end, or everything.
fn drop_line(input: &[u8]) -> usize {
    input.iter().position(|&b| b == b'\n').map_or(input.len(), |p| p + 1)
}

/// A quoted string's text (after its opening quote) and the bytes it took with its closing
/// quote; `None` if it has not ended yet.
fn quoted(input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, CommandError> {
    let mut text = Vec::new();
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'"' => return Ok(Some((text, i + 1))),
            b'\\' => match input.get(i + 1) {
                Some(&c @ (b'"' | b'\\')) => {
                    text.push(c);
                    i += 2;
                    continue;
                }
                Some(_) => return Err(CommandError::Syntax("bad escape in a quoted string")),
                None => return Ok(None),
            },
            b'\r' | b'\n' | 0 => return Err(CommandError::Syntax("line end in a quoted string")),
            _ => text.push(b),
        }
        i += 1;
    }
    Ok(None)
}

/// The command `tokens` spell.
fn command(tokens: Vec<Token>) -> Result<Command, CommandError> {
    let mut tokens = tokens.into_iter();
    let Some(Token::Atom(name)) = tokens.next() else { return Err(CommandError::Unknown) };
    let args: Vec<Token> = tokens.collect();
    let text = |t: &Token| match t {
        Token::String(s) => String::from_utf8(s.clone()).ok(),
        _ => None,
    };
    let bytes = |t: &Token| match t {
        Token::String(s) => Some(s.clone()),
        _ => None,
    };
    let bad = |what: &'static str| CommandError::Arguments(what);
    Ok(match (name.as_str(), args.as_slice()) {
        ("AUTHENTICATE", [mechanism]) => {
            Command::Authenticate { mechanism: text(mechanism).ok_or(bad("AUTHENTICATE"))?, initial: None }
        }
        ("AUTHENTICATE", [mechanism, initial]) => Command::Authenticate {
            mechanism: text(mechanism).ok_or(bad("AUTHENTICATE"))?,
            initial: Some(Secret::new(text(initial).ok_or(bad("AUTHENTICATE"))?)),
        },
        ("STARTTLS", []) => Command::StartTls,
        ("LOGOUT", []) => Command::Logout,
        ("CAPABILITY", []) => Command::Capability,
        ("NOOP", []) => Command::Noop(None),
        ("NOOP", [tag]) => Command::Noop(Some(text(tag).ok_or(bad("NOOP"))?)),
        ("UNAUTHENTICATE", []) => Command::Unauthenticate,
        ("HAVESPACE", [name, Token::Number(size)]) => {
            Command::HaveSpace { name: text(name).ok_or(bad("HAVESPACE"))?, size: *size }
        }
        ("PUTSCRIPT", [name, script]) => Command::PutScript {
            name: text(name).ok_or(bad("PUTSCRIPT"))?,
            script: bytes(script).ok_or(bad("PUTSCRIPT"))?,
        },
        ("LISTSCRIPTS", []) => Command::ListScripts,
        ("SETACTIVE", [name]) => Command::SetActive(text(name).ok_or(bad("SETACTIVE"))?),
        ("GETSCRIPT", [name]) => Command::GetScript(text(name).ok_or(bad("GETSCRIPT"))?),
        ("DELETESCRIPT", [name]) => Command::DeleteScript(text(name).ok_or(bad("DELETESCRIPT"))?),
        ("RENAMESCRIPT", [from, to]) => Command::RenameScript {
            from: text(from).ok_or(bad("RENAMESCRIPT"))?,
            to: text(to).ok_or(bad("RENAMESCRIPT"))?,
        },
        ("CHECKSCRIPT", [script]) => Command::CheckScript(bytes(script).ok_or(bad("CHECKSCRIPT"))?),
        (
            "AUTHENTICATE" | "STARTTLS" | "LOGOUT" | "CAPABILITY" | "NOOP" | "UNAUTHENTICATE" | "HAVESPACE"
            | "PUTSCRIPT" | "LISTSCRIPTS" | "SETACTIVE" | "GETSCRIPT" | "DELETESCRIPT" | "RENAMESCRIPT" | "CHECKSCRIPT",
            _,
        ) => return Err(CommandError::Arguments(static_name(&name))),
        _ => return Err(CommandError::Unknown),
    })
}

/// The command's name as a `'static` text, for errors.
fn static_name(name: &str) -> &'static str {
    const NAMES: [&str; 14] = [
        "AUTHENTICATE",
        "STARTTLS",
        "LOGOUT",
        "CAPABILITY",
        "NOOP",
        "UNAUTHENTICATE",
        "HAVESPACE",
        "PUTSCRIPT",
        "LISTSCRIPTS",
        "SETACTIVE",
        "GETSCRIPT",
        "DELETESCRIPT",
        "RENAMESCRIPT",
        "CHECKSCRIPT",
    ];
    NAMES.into_iter().find(|n| *n == name).unwrap_or("the command")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &str) -> Command {
        match parse(input.as_bytes(), 1024) {
            Parsed::Command(c, used) => {
                assert_eq!(used, input.len(), "{input:?}");
                c
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn commands_with_quoted_strings_and_literals() {
        assert_eq!(one("capability\r\n"), Command::Capability);
        assert_eq!(
            one("PUTSCRIPT \"my \\\"rules\\\"\" {11+}\r\nkeep;\r\nx;\r\n\r\n"),
            Command::PutScript { name: "my \"rules\"".into(), script: b"keep;\r\nx;\r\n".to_vec() }
        );
        assert_eq!(one("HAVESPACE \"a\" 1234\r\n"), Command::HaveSpace { name: "a".into(), size: 1234 });
        assert_eq!(one("SETACTIVE \"\"\r\n"), Command::SetActive(String::new()));
        assert_eq!(one("RENAMESCRIPT {1}\r\na \"b\"\r\n"), Command::RenameScript { from: "a".into(), to: "b".into() });
        assert_eq!(
            one("AUTHENTICATE \"PLAIN\" \"AGEAYg==\"\r\n"),
            Command::Authenticate { mechanism: "PLAIN".into(), initial: Some(Secret::new("AGEAYg==")) }
        );
    }

    #[test]
    fn partial_input_waits_and_bad_input_is_dropped_through_its_line() {
        for partial in ["PUTSCRIPT \"a\" {10+}\r\nkeep;", "LISTSCR", "GETSCRIPT \"ab", "CHECKSCRIPT {5+}\r"] {
            assert_eq!(parse(partial.as_bytes(), 1024), Parsed::Incomplete, "{partial:?}");
        }
        assert_eq!(parse(b"FROB\r\nLOGOUT\r\n", 1024), Parsed::Invalid(CommandError::Unknown, 6));
        assert_eq!(parse(b"GETSCRIPT\r\n", 1024), Parsed::Invalid(CommandError::Arguments("GETSCRIPT"), 11));
        assert_eq!(parse(b"PUTSCRIPT \"a\" {2000+}\r\n", 1024), Parsed::Invalid(CommandError::TooLong(1024), 23));
        let long = format!("NOOP {}", "x".repeat(MAX_LINE + 1));
        assert!(matches!(parse(long.as_bytes(), 1024), Parsed::Invalid(CommandError::TooLong(_), _)));
        assert!(matches!(parse(b"NOOP \"a\\q\"\r\n", 1024), Parsed::Invalid(CommandError::Syntax(_), 12)));
        assert!(matches!(parse(b"NOOP {99999999999999}\r\n", 1024), Parsed::Invalid(_, _)));
    }
}
