//! Password checks, shared by SMTP, IMAP and POP3: argon2 on a few threads of its own, the
//! same work for unknown users so timing does not tell which logins exist, failed-login
//! throttling ([`throttle`]) in front of it all, and a memory of recent successes
//! ([`cache`]) so a client that logs in again and again skips argon2.

pub mod cache;
pub mod password;
pub mod sasl;
pub mod throttle;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, mpsc};

use crate::directory::{Directory, normalize};
use crate::metrics::NodeMetrics;
use cache::AuthCache;
use password::verify_password;
use throttle::{Refusal, Throttle};

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

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run password checks, and the queue in front of them.
///
/// Each argon2 check holds 19 MiB and a core while it runs, and any client can ask for one.
/// On tokio's blocking pool they ran all at once, on threads that come and go: 40 wrong
/// logins sent together took a node from 40 MiB to 820 MiB, and since every new thread
/// takes its own allocator arena, which keeps the freed 19 MiB, even one login at a time
/// left the node 300 MiB larger after a few dozen. A few long-lived threads bound both the
/// work and the memory; further checks wait in the queue.
struct CheckPool {
    queue: mpsc::Sender<Job>,
}

impl CheckPool {
    fn new(threads: usize) -> CheckPool {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new().name(format!("password-check-{i}")).spawn(move || {
                loop {
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    // Every sender gone: the authenticator was dropped.
                    let Ok(job) = job else { return };
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        CheckPool { queue }
    }

    /// Runs `check` on the pool; `None` if it could not run.
    async fn run(&self, check: impl FnOnce() -> bool + Send + 'static) -> Option<bool> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.queue
            .send(Box::new(move || {
                let _ = done.send(check());
            }))
            .ok()?;
        result.await.ok()
    }
}

/// A new login cache; `None`, with a warning, when the system gives no random key for it.
fn new_cache() -> Option<Arc<AuthCache>> {
    let cache = AuthCache::new(cache::DEFAULT_TTL, cache::DEFAULT_CAPACITY).map(Arc::new);
    if cache.is_none() {
        tracing::warn!("no random key for the login cache: every login runs the full password check");
    }
    cache
}

/// Checks credentials against the directory.
#[derive(Clone)]
pub struct Authenticator {
    directory: Arc<dyn Directory>,
    throttle: Arc<Throttle>,
    checks: Arc<CheckPool>,
    /// Recent successful checks; `None` when the system gave no random key for it.
    cache: Option<Arc<AuthCache>>,
    /// The check itself (replaced in tests to observe concurrency).
    verify_fn: fn(&str, &str) -> bool,
    /// Where failures are counted, if anywhere.
    metrics: Option<Arc<NodeMetrics>>,
}

impl Authenticator {
    /// An authenticator over `directory`, counting failures in `throttle`, with one
    /// password-check thread per core.
    pub fn new(directory: Arc<dyn Directory>, throttle: Arc<Throttle>) -> Authenticator {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator::with_threads(directory, throttle, cores)
    }

    /// The same, with `threads` password-check threads: at most that many checks run at once.
    pub fn with_threads(directory: Arc<dyn Directory>, throttle: Arc<Throttle>, threads: usize) -> Authenticator {
        Authenticator {
            directory,
            throttle,
            checks: Arc::new(CheckPool::new(threads)),
            cache: new_cache(),
            verify_fn: verify_password,
            metrics: None,
        }
    }

    /// An authenticator with this one's directory and password-check threads, but counting
    /// failures in `throttle` and with an empty login cache: a fresh start that does not
    /// spawn threads (the imap_session fuzz target takes one per input).
    pub fn restarted(&self, throttle: Arc<Throttle>) -> Authenticator {
        Authenticator { throttle, cache: new_cache(), ..self.clone() }
    }

    /// The same, counting failed logins in `metrics`.
    pub fn counting(mut self, metrics: Arc<NodeMetrics>) -> Authenticator {
        self.metrics = Some(metrics);
        self
    }

    /// Checks `password` for `login` from `client` (the real client, from PROXY v2).
    pub async fn verify(&self, client: IpAddr, login: &str, password: &str) -> Verdict {
        if !self.directory.available() {
            // No directory yet: nobody can be told yes or no, and nobody is counted as failing.
            return Verdict::Unavailable;
        }
        let canonical = normalize(login).map(|(l, d)| format!("{l}@{d}"));
        let account = canonical.as_deref().unwrap_or(login);
        if let Err(refusal) = self.throttle.check(client, account) {
            let why = match refusal {
                Refusal::Network => "client banned",
                Refusal::Account => "account locked against this client",
            };
            tracing::info!(%client, account = ?account, why, "login refused by throttling");
            if let Some(m) = &self.metrics {
                m.auth_throttled.inc();
            }
            return Verdict::Throttled;
        }
        let stored = canonical.as_deref().and_then(|c| self.directory.password_hash(c));
        if let (Some(cache), Some(login), Some(hash)) = (&self.cache, &canonical, &stored)
            && cache.granted(login, hash, password)
        {
            return Verdict::Granted(login.clone());
        }
        // An unknown login is checked too, against a made-up hash of the same cost.
        let hash = stored.clone().ok_or_else(|| self.directory.unknown_user_hash());
        let attempt = password.to_string();
        let verify = self.verify_fn;
        let checked = self
            .checks
            .run(move || match hash {
                Ok(hash) => verify(&hash, &attempt),
                Err(made_up) => {
                    let _ = verify(&made_up, &attempt);
                    false
                }
            })
            .await;
        match (checked, canonical) {
            (Some(true), Some(login)) => {
                // Bound to the hash the check ran against: if the directory changed meanwhile,
                // the entry matches nothing.
                if let (Some(cache), Some(hash)) = (&self.cache, &stored) {
                    cache.remember(&login, hash, password);
                }
                Verdict::Granted(login)
            }
            (Some(_), canonical) => {
                if let Some(m) = &self.metrics {
                    m.auth_denied.inc();
                }
                self.throttle.failed(client, canonical.as_deref().unwrap_or(login));
                Verdict::Denied
            }
            (None, _) => Verdict::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::auth::throttle::ThrottleConfig;
    use crate::directory::{DirectoryConfig, DirectoryData};

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// A slow check that records how many run at once.
    fn counted(stored: &str, password: &str) -> bool {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        verify_password(stored, password)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_the_limit_of_password_checks_run_at_once() {
        let cfg: DirectoryConfig = toml::from_str(
            r#"
            domains = ["example.test"]
            users = [ { address = "alice@example.test", password = "{plain}pw" } ]
            "#,
        )
        .unwrap();
        let config = ThrottleConfig { max_failures_per_ip: 1000, max_failures_per_account: 1000, ..Default::default() };
        let throttle = Arc::new(Throttle::new(&config, &[]).unwrap());
        let mut auth = Authenticator::with_threads(Arc::new(DirectoryData::from_config(&cfg).unwrap()), throttle, 2);
        auth.verify_fn = counted;
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    let client = IpAddr::from([192, 0, 2, i]);
                    let password = if i % 2 == 0 { "pw" } else { "wrong" };
                    auth.verify(client, "alice@example.test", password).await
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let want = if i % 2 == 0 { Verdict::Granted("alice@example.test".into()) } else { Verdict::Denied };
            assert_eq!(task.await.unwrap(), want);
        }
        assert_eq!(PEAK.load(Ordering::SeqCst), 2);
    }

    /// A one-user directory whose stored hash can be changed, like `sirms ctl users passwd`.
    struct Swappable(Mutex<String>);

    impl Directory for Swappable {
        fn resolve(&self, _address: &str) -> crate::directory::Recipient {
            crate::directory::Recipient::Unknown
        }
        fn password_hash(&self, login: &str) -> Option<String> {
            (login == "alice@example.test").then(|| self.0.lock().unwrap().clone())
        }
        fn may_send_as(&self, _login: &str, _address: &str) -> bool {
            false
        }
        fn quota(&self, _login: &str) -> crate::quota::Limits {
            crate::quota::Limits::default()
        }
    }

    static FULL_CHECKS: AtomicUsize = AtomicUsize::new(0);

    /// The real check, counted.
    fn counted_full(stored: &str, password: &str) -> bool {
        FULL_CHECKS.fetch_add(1, Ordering::SeqCst);
        verify_password(stored, password)
    }

    #[tokio::test]
    async fn a_repeated_login_skips_the_check_until_the_password_changes() {
        let old = password::hash_password("old-pw").unwrap();
        let directory = Arc::new(Swappable(Mutex::new(old)));
        let config = ThrottleConfig { max_failures_per_ip: 1000, max_failures_per_account: 1000, ..Default::default() };
        let throttle = Arc::new(Throttle::new(&config, &[]).unwrap());
        let mut auth = Authenticator::with_threads(directory.clone(), throttle, 1);
        auth.verify_fn = counted_full;
        let client = IpAddr::from([192, 0, 2, 1]);
        let alice = || Verdict::Granted("alice@example.test".into());
        let checks = || FULL_CHECKS.load(Ordering::SeqCst);

        assert_eq!(auth.verify(client, "alice@example.test", "old-pw").await, alice());
        assert_eq!(checks(), 1);
        // Remembered: no argon2 this time, whatever case the login is typed in.
        assert_eq!(auth.verify(client, "Alice@Example.test", "old-pw").await, alice());
        assert_eq!(checks(), 1);
        // A wrong password is always checked in full, and never remembered.
        assert_eq!(auth.verify(client, "alice@example.test", "guess").await, Verdict::Denied);
        assert_eq!(auth.verify(client, "alice@example.test", "guess").await, Verdict::Denied);
        assert_eq!(checks(), 3);
        // The administrator sets a new password: the old one fails at once.
        *directory.0.lock().unwrap() = password::hash_password("new-pw").unwrap();
        assert_eq!(auth.verify(client, "alice@example.test", "old-pw").await, Verdict::Denied);
        assert_eq!(checks(), 4);
        assert_eq!(auth.verify(client, "alice@example.test", "new-pw").await, alice());
        assert_eq!(auth.verify(client, "alice@example.test", "new-pw").await, alice());
        assert_eq!(checks(), 5);
        assert_eq!(auth.verify(client, "alice@example.test", "old-pw").await, Verdict::Denied);
        // Unknown users never come near the cache.
        assert_eq!(auth.verify(client, "bob@example.test", "new-pw").await, Verdict::Denied);
        assert_eq!(checks(), 7);
    }

    #[tokio::test]
    async fn a_throttled_client_is_refused_even_with_a_remembered_password() {
        let directory = Arc::new(Swappable(Mutex::new("{plain}pw".into())));
        let config = ThrottleConfig { max_failures_per_ip: 2, max_failures_per_account: 1000, ..Default::default() };
        let auth = Authenticator::with_threads(directory, Arc::new(Throttle::new(&config, &[]).unwrap()), 1);
        let client = IpAddr::from([192, 0, 2, 2]);
        assert_eq!(
            auth.verify(client, "alice@example.test", "pw").await,
            Verdict::Granted("alice@example.test".into())
        );
        for _ in 0..2 {
            assert_eq!(auth.verify(client, "alice@example.test", "wrong").await, Verdict::Denied);
        }
        assert_eq!(auth.verify(client, "alice@example.test", "pw").await, Verdict::Throttled);
    }

    static RESTART_CHECKS: AtomicUsize = AtomicUsize::new(0);

    /// The real check, counted apart from the other tests'.
    fn counted_restart(stored: &str, password: &str) -> bool {
        RESTART_CHECKS.fetch_add(1, Ordering::SeqCst);
        verify_password(stored, password)
    }

    #[tokio::test]
    async fn a_restarted_authenticator_has_no_bans_and_no_remembered_logins() {
        let directory = Arc::new(Swappable(Mutex::new("{plain}pw".into())));
        let config = ThrottleConfig { max_failures_per_ip: 2, max_failures_per_account: 1000, ..Default::default() };
        let mut auth = Authenticator::with_threads(directory, Arc::new(Throttle::new(&config, &[]).unwrap()), 1);
        auth.verify_fn = counted_restart;
        let client = IpAddr::from([192, 0, 2, 3]);
        let alice = || Verdict::Granted("alice@example.test".into());
        let checks = || RESTART_CHECKS.load(Ordering::SeqCst);
        assert_eq!(auth.verify(client, "alice@example.test", "pw").await, alice());
        assert_eq!(auth.verify(client, "alice@example.test", "pw").await, alice());
        assert_eq!(checks(), 1);
        for _ in 0..2 {
            assert_eq!(auth.verify(client, "alice@example.test", "wrong").await, Verdict::Denied);
        }
        assert_eq!(auth.verify(client, "alice@example.test", "pw").await, Verdict::Throttled);

        let fresh = auth.restarted(Arc::new(Throttle::new(&config, &[]).unwrap()));
        assert_eq!(fresh.verify(client, "alice@example.test", "pw").await, alice());
        assert_eq!(checks(), 4, "the restarted one checks in full: its cache starts empty");
        // The first is untouched: still banned.
        assert_eq!(auth.verify(client, "alice@example.test", "pw").await, Verdict::Throttled);
    }
}
