//! Command syntax imap-codec `=2.0.0-alpha.10` cannot decode, cut out before it decodes the rest.
//!
//! The pre-decoder looks at one complete command (its line and literals, as the fragmentizer
//! holds it) and recognises an extension's clause. It removes the clause, so that imap-codec
//! decodes what is left as the plain command, and hands what it removed to the command's
//! handler as an [`Extension`]:
//!
//! - `tag [UID] SEARCH RETURN (opts) criteria`, ESEARCH (RFC 4731): [`esearch`];
//! - `tag LIST [(selection)] reference (patterns) [RETURN (opts)]`, LIST-EXTENDED (RFC 5258)
//!   with LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154): [`list`];
//! - `tag STATUS mailbox (items)` with the APPENDLIMIT item (RFC 7889): [`status`], which
//!   reads the item list back from the end of the command;
//! - `tag CREATE mailbox (USE (attrs))`, CREATE-SPECIAL-USE (RFC 6154 §3): [`create`], read
//!   back from the end of the command the same way;
//! - `tag [UID] FETCH set (… PREVIEW [(LAZY)] …)`, PREVIEW (RFC 8970): [`preview`], the item
//!   cut from the list;
//! - `tag APPEND mailbox message message…`, MULTIAPPEND (RFC 3502): [`append`], asked only
//!   about an APPEND imap-codec refused, cuts the command after each message's literal and has
//!   imap-codec decode each piece;
//! - `$`, the saved search result of SEARCHRES (RFC 5182), where a sequence set goes:
//!   [`searchres`] puts a marker set in its place (after any of the above was cut).
//!
//! The clauses are on the first line, up to the first literal, and made of atoms
//! and parentheses. SEARCH's clause sits right after the command name, so a quoted string or
//! literal in the criteria is never looked into, let alone cut: a `RETURN` there is criteria.
//! LIST's return options follow its mailbox arguments, which are read as atoms and quoted
//! strings; an extended LIST with a literal is refused. Everything else about the command
//! (the tag, the criteria, the mailbox syntax) is left to imap-codec. Only `$` in SEARCH's
//! criteria is looked for past the first line: its scan steps over quoted strings and literals.

pub mod append;
pub mod create;
pub mod esearch;
pub mod list;
pub mod preview;
pub mod searchres;
pub mod status;

use bytes::Bytes;
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_types::IntoStatic;
use imap_types::command::Command;

pub use append::{AppendMessage, MultiAppend};
pub use create::CreateUse;
pub use esearch::SearchReturn;
pub use list::ListExtended;
pub use preview::Preview;
pub use status::StatusItems;

/// What the pre-decoder took out of a command, for the command's handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Extension {
    /// A plain command.
    #[default]
    None,
    /// `SEARCH RETURN (…)`: answer with ESEARCH.
    SearchReturn(SearchReturn),
    /// An extended LIST: its options and all its patterns.
    List(ListExtended),
    /// A STATUS that asks for APPENDLIMIT: all its items (the command's are a placeholder).
    Status(StatusItems),
    /// `CREATE … (USE (…))`: the special uses asked for.
    CreateUse(CreateUse),
    /// A FETCH with the PREVIEW item.
    Preview(Preview),
    /// An APPEND of several messages: all of them (the command holds the first).
    MultiAppend(MultiAppend),
}

/// A decoded command and what the pre-decoder took out of it.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub command: Command<'a>,
    pub extension: Extension,
    /// `$` was replaced by [`searchres::MARKER`]: the session puts the saved result there.
    pub saved_result: bool,
    /// APPEND messages that the connection wrote to spill files as they arrived
    /// ([`crate::spill`]), each with the offset in the framed command where an empty literal
    /// holds its place; in order.
    pub spilled: Vec<(usize, Bytes)>,
}

/// The text of the tagged BAD for a command imap-codec could not decode.
pub const SYNTAX_ERROR: &str = "syntax error in command";

/// What the pre-decoder made of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predecoded {
    /// No extension syntax: imap-codec decodes the command as it is.
    Plain,
    /// Extension syntax was cut out of the command (and for LIST, the patterns but the first),
    /// or `$` replaced by the marker (`saved_result`).
    Cut { command: Vec<u8>, extension: Extension, saved_result: bool },
    /// The command uses an extension's syntax wrongly: the text of the tagged BAD.
    Invalid(&'static str),
}

/// Recognises the extensions' syntax in a complete command (line and literals).
pub fn predecode(message: &[u8]) -> Predecoded {
    // `$` can come with SEARCH RETURN's clause, so it is looked for in what is left of that.
    match clauses(message) {
        Predecoded::Plain => match searchres::find(message) {
            None => Predecoded::Plain,
            Some(Err(text)) => Predecoded::Invalid(text),
            Some(Ok(command)) => Predecoded::Cut { command, extension: Extension::None, saved_result: true },
        },
        Predecoded::Cut { command, extension, .. } => match searchres::find(&command) {
            None => Predecoded::Cut { command, extension, saved_result: false },
            Some(Err(text)) => Predecoded::Invalid(text),
            Some(Ok(command)) => Predecoded::Cut { command, extension, saved_result: true },
        },
        invalid @ Predecoded::Invalid(_) => invalid,
    }
}

