//! `sirms ctl users`: accounts, their passwords and their homes.
//!
//! Passwords are hashed here with the mail node's own hashing, so no clear password
//! crosses the admin API; a move copies mailboxes with the mail node's transfer code.

use std::io::Read;

use clap::Subcommand;
use sirms_mailnode::auth::password::hash_password;
use sirms_mailnode::cluster::transfer::move_user;
use sirms_proto::cluster::{Empty, Name, User};
use sirms_proto::cluster_tls::Credentials;

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users and their homes.
    List,
    /// Add a user, or change one's password or home. The password is read from stdin
    /// (one line) unless --password is given.
    Add {
        address: String,
        #[arg(long)]
        password: Option<String>,
        /// Node or storage node that holds the mailbox (default: the router picks).
        #[arg(long, default_value = "")]
        home: String,
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
            // Password hashes stay out of the listing, in JSON too.
            let users: Vec<User> = c
                .get_directory(Empty {})
                .await?
                .into_inner()
                .users
                .into_iter()
                .map(|u| User { password_hash: String::new(), ..u })
                .collect();
            show(json, &users, |l| {
                l.iter()
                    .map(|u| match u.quota_bytes {
                        0 => format!("{} home={}\n", u.address, u.home),
                        q => format!("{} home={} quota={q}\n", u.address, u.home),
                    })
                    .collect()
            })
        }
        UsersCmd::Add { address, password, home, keep_password } => {
            let password_hash = if keep_password { String::new() } else { password_hash(password)? };
            acked(json, c.put_user(User { address, password_hash, home, ..Default::default() }).await)
        }
        UsersCmd::Passwd { address, password } => {
            let password_hash = password_hash(password)?;
            acked(json, c.put_user(User { address, password_hash, ..Default::default() }).await)
        }
        UsersCmd::Move { address, to } => {
            let moved =
                move_user(router, credentials, &address, &to).await.map_err(|e| CtlError::Input(e.to_string()))?;
            let report = format!(
                "moved {} messages in {} mailboxes to {to}; {} arrived late and stay on the old home",
                moved.messages, moved.mailboxes, moved.left_behind
            );
            show(json, &serde_json::json!({ "ok": true, "report": report }), |_| report.clone())
        }
        UsersCmd::Remove { address } => acked(json, c.remove_user(Name { name: address }).await),
    }
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
