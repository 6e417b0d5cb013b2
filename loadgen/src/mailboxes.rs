//! The recipients' mailboxes seen over IMAP, which is how the shared mailbench decides that
//! mail is delivered: one logged-in session per mailbox, `STATUS INBOX (MESSAGES)` sent on
//! all of them before any answer is read, repeated until every mailbox holds what it should.
//! Also emptying mailboxes before a run (`--reset`), so every run starts from the same state.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::Error;
use crate::imap::{ImapClient, status_messages};
use crate::sources::Sources;

/// Logins in flight at once: the server hashes each password, which takes a while.
const LOGINS_AT_ONCE: usize = 16;

/// Logged-in sessions, one per watched mailbox, and what each INBOX held at the last look.
pub struct MailboxWatch {
    sessions: Vec<ImapClient>,
    counts: Vec<u32>,
}

impl MailboxWatch {
    /// Logs in as each of `users` (all with `password`) and reads each INBOX's count.
    pub async fn open(
        target: SocketAddr,
        users: &[String],
        password: &str,
        sources: &Sources,
        timeout: Duration,
    ) -> Result<MailboxWatch, Error> {
        let sessions = log_in_all(target, users, password, sources, timeout).await?;
        let mut watch = MailboxWatch { counts: vec![0; sessions.len()], sessions };
        let all: Vec<usize> = (0..watch.sessions.len()).collect();
        watch.poll(&all).await?;
        Ok(watch)
    }

    /// The INBOX counts at the last look, in the order of `users`.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Looks again at the mailboxes `which` (indices into `users`).
    async fn poll(&mut self, which: &[usize]) -> Result<(), Error> {
        let mut tags = Vec::with_capacity(which.len());
        for &i in which {
            tags.push(self.sessions[i].send("STATUS INBOX (MESSAGES)").await?);
        }
        for (&i, tag) in which.iter().zip(tags) {
            let mut count = None;
            self.sessions[i].complete("STATUS", tag, |r| count = status_messages(r).or(count)).await?;
            self.counts[i] = count.ok_or_else(|| Error::Malformed("STATUS without a MESSAGES count".into()))?;
        }
        Ok(())
    }

    /// Polls every `interval` until each mailbox holds at least `expected` messages, or
    /// `deadline` passes; `seen` gets the counts after each look. Returns when the last one
    /// arrived (`None`: not by the deadline).
    pub async fn wait_for(
        &mut self,
        expected: &[u32],
        deadline: Instant,
        interval: Duration,
        mut seen: impl FnMut(&[u32]),
    ) -> Result<Option<Instant>, Error> {
        let mut pending: Vec<usize> = (0..self.sessions.len()).filter(|&i| self.counts[i] < expected[i]).collect();
        loop {
            if pending.is_empty() {
                return Ok(Some(Instant::now()));
            }
            self.poll(&pending).await?;
            seen(&self.counts);
            pending.retain(|&i| self.counts[i] < expected[i]);
            if pending.is_empty() {
                return Ok(Some(Instant::now()));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Logs every session out.
    pub async fn close(self) {
        for session in self.sessions {
            session.logout().await;
        }
    }
}

/// Empties the INBOX of each of `users` (STORE \Deleted, EXPUNGE); returns how many
/// messages were removed.
pub async fn empty_inboxes(
    target: SocketAddr,
    users: &[String],
    password: &str,
    sources: &Sources,
    timeout: Duration,
) -> Result<u64, Error> {
    let sessions = log_in_all(target, users, password, sources, timeout).await?;
    let mut removed = 0;
    for (session, user) in sessions.into_iter().zip(users) {
        let mut session = session;
        removed += u64::from(empty_inbox(&mut session).await.map_err(|e| e.during(format!("emptying {user}")))?);
        session.logout().await;
    }
    Ok(removed)
}

async fn empty_inbox(session: &mut ImapClient) -> Result<u32, Error> {
    let before = session.select("INBOX").await?;
    if before > 0 {
        session.command("STORE", "STORE 1:* +FLAGS.SILENT (\\Deleted)", |_| {}).await?;
        session.command("EXPUNGE", "EXPUNGE", |_| {}).await?;
        let left = session.select("INBOX").await?;
        if left > 0 {
            return Err(Error::Malformed(format!("{left} messages left after EXPUNGE")));
        }
    }
    Ok(before)
}

/// One logged-in session per user, in the order of `users`, each from the next source.
async fn log_in_all(
    target: SocketAddr,
    users: &[String],
    password: &str,
    sources: &Sources,
    timeout: Duration,
) -> Result<Vec<ImapClient>, Error> {
    let mut done: Vec<Option<ImapClient>> = users.iter().map(|_| None).collect();
    let mut running = JoinSet::new();
    let mut next = 0;
    loop {
        while running.len() < LOGINS_AT_ONCE && next < users.len() {
            let (i, user, password, from) = (next, users[next].clone(), password.to_string(), sources.next());
            running.spawn(async move {
                let login = async {
                    let mut session = ImapClient::connect(target, from, timeout).await?;
                    session.login(&user, &password).await?;
                    Ok::<_, Error>(session)
                };
                (i, login.await.map_err(|e| e.during(format!("IMAP login of {user} at {target}"))))
            });
            next += 1;
        }
        match running.join_next().await {
            None => break,
            Some(Ok((i, session))) => done[i] = Some(session?),
            Some(Err(panicked)) => return Err(Error::Io(std::io::Error::other(panicked))),
        }
    }
    Ok(done.into_iter().flatten().collect())
}
