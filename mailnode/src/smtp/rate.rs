//! Sending rate limits for authenticated senders: a compromised account (or a whole domain's
//! worth of them) must not send 100,000 messages before anyone notices. Every recipient an
//! authenticated session adds counts against its login and against the login's domain, over a
//! sliding hour; past either limit RCPT is refused with a temporary error, logged and counted.
//!
//! The counts are this node's: a sender spread over several nodes by the router gets each
//! node's allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sirms_telemetry::Counter;

/// The window the limits count over.
const WINDOW: Duration = Duration::from_secs(3600);
/// Most logins and domains tracked; beyond it the idle ones are forgotten first.
const MAX_KEYS: usize = 100_000;

/// Which limit a recipient ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The login's own, per hour.
    User(u32),
    /// The login's domain's, per hour.
    Domain(u32),
}

/// Two fixed windows, the current and the one before, weighed into a sliding one.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    current: u32,
    previous: u32,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window { start: now, current: 0, previous: 0 }
    }

    /// Moves the window to `now`.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= WINDOW * 2 {
            *self = Window::new(now);
        } else if elapsed >= WINDOW {
            *self = Window { start: self.start + WINDOW, current: 0, previous: self.current };
        }
    }

    /// Recipients counted in the hour before `now`: the current window's, and the share of
    /// the previous one's that still overlaps.
    fn count(&self, now: Instant) -> u32 {
        let into = now.saturating_duration_since(self.start).as_secs_f64() / WINDOW.as_secs_f64();
        self.current + (f64::from(self.previous) * (1.0 - into.min(1.0))) as u32
    }
}

/// The node's sending counts and limits.
#[derive(Debug)]
pub struct SendRate {
    per_user: u32,
    per_domain: u32,
    windows: Mutex<HashMap<String, Window>>,
    /// Recipients refused, by the limit they met.
    pub limited_user: Counter,
    pub limited_domain: Counter,
}

impl SendRate {
    /// Limits of `per_user` and `per_domain` recipients an hour; 0 is no limit.
    pub fn new(per_user: u32, per_domain: u32) -> SendRate {
        SendRate {
            per_user,
            per_domain,
            windows: Mutex::default(),
            limited_user: Counter::default(),
            limited_domain: Counter::default(),
        }
    }

    /// No limits.
    pub fn unlimited() -> SendRate {
        SendRate::new(0, 0)
    }

    /// Counts one recipient for `login` at `now`, unless that would pass a limit.
    pub fn take(&self, login: &str, now: Instant) -> Result<(), Limited> {
        if self.per_user == 0 && self.per_domain == 0 {
            return Ok(());
        }
        let domain = login.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_KEYS {
            windows.retain(|_, w| now.saturating_duration_since(w.start) < WINDOW * 2);
            if windows.len() >= MAX_KEYS {
                windows.clear();
            }
        }
        let mut check = |key: &str, limit: u32| {
            let window = windows.entry(key.to_string()).or_insert_with(|| Window::new(now));
            window.roll(now);
            limit == 0 || window.count(now) < limit
        };
        if !check(login, self.per_user) {
            self.limited_user.inc();
            return Err(Limited::User(self.per_user));
        }
        if let Some(domain) = &domain
            && !check(domain, self.per_domain)
        {
            self.limited_domain.inc();
            return Err(Limited::Domain(self.per_domain));
        }
        for key in std::iter::once(login).chain(domain.as_deref()) {
            if let Some(window) = windows.get_mut(key) {
                window.current += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_and_its_domain_are_held_to_their_hourly_limits_and_the_window_slides() {
        let rate = SendRate::new(3, 5);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rate.take("a@example.test", t0), Ok(()));
        }
        assert_eq!(rate.take("a@example.test", t0), Err(Limited::User(3)));
        assert_eq!(rate.take("b@example.test", t0), Ok(()));
        assert_eq!(rate.take("b@example.test", t0), Ok(()));
        assert_eq!(rate.take("c@example.test", t0), Err(Limited::Domain(5)), "the domain's fifth is used");
        assert_eq!(rate.take("d@other.test", t0), Ok(()), "another domain has its own");
        assert_eq!((rate.limited_user.get(), rate.limited_domain.get()), (1, 1));
        // Half an hour into the next window, half of the last one's count still weighs.
        let later = t0 + WINDOW + WINDOW / 2;
        assert_eq!(rate.take("a@example.test", later), Ok(()), "1 of 3 weighs: 2 more fit");
        assert_eq!(rate.take("a@example.test", later), Ok(()));
        assert_eq!(rate.take("a@example.test", later), Err(Limited::User(3)));
        // Two hours on, nothing weighs.
        let much_later = t0 + WINDOW * 4;
        for _ in 0..3 {
            assert_eq!(rate.take("a@example.test", much_later), Ok(()));
        }
    }

    #[test]
    fn zero_is_no_limit() {
        let rate = SendRate::unlimited();
        let now = Instant::now();
        assert!((0..10_000).all(|_| rate.take("a@example.test", now).is_ok()));
    }
}
