//! Moving a user's mailboxes to another home without losing mail. A user with a replica moves
//! through it: the target becomes the replica (filled by the nodes' catch-up, same UIDs), then
//! the home, with the old home as the replica. A user with one copy is moved by copying:
//! copy, switch the home in the directory, copy what arrived meanwhile, then delete only what
//! was copied.

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
/// How often the directory is read while waiting.
const SYNC_POLL: Duration = Duration::from_millis(500);

type Admin = AdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>>;

/// What a move did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MoveReport {
    pub mailboxes: usize,
    pub messages: usize,
    /// Messages that reached the old home after the last pass; left there, not lost.
    pub left_behind: usize,
    /// For a move through the replica: the old home, now the replica, in sync.
    pub replica: Option<String>,
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
                let message = NewMessage {
                    bytes,
                    flags: m.meta.flags.clone(),
                    internal_date: Some(m.meta.internal_date),
                    idempotency_key: None,
                    keep_uid: None,
                };
                to.append(user, &mailbox.name, message).await?;
                copied += 1;
            }
            *last = last.saturating_add(BATCH).min(status.uid_next.saturating_sub(1));
        }
    }
    Ok(copied)
}

/// Moves a user who has a replica, as the module says. Mail goes on arriving throughout: every
/// write goes to both copies and a catch-up compares by UID, so nothing is lost or doubled.
async fn move_through_replica(
    admin: &mut Admin,
    record: User,
    new_home: &str,
    wait: Duration,
) -> Result<MoveReport, MoveError> {
    let placed = |home: &str, replica: &str| User {
        address: record.address.clone(),
        home: home.to_string(),
        replica: replica.to_string(),
        quota_bytes: record.quota_bytes,
        ..Default::default()
    };
    if record.replica != new_home {
        eprintln!("{}: making {new_home} the replica and waiting for it to catch up…", record.address);
        admin.put_user(placed(&record.home, new_home)).await?;
        wait_in_sync(admin, &record.address, &record.home, new_home, wait).await?;
    }
    eprintln!("{}: making {new_home} the home and {} the replica…", record.address, record.home);
    admin.put_user(placed(new_home, &record.home)).await?;
    wait_in_sync(admin, &record.address, new_home, &record.home, wait).await?;
    Ok(MoveReport { replica: Some(record.home), ..Default::default() })
}

/// Waits (up to `wait`) until the directory shows `address` homed on `home` with `replica` in sync.
async fn wait_in_sync(
    admin: &mut Admin,
    address: &str,
    home: &str,
    replica: &str,
    wait: Duration,
) -> Result<(), MoveError> {
    let start = std::time::Instant::now();
    let mut said = start;
    loop {
        let directory = admin.get_directory(Empty {}).await?.into_inner();
        let user = directory.users.iter().find(|u| u.address == address);
        match user {
            Some(u) if u.home == home && u.replica == replica && u.replica_in_sync => return Ok(()),
            Some(u) if u.home == home && u.replica == replica => {}
            _ => return Err(MoveError::Invalid(format!("{address} was changed by someone else during the move"))),
        }
        if start.elapsed() > wait {
            return Err(MoveError::Invalid(format!(
                "{replica} did not catch up in {wait:?}; {address} stays on {home}, readable"
            )));
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!("  still catching up ({} s)", start.elapsed().as_secs());
            said = std::time::Instant::now();
        }
        tokio::time::sleep(SYNC_POLL).await;
    }
}

/// Moves `user`'s mailboxes to `new_home`, through the router at `router`.
pub async fn move_user(
    router: &str,
    credentials: &Credentials,
    user: &str,
    new_home: &str,
    wait: Duration,
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
    if !record.replica.is_empty() {
        return move_through_replica(&mut admin, record.clone(), new_home, wait).await;
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
            quota_bytes: record.quota_bytes,
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
