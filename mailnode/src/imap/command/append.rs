//! APPEND with flags and internal date, answered with APPENDUID (RFC 4315).

use bytes::Bytes;
use imap_types::datetime::DateTime;
use imap_types::extensions::binary::LiteralOrLiteral8;
use imap_types::flag::Flag;
use imap_types::mailbox::Mailbox;
use sirms_storage::NewMessage;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::flags;
use crate::imap::response::Code;
use crate::imap::session::Session;

impl Session {
    pub(crate) async fn append(
        &mut self,
        mailbox: &Mailbox<'_>,
        flag_list: &[Flag<'_>],
        date: Option<&DateTime>,
        message: &LiteralOrLiteral8<'_>,
        spilled: Option<Bytes>,
    ) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        let bytes: &[u8] = match message {
            LiteralOrLiteral8::Literal(literal) => literal.as_ref(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.as_ref(),
        };
        // A large message was written to a spill file as it arrived: the command holds an
        // empty literal in its place.
        let spilled = spilled.filter(|_| bytes.is_empty());
        let bytes: &[u8] = spilled.as_deref().unwrap_or(bytes);
        if bytes.is_empty() {
            return Err(CommandError::no(None, "empty message"));
        }
        // The connection refuses a larger literal before it is sent; this keeps the session
        // true to the APPENDLIMIT it advertises whatever drives it.
        if bytes.len() > self.config.max_append as usize {
            let text = format!("message too large (APPENDLIMIT {} octets)", self.config.max_append);
            return Err(CommandError::no(Some(Code::TooBig), text));
        }
        self.quotas.room_for(&user, bytes.len() as u64, 1).await?;
        let new = NewMessage {
            bytes: spilled.clone().unwrap_or_else(|| Bytes::copy_from_slice(bytes)),
            flags: flags::from_imap(flag_list)?,
            internal_date: date.map(|d| d.as_ref().timestamp()),
            idempotency_key: None,
            keep_uid: None,
        };
        let appended = self.store.append(&user, &name, new).await.map_err(|e| CommandError::from(e).try_create())?;
        // The EXISTS for an append to the selected mailbox is reported before the tagged OK like
        // any other change, once the view has the message.
        self.catch_up(&name, appended.uid).await?;
        Ok(Done::with(Code::AppendUid { uid_validity: appended.uid_validity, uid: appended.uid }, "APPEND completed"))
    }
}
