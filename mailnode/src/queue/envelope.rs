//! A queued message's envelope, as a small line-oriented text file.

use std::collections::BTreeMap;

use crate::delivery::Folder;
use crate::smtp::dsn::Dsn;

/// Who a queued message is from and who still has to get it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedEnvelope {
    pub id: String,
    /// Reverse path; empty for the null sender.
    pub from: String,
    /// Local users (logins) still to deliver to.
    pub local: Vec<String>,
    /// Foreign addresses waiting for outbound delivery.
    pub remote: Vec<String>,
    pub attempts: u32,
    /// Seconds since the epoch before which no retry is made.
    pub next_attempt: i64,
    /// Seconds since the epoch when the message was queued (0: unknown, older spool files).
    pub created: i64,
    /// Whether the sender was told of the delay already.
    pub warned: bool,
    /// The last temporary failure per pending recipient, for `queue` listings and bounces.
    pub errors: BTreeMap<String, String>,
    /// The node holding a copy of this entry (see `copies`); empty: none.
    pub copy: String,
    /// What the sender asked to be told (RFC 3461 DSN), by recipient.
    pub dsn: Dsn,
    /// Where the local users get it: Junk when the node's checks said so.
    pub folder: Folder,
    /// The sender asked for REQUIRETLS (RFC 8689): every hop over checked TLS, or a bounce.
    pub requiretls: bool,
    /// The authserv-id of the `Authentication-Results:` the node's sender authentication put
    /// on the message (mail from the Internet); empty when it was not checked. What a Sieve
    /// redirect forwards is ARC-sealed on the strength of that field.
    pub checked_by: String,
}

impl QueuedEnvelope {
    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// The file form: one `key value` per line; addresses never contain line breaks.
    pub fn render(&self) -> String {
        let mut s = format!(
            "from {}\nattempts {}\nnext {}\ncreated {}\nwarned {}\n",
            self.from, self.attempts, self.next_attempt, self.created, self.warned as u8
        );
        if !self.copy.is_empty() {
            s.push_str(&format!("copy {}\n", self.copy));
        }
        if self.folder != Folder::Inbox {
            s.push_str(&format!("folder {}\n", self.folder.name()));
        }
        if self.requiretls {
            s.push_str("requiretls\n");
        }
        // A hostname: anything else (which the node never writes) is left out, not let
        // break the line format.
        if !self.checked_by.is_empty() && !self.checked_by.chars().any(|c| c.is_whitespace() || c.is_control()) {
            s.push_str(&format!("checked_by {}\n", self.checked_by));
        }
        for u in &self.local {
            s.push_str(&format!("local {u}\n"));
        }
        for r in &self.remote {
            s.push_str(&format!("remote {r}\n"));
        }
        for (rcpt, error) in &self.errors {
            // Replies come from the network: keep them to one line.
            let error: String = error.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            s.push_str(&format!("error {rcpt} {error}\n"));
        }
        s.push_str(&self.dsn.render());
        s
    }

    /// Parses the file form; `None` if it is not one.
    pub fn parse(id: &str, text: &str) -> Option<QueuedEnvelope> {
        let mut env = QueuedEnvelope { id: id.to_string(), ..Default::default() };
        let mut saw_from = false;
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "from" => {
                    env.from = value.to_string();
                    saw_from = true;
                }
                "attempts" => env.attempts = value.parse().ok()?,
                "next" => env.next_attempt = value.parse().ok()?,
                "created" => env.created = value.parse().ok()?,
                "warned" => env.warned = value == "1",
                "copy" => env.copy = value.to_string(),
                "folder" => env.folder = Folder::from_name(value)?,
                "requiretls" if value.is_empty() => env.requiretls = true,
                "checked_by" if !value.is_empty() => env.checked_by = value.to_string(),
                "error" => {
                    let (rcpt, error) = value.split_once(' ').unwrap_or((value, ""));
                    env.errors.insert(rcpt.to_string(), error.to_string());
                }
                "local" if !value.is_empty() => env.local.push(value.to_string()),
                "remote" if !value.is_empty() => env.remote.push(value.to_string()),
                _ if env.dsn.parse_line(key, value) => {}
                _ => return None,
            }
        }
        saw_from.then_some(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::dsn::{Notify, RcptDsn, Ret};

    #[test]
    fn roundtrip_and_garbage() {
        let env = QueuedEnvelope {
            id: "q1".into(),
            from: String::new(),
            local: vec!["a@x.test".into(), "b@x.test".into()],
            remote: vec!["c@y.test".into()],
            attempts: 3,
            next_attempt: 1_700_000_000,
            created: 1_699_000_000,
            warned: true,
            errors: [("c@y.test".to_string(), "451 4.3.0 try\r\nlater".to_string())].into(),
            copy: "node2".into(),
            folder: Folder::Junk,
            requiretls: true,
            checked_by: "mx.x.test".into(),
            dsn: Dsn {
                ret: Some(Ret::Hdrs),
                envid: Some("env 1".into()),
                rcpts: [(
                    "c@y.test".to_string(),
                    RcptDsn { notify: Notify::default(), orcpt: Some("C@y.test".into()) },
                )]
                .into(),
            },
        };
        let back = QueuedEnvelope::parse("q1", &env.render()).unwrap();
        assert_eq!(back.dsn, env.dsn);
        assert_eq!(back.errors["c@y.test"], "451 4.3.0 try  later");
        let env = QueuedEnvelope { errors: back.errors.clone(), ..env };
        assert_eq!(QueuedEnvelope::parse("q1", &env.render()), Some(env));
        assert_eq!(QueuedEnvelope::parse("q", "garbage"), None);
        assert_eq!(QueuedEnvelope::parse("q", "attempts x\nfrom a"), None);
        assert_eq!(QueuedEnvelope::parse("q", ""), None);
    }
}
