//! The Sieve mail filtering language (RFC 5228) with the extensions SIRMS offers: a parser
//! and validator that turn a user's script into a [`Script`], and an interpreter that runs it
//! over one message and returns the [`Action`]s the delivery path should take.
//!
//! The crate does no I/O: delivery, ManageSieve and vacation bookkeeping are the caller's.
//! Everything a script may cost is bounded by [`Limits`].
//!
//! ```
//! use sirms_sieve::{Action, Environment, Limits, parse};
//!
//! let script = parse(
//!     "require \"fileinto\";\nif header :contains \"subject\" \"[list]\" { fileinto \"Lists\"; }",
//!     &Limits::default(),
//! )?;
//! let message = b"Subject: [list] hello\r\n\r\nbody\r\n";
//! let mut env = Environment::new(message);
//! env.envelope_from = "alice@example.com";
//! env.envelope_to = "me@example.com";
//! let outcome = script.run(&env);
//! assert!(outcome.errors.is_empty());
//! assert_eq!(outcome.actions, vec![Action::FileInto { mailbox: "Lists".into(), flags: vec![], create: false }]);
//!
//! let err = parse("keep;\nfileinot \"x\";", &Limits::default()).unwrap_err();
//! assert_eq!(err.to_string(), "line 2: unknown command \"fileinot\"");
//! # Ok::<(), sirms_sieve::SieveError>(())
//! ```
//!
//! Supported extensions are listed in [`EXTENSIONS`]. Vacation's "one reply per sender per
//! `:days`" needs memory across deliveries and is left to the caller (see [`Action::Vacation`]).

mod ast;
mod error;
mod lexer;
mod limits;
mod matching;
mod parse;
mod run;
mod vacation;
mod validate;
mod variables;

use std::collections::HashSet;

pub use error::SieveError;
pub use limits::Limits;
pub use run::{Action, Environment, Outcome};
pub use validate::EXTENSIONS;

use error::Pos;

/// A parsed and checked script, ready to run any number of times.
#[derive(Debug, Clone)]
pub struct Script {
    commands: Vec<ast::Command>,
    extensions: HashSet<String>,
    variables: bool,
    limits: Limits,
}

/// Parses and checks `source`, refusing it with the first problem found.
pub fn parse(source: &str, limits: &Limits) -> Result<Script, SieveError> {
    if source.len() > limits.max_script_size {
        return Err(SieveError::new(
            Pos { line: 1, column: 1 },
            format!("script too large ({} bytes, at most {})", source.len(), limits.max_script_size),
        ));
    }
    let tokens = lexer::tokenize(source)?;
    let end = end_pos(source);
    let raw = parse::parse_tokens(tokens, limits.max_nesting, end)?;
    let (commands, extensions) = validate::validate(raw)?;
    let variables = extensions.contains("variables");
    Ok(Script { commands, extensions, variables, limits: limits.clone() })
}

fn end_pos(source: &str) -> Pos {
    let line = source.matches('\n').count() + 1;
    let column = source.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, column }
}

impl Script {
    /// Runs the script over one message; never fails: runtime errors give an implicit keep.
    pub fn run(&self, env: &Environment<'_>) -> Outcome {
        run::Run::new(self, env).execute()
    }

    /// The extensions the script `require`s, lower-cased.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(String::as_str)
    }

    /// The limits the script was parsed with, which also bound its runs.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
