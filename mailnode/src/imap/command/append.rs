//! APPEND with flags and internal date, answered with APPENDUID (RFC 4315), and with several
//! messages in one command, MULTIAPPEND (RFC 3502), stored all or none.

use bytes::Bytes;
use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::Flag;
use imap_types::mailbox::Mailbox;
use sirms_storage::NewMessage;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::extension::AppendMessage;
use crate::imap::flags;
use crate::imap::response::Code;
use crate::imap::selected::render_uids;
use crate::imap::session::Session;

/// An APPEND of one message as the message list [`Session::append`] takes.
///
/// A spilled message is the command's last literal, so its spill entry is the last one.
pub(crate) fn single(
    flag_list: &[Flag<'_>],
    date: Option<&DateTime>,
    message: &LiteralOrLiteral8<'_>,
    spilled: &[(usize, Bytes)],
) -> AppendMessage {
    let bytes: &[u8] = match message {
        LiteralOrLiteral8::Literal(literal) => literal.as_ref(),
        LiteralOrLiteral8::Literal8(literal) => literal.data.as_ref(),
    };
    AppendMessage {
        flags: flag_list.iter().map(|f| imap_types::IntoStatic::into_static(f.clone())).collect(),
        date: date.cloned(),
        bytes: Bytes::copy_from_slice(bytes),
        literal_at: spilled.last().map_or(0, |(at, _)| *at),
    }
}

/// A message's octets: those sent with the command, or, where the command holds an empty
/// literal, the spill file the connection wrote them to.
fn octets(message: &AppendMessage, spilled: &[(usize, Bytes)]) -> Bytes {
    if !message.bytes.is_empty() {
        return message.bytes.clone();
    }
    spilled.iter().find(|(at, _)| *at == message.literal_at).map(|(_, bytes)| bytes.clone()).unwrap_or_default()
}

impl Session {
    /// Appends `messages` to `mailbox`: every check (sizes, flags, quota for them all) before
    /// the first is stored, then all are stored or none remains ([`sirms_storage::append_all`]).
    pub(crate) async fn append(
        &mut self,
        mailbox: &Mailbox<'_>,
        messages: Vec<AppendMessage>,
        spilled: &[(usize, Bytes)],
    ) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        if messages.len() > self.config.max_append_messages as usize {
            let text = format!("too many messages in one APPEND (limit {})", self.config.max_append_messages);
            return Err(CommandError::no(Some(Code::Limit), text));
        }
        let mut new = Vec::with_capacity(messages.len());
        let mut total: u64 = 0;
        for message in &messages {
            let bytes = octets(message, spilled);
            if bytes.is_empty() {
                return Err(CommandError::no(None, "empty message"));
            }
            // The connection refuses a larger literal before it is sent; this keeps the session
            // true to the APPENDLIMIT it advertises whatever drives it.
            if bytes.len() > self.config.max_append as usize {
                let text = format!("message too large (APPENDLIMIT {} octets)", self.config.max_append);
                return Err(CommandError::no(Some(Code::TooBig), text));
            }
            total = total.saturating_add(bytes.len() as u64);
            new.push(NewMessage {
                bytes,
                flags: flags::from_imap(&message.flags)?,
                internal_date: message.date.as_ref().map(|d| d.as_ref().timestamp()),
                idempotency_key: None,
                keep_uid: None,
            });
        }
        if total > self.config.max_append_command {
            let text =
                format!("messages too large together (limit {} octets per APPEND)", self.config.max_append_command);
            return Err(CommandError::no(Some(Code::TooBig), text));
        }
        self.quotas.room_for(&user, total, new.len() as u64).await?;
        let appended = sirms_storage::append_all(self.store.as_ref(), &user, &name, new)
            .await
            .map_err(|e| CommandError::from(e).try_create())?;
        let (Some(first), Some(last)) = (appended.first(), appended.last()) else {
            return Err(CommandError::bad("APPEND without a message"));
        };
        // The EXISTS for an append to the selected mailbox is reported before the tagged OK like
        // any other change, once the view has the messages.
        self.catch_up(&name, last.uid).await?;
        let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
        let code = Code::AppendUid { uid_validity: first.uid_validity, uids: render_uids(&uids) };
        Ok(Done::with(code, "APPEND completed"))
    }
}
