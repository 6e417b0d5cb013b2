//! `sirms ctl nodes evacuate NODE`: every copy of a mailbox off a node, for maintenance,
//! through the replicas and with mail arriving throughout. The node is drained first; then,
//! in a first wave, users whose replica it holds get another replica, and users it is home
//! for get an in-sync replica elsewhere if they lack one; in a second wave those users' homes
//! move to their replica and a new replica is placed. Each wave waits for the nodes' catch-up
//! to bring every new copy in sync before the next.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use sirms_proto::cluster::{DirectorySnapshot, DrainRequest, Empty, User};

use super::{Client, CtlError, show};

/// How often the directory is read while waiting.
const POLL: Duration = Duration::from_secs(1);

/// Nodes that can hold a copy, other than `node` and the nodes in `not`, for `address`
/// (spread by a hash of the address).
fn pick(directory: &DirectorySnapshot, node: &str, not: &[&str], address: &str) -> Result<String, CtlError> {
    let candidates: Vec<&str> = directory
        .nodes
        .iter()
        .filter(|n| n.id != node && !n.drained && !not.contains(&n.id.as_str()))
        .filter(|n| n.storage_only || !n.store_endpoint.is_empty())
        .map(|n| n.id.as_str())
        .collect();
    if candidates.is_empty() {
        return Err(CtlError::Input(format!("no other node can hold a copy of {address}")));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    address.hash(&mut hasher);
    Ok(candidates[(hasher.finish() % candidates.len() as u64) as usize].to_string())
}

/// A user's record as an admin change: only the placement moves.
fn placed(user: &User, home: &str, replica: &str) -> User {
    User { address: user.address.clone(), home: home.to_string(), replica: replica.to_string(), ..Default::default() }
}

/// Waits until every user in `users` is `placed` with its replica in sync, showing progress.
async fn settle(
    c: &mut Client,
    users: &BTreeSet<String>,
    wave: &str,
    wait: Duration,
    placed: impl Fn(&User) -> bool,
) -> Result<(), CtlError> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    loop {
        let directory = c.get_directory(Empty {}).await?.into_inner();
        let done = directory
            .users
            .iter()
            .filter(|u| users.contains(&u.address))
            .filter(|u| u.replica_in_sync && placed(u))
            .count();
        let line = format!("{wave}: {done}/{} in sync ({} s)", users.len(), start.elapsed().as_secs());
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
        if done == users.len() {
            if tty {
                eprintln!();
            }
            return Ok(());
        }
        if start.elapsed() > wait {
            return Err(CtlError::Input(format!("{wave}: copies not in sync after {wait:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the evacuation of `node`.
pub(super) async fn run(c: &mut Client, json: bool, node: String, wait: Duration) -> Result<String, CtlError> {
    c.drain_node(DrainRequest { id: node.clone(), drained: true }).await?;
    let directory = c.get_directory(Empty {}).await?.into_inner();
    let mut first = BTreeSet::new();
    let mut homes = Vec::new();
    for user in directory.users.iter().filter(|u| u.home == node || u.replica == node) {
        if user.replica == node {
            let replica = pick(&directory, &node, &[&user.home], &user.address)?;
            c.put_user(placed(user, &user.home, &replica)).await?;
            first.insert(user.address.clone());
        } else if user.replica.is_empty() || !user.replica_in_sync {
            let replica = pick(&directory, &node, &[], &user.address)?;
            c.put_user(placed(user, &node, &replica)).await?;
            first.insert(user.address.clone());
            homes.push(user.address.clone());
        } else {
            homes.push(user.address.clone());
        }
    }
    settle(c, &first, "replicas", wait, |u| u.replica != node).await?;
    let directory = c.get_directory(Empty {}).await?.into_inner();
    let moving: BTreeSet<String> = homes.iter().cloned().collect();
    for user in directory.users.iter().filter(|u| moving.contains(&u.address) && u.home == node) {
        let replica = pick(&directory, &node, &[&user.replica], &user.address)?;
        c.put_user(placed(user, &user.replica, &replica)).await?;
    }
    settle(c, &moving, "homes", wait, |u| u.home != node && u.replica != node).await?;
    let report = format!(
        "{node} evacuated: {} homes and {} replicas moved; it is drained (undrain it to take traffic again)",
        moving.len(),
        first.len() - first.intersection(&moving).count()
    );
    show(json, &serde_json::json!({ "ok": true, "report": report }), |_| report.clone())
}
