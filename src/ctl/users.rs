//! `sirms ctl users`: accounts, their passwords, their homes and replicas.
//!
//! Passwords are hashed here with the mail node's own hashing, so no clear password
//! crosses the admin API; a move copies mailboxes with the mail node's transfer code.

use std::io::Read;

use clap::Subcommand;
use sirms_mailnode::auth::password::hash_password;
use sirms_mailnode::cluster::transfer::move_user;
use sirms_proto::cluster::{Empty, Name, User};
use sirms_proto::cluster_tls::Credentials;
use sirms_router::directory::canonical_address;

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users, their homes and replicas.
    List,
    /// One user: home, replica, whether the replica is in sync, epoch, quota.
    Show { address: String },
    /// Add a user, or change one's password or home. The password is read from stdin
    /// (one line) unless --password is given.
    Add {
        address: String,
        #[arg(long)]
        password: Option<String>,
        /// Node or storage node that holds the mailbox (default: the router picks).
        #[arg(long, default_value = "")]
        home: String,
        /// Node or storage node that holds the second copy, not the home (default: the
        /// stored one, or the router picks one when the cluster has two store-capable nodes).
        #[arg(long, default_value = "")]
        replica: String,
        /// Keep the stored password (to change only the home).
        #[arg(long)]
        keep_password: bool,
    },
    /// Change a user's password (read from stdin unless --password is given).
    Passwd {
        address: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Move a user's mailboxes to another node or storage node, losing nothing.
    Move {
        address: String,
        /// The new home.
        #[arg(long)]
        to: String,
        /// Longest wait, in seconds, for a new copy to catch up (a move through the replica).
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
    /// Remove a user (the mailbox stays on its home).
    #[command(alias = "rm")]
    Remove { address: String },
}

/// `router` and `credentials` are for `move`, which talks to the router and the stores itself.
pub(super) async fn run(
    c: &mut Client,
    router: &str,
    credentials: &Credentials,
    json: bool,
    cmd: UsersCmd,
) -> Result<String, CtlError> {
    match cmd {
        UsersCmd::List => {
            let users = users(c).await?;
            show(json, &users, |l| l.iter().map(line).collect())
        }
        UsersCmd::Show { address } => {
            let (local, domain) = canonical_address(&address).map_err(|e| CtlError::Input(e.to_string()))?;
            let address = format!("{local}@{domain}");
            let user = users(c).await?.into_iter().find(|u| u.address == address);
            let user = user.ok_or_else(|| CtlError::Input(format!("no user {address}")))?;
            show(json, &user, card)
        }
        UsersCmd::Add { address, password, home, replica, keep_password } => {
            let password_hash = if keep_password { String::new() } else { password_hash(password)? };
            acked(json, c.put_user(User { address, password_hash, home, replica, ..Default::default() }).await)
        }
        UsersCmd::Passwd { address, password } => {
            let password_hash = password_hash(password)?;
            acked(json, c.put_user(User { address, password_hash, ..Default::default() }).await)
        }
        UsersCmd::Move { address, to, wait_secs } => {
            let wait = std::time::Duration::from_secs(wait_secs);
            let moved = move_user(router, credentials, &address, &to, wait)
                .await
                .map_err(|e| CtlError::Input(e.to_string()))?;
            let report = match &moved.replica {
                Some(old) => format!("moved to {to} through its replica; {old} keeps the second copy, in sync"),
                None => format!(
                    "moved {} messages in {} mailboxes to {to}; {} arrived late and stay on the old home",
                    moved.messages, moved.mailboxes, moved.left_behind
                ),
            };
            show(json, &serde_json::json!({ "ok": true, "report": report }), |_| report.clone())
        }
        UsersCmd::Remove { address } => acked(json, c.remove_user(Name { name: address }).await),
    }
}

/// Every user, without password hashes (they stay out of listings, in JSON too).
async fn users(c: &mut Client) -> Result<Vec<User>, CtlError> {
    let users = c.get_directory(Empty {}).await?.into_inner().users;
    Ok(users.into_iter().map(|u| User { password_hash: String::new(), ..u }).collect())
}

/// A user's replica and its state, for a listing: `node2 in_sync=yes`, `-` for none.
fn replica(u: &User) -> String {
    match (u.replica.as_str(), u.replica_in_sync) {
        ("", _) => "-".into(),
        (node, true) => format!("{node} in_sync=yes"),
        (node, false) => format!("{node} in_sync=no"),
    }
}

/// One line of `users list`.
fn line(u: &User) -> String {
    let quota = match u.quota_bytes {
        0 => String::new(),
        q => format!(" quota={q}"),
    };
    format!("{} home={} replica={} epoch={}{quota}\n", u.address, u.home, replica(u), u.epoch)
}

/// `users show`.
fn card(u: &User) -> String {
    let replica = if u.replica.is_empty() { "none (one copy)" } else { u.replica.as_str() };
    let in_sync = match (u.replica.is_empty(), u.replica_in_sync) {
        (true, _) => "-",
        (false, true) => "yes",
        (false, false) => "no (the nodes are filling it)",
    };
    let quota = match u.quota_bytes {
        0 => "none".to_string(),
        q => format!("{q} bytes"),
    };
    format!(
        "user     {}\nhome     {}\nreplica  {replica}\nin sync  {in_sync}\nepoch    {}\nquota    {quota}\n",
        u.address, u.home, u.epoch
    )
}

/// The hash of the given password, or of the first line of stdin.
fn password_hash(password: Option<String>) -> Result<String, CtlError> {
    let password = match password {
        Some(p) => p,
        None => {
            let mut text = String::new();
            std::io::stdin().take(4096).read_to_string(&mut text).map_err(|e| CtlError::Input(e.to_string()))?;
            text.lines().next().unwrap_or_default().to_string()
        }
    };
    if password.is_empty() {
        return Err(CtlError::Input("empty password".into()));
    }
    hash_password(&password).map_err(|e| CtlError::Input(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_show_the_replica_and_its_state() {
        let u = User {
            address: "a@example.test".into(),
            home: "store1".into(),
            replica: "node2".into(),
            epoch: 3,
            replica_in_sync: true,
            ..Default::default()
        };
        assert_eq!(line(&u), "a@example.test home=store1 replica=node2 in_sync=yes epoch=3\n");
        let alone = User { replica: String::new(), quota_bytes: 9, ..u.clone() };
        assert_eq!(line(&alone), "a@example.test home=store1 replica=- epoch=3 quota=9\n");
        let behind = User { replica_in_sync: false, ..u };
        assert!(card(&behind).contains("replica  node2\nin sync  no"), "{}", card(&behind));
    }
}
