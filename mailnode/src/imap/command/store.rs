//! STORE and UID STORE: +FLAGS, -FLAGS, FLAGS, .SILENT, and CONDSTORE's UNCHANGEDSINCE (RFC 7162).

use imap_types::command::StoreModifier;
use imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_types::sequence::SequenceSet;
use sirms_storage::{BodyPart, FlagOp, UidSet};
use tokio::io::AsyncWriteExt;

use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::flags;
use crate::imap::response::{Code, Data};
use crate::imap::selected::render_uids;
use crate::imap::session::{Session, Sink};

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flag_list: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let user = self.login_name()?;
        let change = flags::from_imap(flag_list)?;
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Set,
        };
        let unchanged_since = modifiers.iter().map(|StoreModifier::UnchangedSince(n)| *n).next();
        if unchanged_since.is_some() {
            self.enable_condstore(out).await?;
        }
        let (condstore, qresync) = (self.condstore, self.qresync);
        let view = self.selected()?;
        if view.read_only {
            return Err(CommandError::no(Some(Code::ReadOnly), "mailbox is read-only"));
        }
        let indexes = view.resolve(set, uid)?;
        if indexes.is_empty() {
            return Ok(Done::ok("STORE completed (no messages)"));
        }
        let uids = view.uids(&indexes);
        let name = view.name.clone();
        let changed = self.store.store_flags(&user, &name, &uids, op, &change, unchanged_since).await?;
        let changed_uids: UidSet = changed.iter().map(|m| m.uid).collect();
        let view = self.selected()?;
        for meta in changed {
            view.update(meta);
        }
        // Messages UNCHANGEDSINCE protected: those the store left alone although their modseq is newer.
        let mut modified = Vec::new();
        if let Some(limit) = unchanged_since {
            let untouched: UidSet = indexes
                .iter()
                .filter_map(|&i| view.entry(i))
                .map(|e| e.meta.uid)
                .filter(|&u| !changed_uids.contains(u))
                .collect();
            if !untouched.is_empty() {
                let current = self.store.fetch(&user, &name, &untouched, BodyPart::None).await?;
                modified = current.iter().filter(|m| m.meta.modseq > limit).map(|m| m.meta.uid).collect();
            }
        }
        let view = self.selected()?;
        let mut lines = view.flags_update().unwrap_or_default();
        for &index in &indexes {
            let Some(entry) = view.entry(index) else { continue };
            let uid_value = entry.meta.uid;
            if modified.contains(&uid_value) {
                continue;
            }
            // .SILENT still reports changes the client did not ask for (RFC 7162 §3.2); without
            // CONDSTORE there are none, so nothing is sent.
            if response == StoreResponse::Silent && !(condstore && changed_uids.contains(uid_value)) {
                continue;
            }
            let mut data = Data::new(index + 1);
            data.raw(" FETCH (");
            // With QRESYNC every FETCH names its UID (RFC 7162 §3.2.4), so that a client that
            // tracks messages by UID alone can apply it.
            if uid || qresync {
                data.raw(format_args!("UID {uid_value} "));
            }
            data.raw(format_args!("FLAGS ({})", flags::render(&entry.meta.flags, entry.recent)));
            if condstore {
                data.raw(format_args!(" MODSEQ ({})", entry.meta.modseq));
            }
            data.raw(")");
            lines.extend(data.finish());
        }
        out.write_all(&lines).await?;
        if !modified.is_empty() {
            let text = if uid {
                render_uids(&modified)
            } else {
                let seqs: Vec<u32> = modified.iter().filter_map(|&u| view.index_of(u)).map(|i| i as u32 + 1).collect();
                render_uids(&seqs)
            };
            return Ok(Done::with(Code::Modified(text), "conditional STORE failed for some messages"));
        }
        Ok(Done::ok("STORE completed"))
    }
}
