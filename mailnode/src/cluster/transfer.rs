//! Moving a user's mailboxes to another home without losing mail: copy, switch the home
//! in the directory, copy what arrived meanwhile, then delete only what was copied.

use std::collections::HashMap;
use std::time::Duration;

use sirms_proto::cluster::admin_client::AdminClient;
use sirms_proto::cluster::{Empty, User};
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use sirms_storage::{BodyPart, FlagOp, Flags, MailStore, NewMessage, RemoteStore, StoreError, SystemFlags, UidSet};

/// Messages copied per fetch, so a large mailbox never sits in memory whole.
const BATCH: u32 = 64;
/// Time for every node to hear about the new home before the last copy pass.
const SETTLE: Duration = Duration::from_secs(2);

/// What a move did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MoveReport {
    pub mailboxes: usize,
    pub messages: usize,
    /// Messages that reached the old home after the last pass; left there, not lost.
    pub left_behind: usize,
}

/// Why a move failed (nothing is deleted from the old home unless every copy succeeded).
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("router: {0}")]
    Router(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

impl From<tonic::Status> for MoveError {
    fn from(s: tonic::Status) -> Self {
        MoveError::Router(s.message().to_string())
    }
}

/// Copies every message of `user` with a UID above `done[mailbox]` from `from` to `to`,
/// keeping flags and internal dates; returns the highest UID copied per mailbox.
pub async fn copy_new(
    from: &dyn MailStore,
    to: &dyn MailStore,
    user: &str,
    done: &mut HashMap<String, u32>,
) -> Result<usize, StoreError> {
    let mut copied = 0;
    let existing: Vec<String> = to.list_mailboxes(user).await?.into_iter().map(|m| m.name).collect();
    for mailbox in from.list_mailboxes(user).await? {
        if !existing.contains(&mailbox.name) {
            match to.create_mailbox(user, &mailbox.name, mailbox.special_use).await {
                Ok(()) | Err(StoreError::MailboxExists) => {}
                Err(e) => return Err(e),
            }
        }
        if mailbox.subscribed {
            to.subscribe(user, &mailbox.name, true).await?;
        }
        let last = done.entry(mailbox.name.clone()).or_insert(0);
        loop {
            let range = UidSet::range(last.saturating_add(1), last.saturating_add(BATCH));
            let status = from.status(user, &mailbox.name).await?;
            if *last + 1 >= status.uid_next {
                break;
            }
            for m in from.fetch(user, &mailbox.name, &range, BodyPart::Full).await? {
                let Some(bytes) = m.body else { continue };
                let message =
                    NewMessage { bytes, flags: m.meta.flags.clone(), internal_date: Some(m.meta.internal_date) };
                to.append(user, &mailbox.name, message).await?;
                copied += 1;
            }
            *last = last.saturating_add(BATCH).min(status.uid_next.saturating_sub(1));
        }
    }
    Ok(copied)
}

/// Moves `user`'s mailboxes to `new_home`, through the router at `router`.
pub async fn move_user(
    router: &str,
    credentials: &Credentials,
    user: &str,
    new_home: &str,
) -> Result<MoveReport, MoveError> {
    let token = credentials.token.as_str();
    let channel = credentials
        .endpoint(router)
        .map_err(|e| MoveError::Router(e.to_string()))?
        .connect()
        .await
        .map_err(|e| MoveError::Router(e.to_string()))?;
    let interceptor = TokenInterceptor::new(token).ok_or_else(|| MoveError::Invalid("invalid token".into()))?;
    let mut admin = AdminClient::with_interceptor(channel, interceptor);
    let directory = admin.get_directory(Empty {}).await?.into_inner();
    let address = user.to_lowercase();
    let record = directory
        .users
        .iter()
        .find(|u| u.address == address)
        .ok_or_else(|| MoveError::Invalid(format!("no user {address}")))?;
    let endpoint = |id: &str| {
        directory
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.store_endpoint.clone())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| MoveError::Invalid(format!("node {id} has no store endpoint")))
    };
    if record.home == new_home {
        return Err(MoveError::Invalid(format!("{address} already lives on {new_home}")));
    }
    let old = RemoteStore::connect_with(&endpoint(&record.home)?, credentials)?;
    let new = RemoteStore::connect_with(&endpoint(new_home)?, credentials)?;

    let mut done = HashMap::new();
    let mut report = MoveReport { messages: copy_new(&old, &new, &address, &mut done).await?, ..Default::default() };
    admin
        .put_user(User {
            address: address.clone(),
            password_hash: String::new(),
            home: new_home.into(),
            ..Default::default()
        })
        .await?;
    tokio::time::sleep(SETTLE).await;
    report.messages += copy_new(&old, &new, &address, &mut done).await?;
    report.mailboxes = done.len();
    // Delete from the old home only what was copied; anything newer stays and is counted.
    let deleted = Flags::system(SystemFlags::DELETED);
    for (mailbox, last) in &done {
        if *last > 0 {
            let copied = UidSet::range(1, *last);
            old.store_flags(&address, mailbox, &copied, FlagOp::Add, &deleted, None).await?;
            old.expunge(&address, mailbox, Some(&copied)).await?;
        }
        report.left_behind += old.status(&address, mailbox).await?.messages as usize;
    }
    Ok(report)
}
