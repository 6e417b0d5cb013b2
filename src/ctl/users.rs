//! `sirms ctl users`: accounts, their passwords, their homes and replicas.
//!
//! Passwords are hashed here with the mail node's own hashing, so no clear password
//! crosses the admin API; a move copies mailboxes with the mail node's transfer code.

use std::io::Read;

use clap::Subcommand;
use sirms_mailnode::auth::password::hash_password;
use sirms_mailnode::cluster::transfer::move_user;
use sirms_proto::cluster::{Empty, Name, Node, User};
use sirms_proto::cluster_tls::Credentials;
use sirms_router::directory::canonical_address;
use sirms_storage::{MailStore, RemoteStore};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users, their homes and replicas.
    List,
    /// One user: home, replica, whether the replica is in sync, epoch, quota, and the usage
    /// the home's store reports.
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
        /// Keep the stored password (to change only the home or the quota).
        #[arg(long)]
        keep_password: bool,
        /// The most the user's mailboxes may hold: bytes, or with a K, M, G or T suffix
        /// (powers of 1024); 0 or `none` removes the limit (default: the stored one).
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
        /// The most messages the user's mailboxes may hold; 0 or `none` removes the limit
        /// (default: the stored one).
        #[arg(long, value_parser = parse_count)]
        quota_messages: Option<u64>,
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
            let directory = c.get_directory(Empty {}).await?.into_inner();
            let user = directory.users.iter().find(|u| u.address == address);
            let user = user.ok_or_else(|| CtlError::Input(format!("no user {address}")))?;
            let user = User { password_hash: String::new(), ..user.clone() };
            let usage = usage(&directory.nodes, &user, credentials).await;
            show(json, &Shown { user, usage }, card)
        }
        UsersCmd::Add { address, password, home, replica, keep_password, quota, quota_messages } => {
            let password_hash = if keep_password { String::new() } else { password_hash(password)? };
            let user = User {
                address,
                password_hash,
                home,
                replica,
                quota_bytes: quota,
                quota_messages,
                ..Default::default()
            };
            acked(json, c.put_user(user).await)
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
    let mut quota = String::new();
    if let Some(bytes) = u.quota_bytes.filter(|&b| b > 0) {
        quota += &format!(" quota={bytes}");
    }
    if let Some(messages) = u.quota_messages.filter(|&m| m > 0) {
        quota += &format!(" quota_messages={messages}");
    }
    format!("{} home={} replica={} epoch={}{quota}\n", u.address, u.home, replica(u), u.epoch)
}

/// What `users show` reports: the directory's record and what the home's store holds.
#[derive(serde::Serialize)]
struct Shown {
    #[serde(flatten)]
    user: User,
    usage: Usage,
}

/// The user's mail as the home's store counts it, or why it could not be asked.
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Usage {
    Counted { bytes: u64, messages: u64 },
    Unknown(String),
}

/// How long `users show` waits for the home's store.
const USAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the user's home store for the user's usage.
pub(super) async fn usage(nodes: &[Node], user: &User, credentials: &Credentials) -> Usage {
    let Some(endpoint) = nodes.iter().find(|n| n.id == user.home).map(|n| n.store_endpoint.as_str()) else {
        return Usage::Unknown(format!("the home {} is not in the directory", user.home));
    };
    if endpoint.is_empty() {
        return Usage::Unknown(format!("the home {} has no store endpoint", user.home));
    }
    let counted = async {
        let store = RemoteStore::connect_with(endpoint, credentials)?;
        store.quota(&user.address).await
    };
    match tokio::time::timeout(USAGE_WAIT, counted).await {
        Ok(Ok(q)) => Usage::Counted { bytes: q.bytes, messages: q.messages },
        Ok(Err(e)) => Usage::Unknown(format!("{} ({endpoint}): {e}", user.home)),
        Err(_) => Usage::Unknown(format!("{} ({endpoint}) did not answer in {USAGE_WAIT:?}", user.home)),
    }
}

