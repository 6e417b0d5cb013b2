//! Password checks, shared by SMTP, IMAP and POP3: argon2 off the async threads, the
//! same work for unknown users so timing does not tell which logins exist, and failed-login
//! throttling ([`throttle`]) in front of it all.

pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;

use crate::directory::{Directory, normalize, verify_password};
use throttle::{Refusal, Throttle};

/// A fixed argon2 hash to verify against when the user does not exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2lybXMtZHVtbXktc2FsdA$1bM2g7kH0tqm1e3zW3ZQOqS0ImwHc0RtQ1VjgQvGV8o";

/// The result of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right password; the canonical login (the store's user name).
    Granted(String),
    /// Unknown user or wrong password, deliberately not told apart.
    Denied,
    /// The check itself failed.
    Unavailable,
    /// Too many failed logins from this client (or for this account from it): refused
    /// without looking at the password, until the ban runs out.
    Throttled,
}

/// Checks credentials against the directory.
#[derive(Clone)]
pub struct Authenticator {
    directory: Arc<dyn Directory>,
    throttle: Arc<Throttle>,
}

impl Authenticator {
    /// An authenticator over `directory`, counting failures in `throttle`.
    pub fn new(directory: Arc<dyn Directory>, throttle: Arc<Throttle>) -> Authenticator {
        Authenticator { directory, throttle }
    }

    /// Checks `password` for `login` from `client` (the real client, from PROXY v2).
    pub async fn verify(&self, client: IpAddr, login: &str, password: &str) -> Verdict {
        let canonical = normalize(login).map(|(l, d)| format!("{l}@{d}"));
        let account = canonical.as_deref().unwrap_or(login);
        if let Err(refusal) = self.throttle.check(client, account) {
            let why = match refusal {
                Refusal::Network => "client banned",
                Refusal::Account => "account locked against this client",
            };
            tracing::info!(%client, account = ?account, why, "login refused by throttling");
            return Verdict::Throttled;
        }
        let stored = canonical.as_deref().and_then(|c| self.directory.password_hash(c));
        let password = password.to_string();
        let checked = tokio::task::spawn_blocking(move || match stored {
            Some(hash) => verify_password(&hash, &password),
            None => {
                let _ = verify_password(DUMMY_HASH, &password);
                false
            }
        })
        .await;
        match (checked, canonical) {
            (Ok(true), Some(login)) => Verdict::Granted(login),
            (Ok(_), canonical) => {
                self.throttle.failed(client, canonical.as_deref().unwrap_or(login));
                Verdict::Denied
            }
            (Err(_), _) => Verdict::Unavailable,
        }
    }
}
