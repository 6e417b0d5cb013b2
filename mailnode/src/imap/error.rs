//! How a command fails: the tagged NO or BAD it ends with, or an I/O error that ends the session.

use std::borrow::Cow;
use std::io;

use sirms_storage::StoreError;

use super::response::Code;

/// Why a command did not complete with OK.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command is malformed or not valid now: tagged BAD.
    #[error("{0}")]
    Bad(Cow<'static, str>),
    /// The command is valid but failed: tagged NO.
    #[error("{text}")]
    No { code: Option<Code>, text: Cow<'static, str> },
    /// The store refused or failed; becomes NO with the matching RFC 5530 code.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing to the client failed; the session ends.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CommandError {
    /// A tagged BAD.
    pub fn bad(text: impl Into<Cow<'static, str>>) -> Self {
        CommandError::Bad(text.into())
    }

    /// A tagged NO with an optional code.
    pub fn no(code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        CommandError::No { code, text: text.into() }
    }

    /// The code and text of the NO a store error becomes.
    pub fn store_reply(error: &StoreError) -> (Code, String) {
        let code = match error {
            StoreError::NoSuchMailbox => Code::Nonexistent,
            StoreError::MailboxExists => Code::AlreadyExists,
            StoreError::InvalidName(_) | StoreError::CannotDeleteInbox | StoreError::HasChildren => Code::Cannot,
            StoreError::InvalidKeyword => Code::ClientBug,
            StoreError::TooManyKeywords | StoreError::TooManyMailboxes | StoreError::TooManyFiles => Code::Limit,
            StoreError::OverQuota { .. } => Code::OverQuota,
            StoreError::TooLarge | StoreError::SizeMismatch => Code::TooBig,
            StoreError::Unauthorized | StoreError::InvalidUser => Code::NoPerm,
            StoreError::Unavailable(_)
            | StoreError::Io(_)
            | StoreError::Index(_)
            | StoreError::Protocol(_)
            | StoreError::StaleEpoch(_)
            | StoreError::Diverged(_) => Code::Unavailable,
        };
        let text = match error {
            // Internal details stay in the log; the client learns only that it should retry.
            StoreError::Unavailable(_)
            | StoreError::Io(_)
            | StoreError::Index(_)
            | StoreError::Protocol(_)
            | StoreError::StaleEpoch(_)
            | StoreError::Diverged(_) => "mail store temporarily unavailable".to_string(),
            other => other.to_string(),
        };
        (code, text)
    }

    /// Turns "no such mailbox" into the TRYCREATE an APPEND, COPY or MOVE target gets (RFC 3501 §6.3.11).
    pub fn try_create(self) -> Self {
        match self {
            CommandError::Store(StoreError::NoSuchMailbox) => {
                CommandError::no(Some(Code::TryCreate), "no such mailbox; create it first")
            }
            other => other,
        }
    }
}

/// What a command handler returns.
pub type CommandResult<T = Done> = Result<T, CommandError>;

/// A successful completion: the code and text of the tagged OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub code: Option<Code>,
    pub text: Cow<'static, str>,
}

impl Done {
    /// OK with text only.
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Done {
        Done { code: None, text: text.into() }
    }

    /// OK with a response code.
    pub fn with(code: Code, text: impl Into<Cow<'static, str>>) -> Done {
        Done { code: Some(code), text: text.into() }
    }
}
