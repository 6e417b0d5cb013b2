//! Turns script text into tokens (RFC 5228 §8.1).

use crate::error::{Pos, SieveError};

/// One lexical token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Ident(String),
    Tag(String),
    Number(u64),
    Str(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Semi,
}

/// A token and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn skip_space_and_comments(&mut self) -> Result<(), SieveError> {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | '\n') => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some('/') => {
                    let start = self.pos;
                    self.bump();
                    if self.bump() != Some('*') {
                        return Err(SieveError::new(start, "unexpected \"/\""));
                    }
                    let mut star = false;
                    loop {
                        match self.bump() {
                            None => return Err(SieveError::new(start, "unterminated comment")),
                            Some('/') if star => break,
                            Some(c) => star = c == '*',
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn word(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        s
    }

    fn quoted(&mut self, start: Pos) -> Result<String, SieveError> {
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(SieveError::new(start, "unterminated string")),
                Some('"') => return Ok(s),
                // RFC 5228 §2.4.2: a backslash quotes the next character, whatever it is.
                Some('\\') => match self.bump() {
                    None => return Err(SieveError::new(start, "unterminated string")),
                    Some(c) => s.push(c),
                },
                Some(c) => s.push(c),
            }
        }
    }

    fn multiline(&mut self, start: Pos) -> Result<String, SieveError> {
        // After "text:", only white space or a hash comment may precede the line end.
        loop {
            match self.bump() {
                Some(' ' | '\t' | '\r') => {}
                Some('\n') => break,
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                    break;
                }
                _ => return Err(SieveError::new(start, "\"text:\" must be followed by a line break")),
            }
        }
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let mut ended = false;
            while let Some(c) = self.bump() {
                if c == '\n' {
                    ended = true;
                    break;
                }
                line.push(c);
            }
            let bare = line.strip_suffix('\r').unwrap_or(&line);
            if bare == "." {
                return Ok(out);
            }
            if !ended {
                return Err(SieveError::new(start, "multi-line string not ended by a line with a single \".\""));
            }
            // Dot-stuffing: a line starting with ".." stands for one starting with ".".
            let content = bare.strip_prefix('.').filter(|r| r.starts_with('.')).unwrap_or(bare);
            out.push_str(content);
            out.push_str("\r\n");
        }
    }

    fn number(&mut self, start: Pos) -> Result<u64, SieveError> {
        let mut n: u64 = 0;
        let too_big = || SieveError::new(start, "number too large");
        while let Some(c) = self.peek() {
            let Some(d) = c.to_digit(10) else { break };
            self.bump();
            n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d))).ok_or_else(too_big)?;
        }
        let shift = match self.peek() {
            Some('K' | 'k') => 10,
            Some('M' | 'm') => 20,
            Some('G' | 'g') => 30,
            _ => 0,
        };
        if shift > 0 {
            self.bump();
            n = n.checked_mul(1 << shift).ok_or_else(too_big)?;
        }
        Ok(n)
    }
}

/// Splits `source` into tokens.
pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, SieveError> {
    let mut lx = Lexer { chars: source.chars().peekable(), pos: Pos { line: 1, column: 1 } };
    let mut out = Vec::new();
    loop {
        lx.skip_space_and_comments()?;
        let pos = lx.pos;
        let Some(c) = lx.peek() else { return Ok(out) };
        let tok = match c {
            '[' | ']' | '(' | ')' | '{' | '}' | ',' | ';' => {
                lx.bump();
                match c {
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    ',' => Tok::Comma,
                    _ => Tok::Semi,
                }
            }
            '"' => {
                lx.bump();
                Tok::Str(lx.quoted(pos)?)
            }
            ':' => {
                lx.bump();
                let w = lx.word();
                if w.is_empty() || w.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(SieveError::new(pos, "\":\" must be followed by a tag name"));
                }
                Tok::Tag(w.to_ascii_lowercase())
            }
            '0'..='9' => Tok::Number(lx.number(pos)?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let w = lx.word();
                if w.eq_ignore_ascii_case("text") && lx.peek() == Some(':') {
                    lx.bump();
                    Tok::Str(lx.multiline(pos)?)
                } else {
                    Tok::Ident(w.to_ascii_lowercase())
                }
            }
            other => return Err(SieveError::new(pos, format!("unexpected character {other:?}"))),
        };
        out.push(Token { tok, pos });
    }
}
