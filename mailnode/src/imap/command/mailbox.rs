//! CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE.

use imap_types::mailbox::Mailbox;
use sirms_storage::{SpecialUse, StoreError};

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::Code;
use crate::imap::session::Session;

impl Session {
    /// CREATE, with the special uses of CREATE-SPECIAL-USE (RFC 6154 §3) if any were asked for.
    pub(crate) async fn create(&mut self, mailbox: &Mailbox<'_>, uses: &[String]) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        if name == "INBOX" {
            return Err(CommandError::no(Some(Code::AlreadyExists), "INBOX always exists"));
        }
        let special_use = special_use(uses)?;
        let user = self.login_name()?;
        self.store.create_mailbox(&user, &name, special_use).await?;
        Ok(Done::ok("CREATE completed"))
    }

    pub(crate) async fn delete(&mut self, mailbox: &Mailbox<'_>) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        self.store.delete_mailbox(&user, &name).await?;
        Ok(Done::ok("DELETE completed"))
    }

    pub(crate) async fn rename(&mut self, from: &Mailbox<'_>, to: &Mailbox<'_>) -> CommandResult {
        let (from, to) = (mailbox_name(from)?, mailbox_name(to)?);
        if to == "INBOX" {
            return Err(CommandError::no(Some(Code::AlreadyExists), "INBOX always exists"));
        }
        let user = self.login_name()?;
        self.store.rename_mailbox(&user, &from, &to).await?;
        Ok(Done::ok("RENAME completed"))
    }

    pub(crate) async fn subscribe(&mut self, mailbox: &Mailbox<'_>, subscribed: bool) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        let user = self.login_name()?;
        match self.store.subscribe(&user, &name, subscribed).await {
            Ok(()) => {}
            // Unsubscribing from a mailbox that is gone must work, or the client can never clean up.
            Err(StoreError::NoSuchMailbox) if !subscribed => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Done::ok(if subscribed { "SUBSCRIBE completed" } else { "UNSUBSCRIBE completed" }))
    }
}

/// The one special use a new mailbox may have: the store keeps one per mailbox, and `\All`
/// and `\Flagged` name virtual mailboxes, which a created (empty, real) one cannot be.
fn special_use(uses: &[String]) -> Result<Option<SpecialUse>, CommandError> {
    match uses {
        [] => Ok(None),
        [one] => match SpecialUse::from_attribute(one) {
            Some(SpecialUse::All | SpecialUse::Flagged) => {
                Err(CommandError::no(Some(Code::UseAttr), format!("{one} is a virtual mailbox's use")))
            }
            Some(special_use) => Ok(Some(special_use)),
            None => Err(CommandError::no(Some(Code::UseAttr), format!("unknown special use {one}"))),
        },
        _ => Err(CommandError::no(Some(Code::UseAttr), "a mailbox has at most one special use here")),
    }
}
