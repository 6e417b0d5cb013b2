//! Who gets each message: `--rcpt` with `{i}` standing for 1..=`--users`, one of them picked
//! at random per message (reproducible with `--seed`), as the shared mailbench does.

use crate::rng::Rng;

/// More mailboxes than one run can watch over IMAP (one session each).
const MAX_USERS: u32 = 100_000;

/// The recipients of a run and which of them each message goes to.
#[derive(Debug)]
pub struct Recipients {
    /// The distinct addresses, `{i}` = 1 first.
    pub addresses: Vec<String>,
    /// For message `k`, the index into `addresses` of its recipient.
    pub plan: Vec<u32>,
}

impl Recipients {
    /// `n` messages over the addresses `template` gives for 1..=`users` (a template without
    /// `{i}` is one address, whatever `users` says).
    pub fn new(template: &str, users: u32, n: usize, seed: u64) -> Result<Recipients, String> {
        let addresses: Vec<String> = if template.contains("{i}") {
            if users == 0 || users > MAX_USERS {
                return Err(format!("--users must be 1..={MAX_USERS}"));
            }
            (1..=users).map(|i| template.replace("{i}", &i.to_string())).collect()
        } else {
            vec![template.to_string()]
        };
        for a in &addresses {
            check_mailbox(a)?;
        }
        let mut rng = Rng::new(seed);
        let count = addresses.len() as u32;
        let plan = (0..n).map(|_| rng.below(count)).collect();
        Ok(Recipients { addresses, plan })
    }

    /// How many messages each address gets.
    pub fn per_address(&self) -> Vec<u32> {
        let mut counts = vec![0; self.addresses.len()];
        for &i in &self.plan {
            counts[i as usize] += 1;
        }
        counts
    }
}

/// An address fit to go between `<` and `>` in MAIL/RCPT and into an IMAP LOGIN: local@domain,
/// printable ASCII, no spaces, brackets or quotes. Checked once, so no command can be
/// injected through an argument.
pub fn check_mailbox(address: &str) -> Result<(), String> {
    let fit = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"<>\"\\()[],;:@".contains(&b));
    match address.rsplit_once('@') {
        Some((local, domain)) if fit(local) && fit(domain) => Ok(()),
        _ => Err(format!("{address:?} is not an address of the form local@domain")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_plan_and_counts() {
        let r = Recipients::new("u{i}@example.test", 3, 300, 1).unwrap();
        assert_eq!(r.addresses, ["u1@example.test", "u2@example.test", "u3@example.test"]);
        assert_eq!(r.plan.len(), 300);
        let counts = r.per_address();
        assert_eq!(counts.iter().sum::<u32>(), 300);
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(Recipients::new("u{i}@example.test", 3, 300, 1).unwrap().plan, r.plan);
        assert_ne!(Recipients::new("u{i}@example.test", 3, 300, 2).unwrap().plan, r.plan);

        let one = Recipients::new("alice@example.test", 100, 5, 1).unwrap();
        assert_eq!(one.addresses, ["alice@example.test"]);
        assert_eq!(one.per_address(), [5]);
    }

    #[test]
    fn unfit_addresses_are_refused() {
        for bad in ["nobody", "@example.test", "a@", "a b@x", "a@x\r\nRCPT TO:<b@x>", "a>@x", "a@x@y", "\"q\"@x"] {
            assert!(check_mailbox(bad).is_err(), "{bad:?}");
        }
        assert!(check_mailbox("bench+1@example.test").is_ok());
        assert!(Recipients::new("u{i}@example.test", 0, 1, 1).is_err());
        assert!(Recipients::new("u {i}@example.test", 2, 1, 1).is_err());
    }
}