/// `users show`.
fn card(shown: &Shown) -> String {
    let u = &shown.user;
    let replica = if u.replica.is_empty() { "none (one copy)" } else { u.replica.as_str() };
    let in_sync = match (u.replica.is_empty(), u.replica_in_sync) {
        (true, _) => "-",
        (false, true) => "yes",
        (false, false) => "no (the nodes are filling it)",
    };
    let (bytes, messages) = (u.quota_bytes.unwrap_or(0), u.quota_messages.unwrap_or(0));
    let quota = limits_text(bytes, messages);
    let usage = match &shown.usage {
        Usage::Counted { bytes: used, messages: count } => usage_text(*used, *count, bytes, messages),
        Usage::Unknown(why) => format!("unknown: {why}"),
    };
    format!(
        "user     {}\nhome     {}\nreplica  {replica}\nin sync  {in_sync}\nepoch    {}\nquota    {quota}\nusage    {usage}\n",
        u.address, u.home, u.epoch
    )
}

/// A quota for people: `4194304 bytes (4.0 MiB), 200 messages`; a limit of 0 is none.
pub(super) fn limits_text(bytes: u64, messages: u64) -> String {
    match (bytes, messages) {
        (0, 0) => "none".to_string(),
        (b, 0) => size(b),
        (0, m) => format!("{m} messages"),
        (b, m) => format!("{}, {m} messages", size(b)),
    }
}

/// Usage for people, with its share of each limit that is set (0: none).
pub(super) fn usage_text(used: u64, count: u64, bytes: u64, messages: u64) -> String {
    let share = |used: u64, limit: u64| {
        used.saturating_mul(100).checked_div(limit).map(|percent| format!(" ({percent}%)")).unwrap_or_default()
    };
    format!("{}{} in {count} messages{}", size(used), share(used, bytes), share(count, messages))
}

/// Bytes for people: `1536 bytes (1.5 KiB)`.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = None;
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(unit) => format!("{bytes} bytes ({value:.1} {unit})"),
        None => format!("{bytes} bytes"),
    }
}

/// `--quota`: bytes, or with a K, M, G or T suffix (powers of 1024); `none` is 0.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    let (digits, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown unit {c:?}: use K, M, G or T")),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let number: u64 = digits.trim().parse().map_err(|_| format!("not a size: {text:?}"))?;
    number.checked_mul(1 << shift).ok_or_else(|| format!("too large: {text:?}"))
}

/// `--quota-messages`: a count; `none` is 0.
pub(super) fn parse_count(text: &str) -> Result<u64, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    text.trim().parse().map_err(|_| format!("not a number: {text:?}"))
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
        let alone = User { replica: String::new(), quota_bytes: Some(9), quota_messages: Some(4), ..u.clone() };
        assert_eq!(line(&alone), "a@example.test home=store1 replica=- epoch=3 quota=9 quota_messages=4\n");
        let behind = Shown { user: User { replica_in_sync: false, ..u }, usage: Usage::Unknown("down".into()) };
        assert!(card(&behind).contains("replica  node2\nin sync  no"), "{}", card(&behind));
        assert!(card(&behind).contains("quota    none\nusage    unknown: down\n"), "{}", card(&behind));
    }

    #[test]
    fn the_card_shows_usage_against_the_limits() {
        let user = User {
            address: "a@example.test".into(),
            quota_bytes: Some(4 << 20),
            quota_messages: Some(200),
            ..Default::default()
        };
        let shown = Shown { user, usage: Usage::Counted { bytes: 1 << 20, messages: 50 } };
        assert!(
            card(&shown).contains(
                "quota    4194304 bytes (4.0 MiB), 200 messages\nusage    1048576 bytes (1.0 MiB) (25%) in 50 messages (25%)\n"
            ),
            "{}",
            card(&shown)
        );
        let json = serde_json::to_value(&shown).expect("json");
        assert_eq!(json["usage"]["counted"]["messages"], 50);
        assert_eq!(json["quota_messages"], 200);
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("500m"), Ok(500 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("none"), Ok(0));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_count("none"), Ok(0));
        assert_eq!(parse_count("10000"), Ok(10000));
        assert!(parse_count("-1").is_err());
    }
}
