//! STATUS, and the STATUS responses LIST's STATUS return option (RFC 5819) sends.

use imap_types::mailbox::Mailbox;
use imap_types::status::StatusDataItemName;
use sirms_storage::SystemFlags;
use tokio::io::AsyncWriteExt;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::mutf7;
use crate::imap::response::Data;
use crate::imap::session::{Session, Sink};

impl Session {
    pub(crate) async fn status(
        &mut self,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
        append_limit: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        let response = self.status_response(&name, items, append_limit).await?;
        out.write_all(&response).await?;
        Ok(Done::ok("STATUS completed"))
    }

    /// `* STATUS name (item value …)` for the mailbox the store calls `name` (for STATUS, and
    /// LIST's STATUS return option); with `append_limit`, APPENDLIMIT last.
    pub(crate) async fn status_response(
        &mut self,
        name: &str,
        items: &[StatusDataItemName],
        append_limit: bool,
    ) -> Result<Vec<u8>, CommandError> {
        let user = self.login_name()?;
        let status = self.store.status(&user, name).await?;
        let mut fields = Vec::new();
        for item in items {
            let field = match item {
                StatusDataItemName::Messages => format!("MESSAGES {}", status.messages),
                StatusDataItemName::Recent => format!("RECENT {}", status.recent),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", status.uid_next),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", status.uid_validity),
                StatusDataItemName::Unseen => format!("UNSEEN {}", status.unseen),
                // RFC 8438: the octets of all the messages, as their RFC822.SIZE adds up.
                StatusDataItemName::Size => format!("SIZE {}", status.size),
                StatusDataItemName::HighestModSeq => {
                    self.condstore = true;
                    format!("HIGHESTMODSEQ {}", status.highest_modseq)
                }
                StatusDataItemName::Deleted => {
                    let (_, messages) = self.store.messages(&user, name).await?;
                    let deleted = messages.iter().filter(|m| m.flags.system.contains(SystemFlags::DELETED)).count();
                    format!("DELETED {deleted}")
                }
                StatusDataItemName::DeletedStorage => {
                    let (_, messages) = self.store.messages(&user, name).await?;
                    let size: u64 =
                        messages.iter().filter(|m| m.flags.system.contains(SystemFlags::DELETED)).map(|m| m.size).sum();
                    format!("DELETED-STORAGE {size}")
                }
            };
            fields.push(field);
        }
        if append_limit {
            // RFC 7889: the same limit as the capability's, since it is one for every
            // mailbox (NIL would mean none).
            fields.push(format!("APPENDLIMIT {}", self.config.max_append));
        }
        let mut data = Data::new("STATUS ");
        data.astring(&mutf7::encode(name)).raw(format_args!(" ({})", fields.join(" ")));
        Ok(data.finish())
    }
}
