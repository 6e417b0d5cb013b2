//! The generic grammar of RFC 5228 §8.2: commands, arguments, tests and blocks, before any
//! command's meaning is known (that is `validate`'s job).

use crate::error::{Pos, SieveError};
use crate::lexer::{Tok, Token};

/// One argument as written.
#[derive(Debug, Clone)]
pub(crate) enum RawArg {
    Tag(String, Pos),
    Number(u64, Pos),
    Str(String, Pos),
    List(Vec<String>, Pos),
}

impl RawArg {
    pub fn pos(&self) -> Pos {
        match self {
            RawArg::Tag(_, p) | RawArg::Number(_, p) | RawArg::Str(_, p) | RawArg::List(_, p) => *p,
        }
    }
}

/// A test as written: name, arguments and nested tests.
#[derive(Debug, Clone)]
pub(crate) struct RawTest {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<RawArg>,
    pub tests: Vec<RawTest>,
    /// Whether the nested tests were in parentheses (a test list) rather than one test.
    pub test_list: bool,
}

/// A command as written.
#[derive(Debug, Clone)]
pub(crate) struct RawCommand {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<RawArg>,
    pub tests: Vec<RawTest>,
    pub test_list: bool,
    pub block: Option<Vec<RawCommand>>,
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    max_nesting: usize,
    end: Pos,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn here(&self) -> Pos {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn eat(&mut self, want: &Tok) -> bool {
        if self.peek().is_some_and(|t| &t.tok == want) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn commands(&mut self, depth: usize, in_block: bool) -> Result<Vec<RawCommand>, SieveError> {
        let mut out = Vec::new();
        loop {
            let Some(t) = self.next() else {
                if in_block {
                    return Err(SieveError::new(self.end, "missing \"}\" at end of script"));
                }
                return Ok(out);
            };
            match t.tok {
                Tok::RBrace if in_block => return Ok(out),
                Tok::Ident(name) => out.push(self.command(name, t.pos, depth)?),
                other => return Err(SieveError::new(t.pos, format!("expected a command, found {}", describe(&other)))),
            }
        }
    }

    fn command(&mut self, name: String, pos: Pos, depth: usize) -> Result<RawCommand, SieveError> {
        let args = self.arguments()?;
        let (tests, test_list) = self.tests(depth)?;
        let block = match self.next() {
            Some(Token { tok: Tok::Semi, .. }) => None,
            Some(Token { tok: Tok::LBrace, pos }) => {
                if depth + 1 > self.max_nesting {
                    return Err(SieveError::new(pos, "blocks nested too deeply"));
                }
                Some(self.commands(depth + 1, true)?)
            }
            Some(t) => {
                return Err(SieveError::new(
                    t.pos,
                    format!("expected \";\" or \"{{\" after command \"{name}\", found {}", describe(&t.tok)),
                ));
            }
            None => return Err(SieveError::new(self.end, format!("missing \";\" after command \"{name}\""))),
        };
        Ok(RawCommand { name, pos, args, tests, test_list, block })
    }

    fn arguments(&mut self) -> Result<Vec<RawArg>, SieveError> {
        let mut args = Vec::new();
        loop {
            let Some(t) = self.peek().cloned() else { return Ok(args) };
            let arg = match t.tok {
                Tok::Tag(s) => RawArg::Tag(s, t.pos),
                Tok::Number(n) => RawArg::Number(n, t.pos),
                Tok::Str(s) => RawArg::Str(s, t.pos),
                Tok::LBracket => {
                    self.at += 1;
                    let mut list = Vec::new();
                    loop {
                        match self.next() {
                            Some(Token { tok: Tok::Str(s), .. }) => list.push(s),
                            Some(t) => {
                                return Err(SieveError::new(
                                    t.pos,
                                    format!("expected a string in a list, found {}", describe(&t.tok)),
                                ));
                            }
                            None => return Err(SieveError::new(self.end, "unterminated string list")),
                        }
                        if self.eat(&Tok::RBracket) {
                            break;
                        }
                        if !self.eat(&Tok::Comma) {
                            return Err(SieveError::new(self.here(), "expected \",\" or \"]\" in a string list"));
                        }
                    }
                    args.push(RawArg::List(list, t.pos));
                    continue;
                }
                _ => return Ok(args),
            };
            self.at += 1;
            args.push(arg);
        }
    }

    fn tests(&mut self, depth: usize) -> Result<(Vec<RawTest>, bool), SieveError> {
        match self.peek().cloned() {
            Some(Token { tok: Tok::Ident(_), .. }) => Ok((vec![self.test(depth)?], false)),
            Some(Token { tok: Tok::LParen, pos }) => {
                self.at += 1;
                if depth + 1 > self.max_nesting {
                    return Err(SieveError::new(pos, "tests nested too deeply"));
                }
                let mut tests = Vec::new();
                loop {
                    tests.push(self.test(depth + 1)?);
                    if self.eat(&Tok::RParen) {
                        return Ok((tests, true));
                    }
                    if !self.eat(&Tok::Comma) {
                        return Err(SieveError::new(self.here(), "expected \",\" or \")\" in a test list"));
                    }
                }
            }
            _ => Ok((Vec::new(), false)),
        }
    }

    fn test(&mut self, depth: usize) -> Result<RawTest, SieveError> {
        match self.next() {
            Some(Token { tok: Tok::Ident(name), pos }) => {
                if depth + 1 > self.max_nesting {
                    return Err(SieveError::new(pos, "tests nested too deeply"));
                }
                let args = self.arguments()?;
                let (tests, test_list) = self.tests(depth + 1)?;
                Ok(RawTest { name, pos, args, tests, test_list })
            }
            Some(t) => Err(SieveError::new(t.pos, format!("expected a test, found {}", describe(&t.tok)))),
            None => Err(SieveError::new(self.end, "expected a test at end of script")),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("\"{s}\""),
        Tok::Tag(s) => format!("\":{s}\""),
        Tok::Number(n) => format!("number {n}"),
        Tok::Str(_) => "a string".into(),
        Tok::LBracket => "\"[\"".into(),
        Tok::RBracket => "\"]\"".into(),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::LBrace => "\"{\"".into(),
        Tok::RBrace => "\"}\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Semi => "\";\"".into(),
    }
}

/// Parses tokens into commands, refusing nesting deeper than `max_nesting`.
pub(crate) fn parse_tokens(toks: Vec<Token>, max_nesting: usize, end: Pos) -> Result<Vec<RawCommand>, SieveError> {
    let mut p = Parser { toks, at: 0, max_nesting, end };
    p.commands(0, false)
}
