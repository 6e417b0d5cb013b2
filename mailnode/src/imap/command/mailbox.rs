//! CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE.

use imap_types::mailbox::Mailbox;
use sirms_storage::StoreError;

use super::mailbox_name;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::Code;
use crate::imap::session::Session;

impl Session {
    pub(crate) async fn create(&mut self, mailbox: &Mailbox<'_>) -> CommandResult {
        let name = mailbox_name(mailbox)?;
        if name == "INBOX" {
            return Err(CommandError::no(Some(Code::AlreadyExists), "INBOX always exists"));
        }
        let user = self.login_name()?;
        self.store.create_mailbox(&user, &name, None).await?;
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
