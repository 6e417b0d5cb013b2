//! `sirms ctl domains`: the mail domains the cluster accepts mail for, and their quotas.

use clap::Subcommand;
use futures::StreamExt;
use sirms_proto::cluster::{DirectorySnapshot, DomainQuota, Empty, Name, User};
use sirms_proto::cluster_tls::Credentials;

use super::users::{Usage, limits_text, parse_count, parse_size, usage, usage_text};
use super::{Client, CtlError, acked, show};

/// Homes asked for their users' usage at once by `domains show`.
const USAGE_CONCURRENCY: usize = 8;

#[derive(Subcommand, Debug)]
pub enum DomainsCmd {
    /// List domains (with their quotas).
    List,
    /// One domain: its users, its quota, and their usage together as their homes count it.
    Show { domain: String },
    /// Add a domain.
    Add { domain: String },
    /// Set what all of a domain's users together may store (a limit of 0 or `none` removes it).
    Quota {
        domain: String,
        /// The most bytes, or with a K, M, G or T suffix (powers of 1024).
        #[arg(long, value_parser = parse_size, default_value = "none")]
        bytes: u64,
        /// The most messages.
        #[arg(long, value_parser = parse_count, default_value = "none")]
        messages: u64,
    },
    /// Remove a domain.
    #[command(alias = "rm")]
    Remove { domain: String },
}

pub(super) async fn run(
    c: &mut Client,
    credentials: &Credentials,
    json: bool,
    cmd: DomainsCmd,
) -> Result<String, CtlError> {
    match cmd {
        DomainsCmd::List => {
            let directory = c.get_directory(Empty {}).await?.into_inner();
            // JSON stays the list of names it always was; the quotas are in `domains show`.
            show(json, &directory.domains, |d| d.iter().map(|d| line(&directory, d)).collect())
        }
        DomainsCmd::Show { domain } => {
            let directory = c.get_directory(Empty {}).await?.into_inner();
            let domain = domain.trim().to_lowercase();
            if !directory.domains.contains(&domain) {
                return Err(CtlError::Input(format!("no domain {domain}")));
            }
            let shown = shown(&directory, &domain, credentials).await;
            show(json, &shown, card)
        }
        DomainsCmd::Add { domain } => acked(json, c.put_domain(Name { name: domain }).await),
        DomainsCmd::Quota { domain, bytes, messages } => {
            let quota = DomainQuota { domain, quota_bytes: bytes, quota_messages: messages };
            acked(json, c.set_domain_quota(quota).await)
        }
        DomainsCmd::Remove { domain } => acked(json, c.remove_domain(Name { name: domain }).await),
    }
}

/// The quota `directory` gives `domain`; all 0 for none.
fn quota_of(directory: &DirectorySnapshot, domain: &str) -> DomainQuota {
    let quota = directory.domain_quotas.iter().find(|q| q.domain == domain);
    quota.cloned().unwrap_or_else(|| DomainQuota { domain: domain.to_string(), ..Default::default() })
}

/// One line of `domains list`: the name, and its limits when it has any.
fn line(directory: &DirectorySnapshot, domain: &str) -> String {
    let q = quota_of(directory, domain);
    let mut line = domain.to_string();
    if q.quota_bytes > 0 {
        line += &format!(" quota={}", q.quota_bytes);
    }
    if q.quota_messages > 0 {
        line += &format!(" quota_messages={}", q.quota_messages);
    }
    line + "\n"
}

/// What `domains show` reports.
#[derive(serde::Serialize)]
struct Shown {
    #[serde(flatten)]
    quota: DomainQuota,
    users: u64,
    /// The users' usage added up, over those whose homes answered.
    bytes: u64,
    messages: u64,
    /// Users whose usage could not be read, and why.
    unknown: Vec<(String, String)>,
}

/// Asks every user's home for their usage and adds it up.
async fn shown(directory: &DirectorySnapshot, domain: &str, credentials: &Credentials) -> Shown {
    let suffix = format!("@{domain}");
    let users: Vec<&User> = directory.users.iter().filter(|u| u.address.ends_with(&suffix)).collect();
    let usages = futures::stream::iter(&users)
        .map(|u| async move { (u.address.clone(), usage(&directory.nodes, u, credentials).await) })
        .buffer_unordered(USAGE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut shown =
        Shown { quota: quota_of(directory, domain), users: users.len() as u64, bytes: 0, messages: 0, unknown: vec![] };
    for (user, usage) in usages {
        match usage {
            Usage::Counted { bytes, messages } => {
                shown.bytes += bytes;
                shown.messages += messages;
            }
            Usage::Unknown(why) => shown.unknown.push((user, why)),
        }
    }
    shown.unknown.sort();
    shown
}

/// `domains show`.
fn card(s: &Shown) -> String {
    let q = &s.quota;
    let mut card = format!(
        "domain   {}\nusers    {}\nquota    {}\nusage    {}\n",
        q.domain,
        s.users,
        limits_text(q.quota_bytes, q.quota_messages),
        usage_text(s.bytes, s.messages, q.quota_bytes, q.quota_messages),
    );
    for (user, why) in &s.unknown {
        card += &format!("unknown  {user}: {why}\n");
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_adds_up_the_users_against_the_domain_quota() {
        let quota = DomainQuota { domain: "example.test".into(), quota_bytes: 4 << 20, quota_messages: 0 };
        let shown = Shown {
            quota,
            users: 3,
            bytes: 1 << 20,
            messages: 12,
            unknown: vec![("c@example.test".into(), "store1 did not answer".into())],
        };
        assert_eq!(
            card(&shown),
            "domain   example.test\nusers    3\nquota    4194304 bytes (4.0 MiB)\n\
             usage    1048576 bytes (1.0 MiB) (25%) in 12 messages\nunknown  c@example.test: store1 did not answer\n"
        );
    }

    #[test]
    fn listings_name_the_limits_that_are_set() {
        let directory = DirectorySnapshot {
            domains: vec!["a.test".into(), "b.test".into()],
            domain_quotas: vec![DomainQuota { domain: "b.test".into(), quota_bytes: 0, quota_messages: 9 }],
            ..Default::default()
        };
        assert_eq!(line(&directory, "a.test"), "a.test\n");
        assert_eq!(line(&directory, "b.test"), "b.test quota_messages=9\n");
    }
}
