//! EXPUNGE and UID EXPUNGE (RFC 4315).

use imap_types::sequence::SequenceSet;
use tokio::io::AsyncWriteExt;

use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::Code;
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
        let view = self.selected()?;
        let mut lines = Vec::new();
        for uid in gone {
            if let Some(seq) = view.remove(uid) {
                lines.extend(format!("* {seq} EXPUNGE\r\n").into_bytes());
            }
        }
        out.write_all(&lines).await?;
        Ok(Done::ok("EXPUNGE completed"))
    }
}
