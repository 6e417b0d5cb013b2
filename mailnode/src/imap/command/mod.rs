//! The command handlers, one file per command or family, each an `impl Session` block.

mod append;
mod auth;
mod copy_move;
mod expunge;
mod fetch;
mod info;
pub mod list;
mod mailbox;
mod quota;
pub mod search;
mod select;
mod status;
mod store;

use imap_types::mailbox::Mailbox;
use sirms_storage::mailbox::canonical_name;

use super::error::CommandError;
use super::mutf7;

/// The store's name of a mailbox named on the wire (modified UTF-7, any-case INBOX).
pub(crate) fn mailbox_name(mailbox: &Mailbox<'_>) -> Result<String, CommandError> {
    match mailbox {
        Mailbox::Inbox => Ok("INBOX".to_string()),
        Mailbox::Other(other) => {
            let decoded = mutf7::decode(other.as_ref()).map_err(|e| CommandError::bad(e.to_string()))?;
            // A trailing delimiter is allowed in CREATE ("foo/" creates foo, RFC 3501 §6.3.3).
            let trimmed = decoded.strip_suffix('/').unwrap_or(&decoded);
            canonical_name(trimmed).map_err(CommandError::from)
        }
    }
}
