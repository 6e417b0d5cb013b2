//! EXPUNGE and UID EXPUNGE (RFC 4315).

use imap_types::sequence::SequenceSet;
use tokio::io::AsyncWriteExt;

use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::{self, Code};
use crate::imap::session::{Session, Sink};

impl Session {
    pub(crate) async fn expunge(&mut self, uid_set: Option<&SequenceSet>, out: &mut Sink<'_>) -> CommandResult {
        let user = self.login_name()?;
        let view = self.selected()?;
        if view.read_only {
            return Err(CommandError::no(Some(Code::ReadOnly), "mailbox is read-only"));
        }
        let restrict = match uid_set {
            Some(set) => {
                let indexes = view.resolve(set, true)?;
                if indexes.is_empty() {
                    return Ok(Done::ok("EXPUNGE completed (no messages)"));
                }
                Some(view.uids(&indexes))
            }
            None => None,
        };
        let name = view.name.clone();
        let mut gone = self.store.expunge(&user, &name, restrict.as_ref()).await?;
        // Highest first, so each number is still right when the client applies it.
        gone.sort_unstable_by(|a, b| b.cmp(a));
        let qresync = self.qresync;
        let view = self.selected()?;
        let removed: Vec<(u32, u32)> = gone.into_iter().filter_map(|uid| Some((view.remove(uid)?, uid))).collect();
        out.write_all(&response::expunged(&removed, qresync)).await?;
        Ok(Done::ok("EXPUNGE completed"))
    }
}
