//! A queued message's envelope, as a small line-oriented text file.

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
}

impl QueuedEnvelope {
    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// The file form: one `key value` per line; addresses never contain line breaks.
    pub fn render(&self) -> String {
        let mut s = format!("from {}\nattempts {}\nnext {}\n", self.from, self.attempts, self.next_attempt);
        for u in &self.local {
            s.push_str(&format!("local {u}\n"));
        }
        for r in &self.remote {
            s.push_str(&format!("remote {r}\n"));
        }
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
                "local" if !value.is_empty() => env.local.push(value.to_string()),
                "remote" if !value.is_empty() => env.remote.push(value.to_string()),
                _ => return None,
            }
        }
        saw_from.then_some(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let env = QueuedEnvelope {
            id: "q1".into(),
            from: String::new(),
            local: vec!["a@x.test".into(), "b@x.test".into()],
            remote: vec!["c@y.test".into()],
            attempts: 3,
            next_attempt: 1_700_000_000,
        };
        assert_eq!(QueuedEnvelope::parse("q1", &env.render()), Some(env));
        assert_eq!(QueuedEnvelope::parse("q", "garbage"), None);
        assert_eq!(QueuedEnvelope::parse("q", "attempts x\nfrom a"), None);
        assert_eq!(QueuedEnvelope::parse("q", ""), None);
    }
}
