//! Errors found while reading a script.

use thiserror::Error;

/// A script that cannot be used, with where the problem is (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct SieveError {
    /// Line of the problem, counting from 1.
    pub line: usize,
    /// Column (in characters) of the problem, counting from 1.
    pub column: usize,
    /// What is wrong, worded for the script's author.
    pub message: String,
}

impl SieveError {
    pub(crate) fn new(pos: Pos, message: impl Into<String>) -> Self {
        SieveError { line: pos.line, column: pos.column, message: message.into() }
    }
}

/// A place in the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}
