//! The command handlers, one file per command or family, each an `impl Session` block.

pub(crate) mod append;
mod auth;
pub mod base_subject;
mod copy_move;
mod expunge;
mod fetch;
mod info;
pub mod list;
mod mailbox;
mod quota;
pub mod search;
pub mod searchres;
mod select;
pub mod sort;
mod status;
mod store;
pub mod thread;

use imap_types::mailbox::Mailbox;
use sirms_storage::StoreError;
use sirms_storage::mailbox::canonical_name;

use super::error::CommandError;
use super::mutf7;

/// The store's name of a mailbox named on the wire (modified UTF-7, any-case INBOX).
pub(crate) fn mailbox_name(mailbox: &Mailbox<'_>) -> Result<String, CommandError> {
    match mailbox {
        Mailbox::Inbox => Ok("INBOX".to_string()),
        Mailbox::Other(other) => {
            // A name that is not modified UTF-7 is well-formed IMAP that names no mailbox there can
            // be: NO, as for any invalid name (a BAD would say the command itself was malformed).
            let decoded = mutf7::decode(other.as_ref())
                .map_err(|_| CommandError::from(StoreError::InvalidName("not valid modified UTF-7")))?;
            // A trailing delimiter is allowed in CREATE ("foo/" creates foo, RFC 3501 §6.3.3).
            let trimmed = decoded.strip_suffix('/').unwrap_or(&decoded);
            canonical_name(trimmed).map_err(CommandError::from)
        }
    }
}
