//! Password checks, shared by SMTP, IMAP and POP3: argon2 off the async threads, and the
//! same work for unknown users so timing does not tell which logins exist.

use std::net::IpAddr;
use std::sync::Arc;

use crate::directory::{Directory, normalize, verify_password};

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
}

/// Checks credentials against the directory.
#[derive(Clone)]
pub struct Authenticator {
    directory: Arc<dyn Directory>,
}

impl Authenticator {
    /// An authenticator over `directory`.
    pub fn new(directory: Arc<dyn Directory>) -> Authenticator {
        Authenticator { directory }
    }

    /// Checks `password` for `login`; `_client` is where per-IP throttling will look.
    pub async fn verify(&self, _client: IpAddr, login: &str, password: &str) -> Verdict {
        let canonical = normalize(login).map(|(l, d)| format!("{l}@{d}"));
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
            (Ok(_), _) => Verdict::Denied,
            (Err(_), _) => Verdict::Unavailable,
        }
    }
}
