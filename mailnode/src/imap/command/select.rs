//! SELECT, EXAMINE (with CONDSTORE), CLOSE and UNSELECT.

use imap_types::command::SelectParameter;
use imap_types::mailbox::Mailbox;
use sirms_storage::SystemFlags;
use tokio::io::AsyncWriteExt;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::{self, Code, Status};
use crate::imap::selected::Selected;
use crate::imap::session::{Session, Sink};

impl Session {
    pub(crate) async fn select(
        &mut self,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        parameters: &[SelectParameter],
        out: &mut Sink<'_>,
    ) -> CommandResult {
        // RFC 3501 §6.3.1: a SELECT, even a failing one, first leaves the selected mailbox.
        self.selected = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { .. } => return Err(CommandError::bad("QRESYNC is not supported")),
            }
        }
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        // Watch before the snapshot: a change between the two is seen twice, never missed.
        let changes = self.store.watch(&user, &name).await?;
        let (status, messages) = self.store.messages(&user, &name).await?;
        let recent = if read_only { Vec::new() } else { self.store.claim_recent(&user, &name).await? };
        let view = Selected::new(name, read_only, status, messages, &recent, changes);

        let mut lines = view.flags_responses();
        let recent_count = if read_only { status.recent } else { recent.len() as u32 };
        lines.extend(format!("* {} EXISTS\r\n* {recent_count} RECENT\r\n", view.exists()).into_bytes());
        if let Some(first) = view.entries().iter().position(|e| !e.meta.flags.system.contains(SystemFlags::SEEN)) {
            lines.extend(response::status(None, Status::Ok, Some(&Code::Unseen(first as u32 + 1)), "first unseen"));
        }
        lines.extend(response::status(None, Status::Ok, Some(&Code::UidValidity(view.uid_validity)), "UIDs valid"));
        lines.extend(response::status(None, Status::Ok, Some(&Code::UidNext(view.uid_next)), "predicted next UID"));
        lines.extend(response::status(
            None,
            Status::Ok,
            Some(&Code::HighestModSeq(view.highest_modseq)),
            "highest modseq",
        ));
        out.write_all(&lines).await?;
        self.selected = Some(view);
        let (code, verb) = if read_only { (Code::ReadOnly, "EXAMINE") } else { (Code::ReadWrite, "SELECT") };
        Ok(Done::with(code, format!("{verb} completed")))
    }

    /// CLOSE (`expunge`) or UNSELECT: back to the authenticated state.
    pub(crate) async fn close(&mut self, expunge: bool) -> CommandResult {
        let user = self.login_name()?;
        let view = self.selected.take().ok_or_else(|| CommandError::bad("no mailbox selected"))?;
        if expunge && !view.read_only {
            // CLOSE expunges silently (RFC 3501 §6.4.2): the client is leaving the mailbox.
            self.store.expunge(&user, &view.name, None).await?;
        }
        Ok(Done::ok(if expunge { "CLOSE completed" } else { "UNSELECT completed" }))
    }
}