/// The clauses other than `$`.
fn clauses(message: &[u8]) -> Predecoded {
    if let Some(found) = esearch::find(message) {
        return match found {
            Err(text) => Predecoded::Invalid(text),
            Ok((clause, options)) => {
                let mut command = Vec::with_capacity(message.len() - clause.len());
                command.extend_from_slice(&message[..clause.start]);
                command.extend_from_slice(&message[clause.end..]);
                Predecoded::Cut { command, extension: Extension::SearchReturn(options), saved_result: false }
            }
        };
    }
    if let Some(found) = status::find(message) {
        return match found {
            Err(text) => Predecoded::Invalid(text),
            Ok((command, items)) => {
                Predecoded::Cut { command, extension: Extension::Status(items), saved_result: false }
            }
        };
    }
    if let Some(found) = create::find(message) {
        return match found {
            Err(text) => Predecoded::Invalid(text),
            Ok((command, uses)) => {
                Predecoded::Cut { command, extension: Extension::CreateUse(uses), saved_result: false }
            }
        };
    }
    if let Some(found) = preview::find(message) {
        return match found {
            Err(text) => Predecoded::Invalid(text),
            Ok((command, asked)) => {
                Predecoded::Cut { command, extension: Extension::Preview(asked), saved_result: false }
            }
        };
    }
    match list::find(message) {
        None => Predecoded::Plain,
        Some(Err(text)) => Predecoded::Invalid(text),
        Some(Ok((command, list))) => Predecoded::Cut { command, extension: Extension::List(list), saved_result: false },
    }
}

/// Decodes one complete command (line and literals): the pre-decoder, then imap-codec.
///
/// Fails with the text of the tagged BAD.
pub fn decode(message: &[u8]) -> Result<Decoded<'_>, &'static str> {
    let (command, extension, saved_result) = match predecode(message) {
        Predecoded::Plain => match whole(message) {
            Ok(command) => (command, Extension::None, false),
            Err(text) => match append::find(message) {
                None => return Err(text),
                Some(found) => {
                    let (command, multi) = found?;
                    (command, Extension::MultiAppend(multi), false)
                }
            },
        },
        Predecoded::Cut { command, extension, saved_result } => {
            (whole(&command)?.into_static(), extension, saved_result)
        }
        Predecoded::Invalid(text) => return Err(text),
    };
    Ok(Decoded { command, extension, saved_result, spilled: Vec::new() })
}

/// imap-codec's decoding of all of `bytes` as one command.
fn whole(bytes: &[u8]) -> Result<Command<'_>, &'static str> {
    match CommandCodec::default().decode(bytes) {
        Ok(([], command)) => Ok(command),
        _ => Err(SYNTAX_ERROR),
    }
}

/// A cursor over the start of a command line, for the clauses' atoms and parentheses.
///
/// It never moves past a line end: [`Scanner::word`] stops at one, and every other step takes
/// exactly the byte it expects.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8]) -> Scanner<'a> {
        Scanner { bytes, pos: 0 }
    }

    /// The next run of bytes up to a space, parenthesis or control character (CR, LF, NUL…).
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(&b) = self.bytes.get(self.pos) {
            if b == b' ' || b == b'(' || b == b')' || b.is_ascii_control() {
                break;
            }
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    /// The next byte.
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Takes `byte` if it comes next.
    fn take(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Takes `keyword` (any case) followed by a space, or nothing.
    fn keyword(&mut self, keyword: &[u8]) -> bool {
        let start = self.pos;
        if self.word().eq_ignore_ascii_case(keyword) && self.take(b' ') {
            return true;
        }
        self.pos = start;
        false
    }
}

#[cfg(test)]
mod tests {
    use imap_types::command::CommandBody;

    use super::*;

    #[test]
    fn plain_commands_pass_through() {
        let decoded = decode(b"a1 UID SEARCH SUBJECT \"RETURN (MIN)\"\r\n").unwrap();
        assert_eq!(decoded.extension, Extension::None);
        assert!(matches!(decoded.command.body, CommandBody::Search { uid: true, .. }));
        assert_eq!(decode(b"a1 BOGUS\r\n").unwrap_err(), SYNTAX_ERROR);
        assert_eq!(decode(b"a1 NOOP\r\ntrailing").unwrap_err(), SYNTAX_ERROR);
    }

    #[test]
    fn search_return_is_cut_and_the_rest_decoded() {
        let decoded = decode(b"t UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 SUBJECT {3+}\r\nx y\r\n").unwrap();
        let CommandBody::Search { charset, criteria, uid } = decoded.command.body else { panic!("not a SEARCH") };
        assert!(uid && charset.is_some() && criteria.as_ref().len() == 1);
        assert_eq!(
            decoded.extension,
            Extension::SearchReturn(SearchReturn { min: true, count: true, ..SearchReturn::default() })
        );
        assert_eq!(decode(b"t SEARCH RETURN (MIN) BOGUS\r\n").unwrap_err(), SYNTAX_ERROR);
        assert_eq!(decode(b"t SEARCH RETURN (FOO) ALL\r\n").unwrap_err(), esearch::UNKNOWN_OPTION);
    }
}
