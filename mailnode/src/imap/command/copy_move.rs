//! COPY and MOVE (RFC 6851), by sequence number or UID, answered with COPYUID (RFC 4315).

use imap_types::mailbox::Mailbox;
use imap_types::sequence::SequenceSet;
use sirms_storage::BodyPart;
use tokio::io::AsyncWriteExt;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::{self, Code, Status};
use crate::imap::selected::render_uids;
use crate::imap::session::{Session, Sink};

impl Session {
    pub(crate) async fn copy_move(
        &mut self,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        moving: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let verb = if moving { "MOVE" } else { "COPY" };
        let target = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        let view = self.selected()?;
        if moving && view.read_only {
            return Err(CommandError::no(Some(Code::ReadOnly), "mailbox is read-only"));
        }
        let indexes = view.resolve(set, uid)?;
        if indexes.is_empty() {
            return Ok(Done::ok(format!("{verb} completed (no messages)")));
        }
        let uids = view.uids(&indexes);
        let source = view.name.clone();
        if !moving {
            let copied = self.store.fetch(&user, &source, &uids, BodyPart::None).await?;
            let adding = copied.iter().map(|m| m.meta.size).sum();
            self.quotas.room_for(&user, adding, copied.len() as u64).await?;
        }
        let result = if moving {
            self.store.move_messages(&user, &source, &target, &uids).await
        } else {
            self.store.copy(&user, &source, &target, &uids).await
        }
        .map_err(|e| CommandError::from(e).try_create())?;
        let mut pairs = result.pairs.clone();
        pairs.sort_unstable();
        let code = (!pairs.is_empty()).then(|| Code::CopyUid {
            uid_validity: result.uid_validity,
            source: render_uids(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
            destination: render_uids(&pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
        });
        // A copy into the selected mailbox itself is reported before the tagged OK.
        if let Some(last) = pairs.iter().map(|p| p.1).max() {
            self.catch_up(&target, last).await?;
        }
        if !moving {
            return Ok(Done { code, text: "COPY completed".into() });
        }
        // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
        if let Some(code) = &code {
            out.write_all(&response::status(None, Status::Ok, Some(code), "moved")).await?;
        }
        let qresync = self.qresync;
        let view = self.selected()?;
        let removed: Vec<(u32, u32)> =
            pairs.iter().rev().filter_map(|&(from, _)| Some((view.remove(from)?, from))).collect();
        out.write_all(&response::expunged(&removed, qresync)).await?;
        Ok(Done::ok("MOVE completed"))
    }
}
