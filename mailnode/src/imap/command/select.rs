//! SELECT, EXAMINE (with CONDSTORE and QRESYNC), CLOSE and UNSELECT.

use imap_types::command::SelectParameter;
use imap_types::mailbox::Mailbox;
use sirms_storage::SystemFlags;
use tokio::io::AsyncWriteExt;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::{self, Code, Status};
use crate::imap::selected::Selected;
use crate::imap::session::{Session, Sink, exists_and_recent};

impl Session {
    pub(crate) async fn select(
        &mut self,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        parameters: &[SelectParameter],
        out: &mut Sink<'_>,
    ) -> CommandResult {
        // RFC 3501 §6.3.1: a SELECT, even a failing one, first leaves the selected mailbox, and
        // RFC 7162 §3.2.11 has a server offering QRESYNC say so, so that a client tells the old
        // mailbox's last responses from the new one's.
        if self.selected.take().is_some() {
            out.write_all(&response::status(None, Status::Ok, Some(&Code::Closed), "previous mailbox closed")).await?;
        }
        let mut resync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, .. } => {
                    if !self.qresync {
                        return Err(CommandError::bad("QRESYNC parameter without ENABLE QRESYNC"));
                    }
                    resync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids.clone()));
                }
            }
        }
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        // Watch before the snapshot: a change between the two is seen twice, never missed.
        let changes = self.store.watch(&user, &name).await?;
        let (status, messages) = self.store.messages(&user, &name).await?;
        // IMAP4rev2 has no \Recent: such a session claims none (RFC 9051 Appendix E).
        let claims = !read_only && !self.rev2;
        let recent = if claims { self.store.claim_recent(&user, &name).await? } else { Vec::new() };
        let view = Selected::new(name, read_only, status, messages, &recent, changes);

        let mut lines = view.flags_responses();
        if self.rev2 {
            lines.extend(exists_and_recent(&view, true));
        } else {
            let recent_count = if read_only { status.recent } else { recent.len() as u32 };
            lines.extend(format!("* {} EXISTS\r\n* {recent_count} RECENT\r\n", view.exists()).into_bytes());
        }
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
        // RFC 7162 §3.2.5: what changed since the client's MODSEQ, if it knew this mailbox as it
        // is (same UIDVALIDITY); otherwise the client starts over from the responses above.
        if let Some((_, since, known)) = resync.filter(|r| r.0 == view.uid_validity) {
            let vanished = view.vanished(known.as_ref());
            if !vanished.is_empty() {
                lines.extend(format!("* VANISHED (EARLIER) {vanished}\r\n").into_bytes());
            }
            let indexes = match &known {
                Some(set) => view.resolve(set, true)?,
                None => (0..view.entries().len()).collect(),
            };
            for index in indexes.into_iter().filter(|&i| view.entries()[i].meta.modseq > since) {
                lines.extend(view.flags_fetch(index, true));
            }
        }
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
