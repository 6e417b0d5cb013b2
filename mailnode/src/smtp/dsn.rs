//! The DSN extension's parameters (RFC 3461): what the sender asked to be told about
//! (`NOTIFY` per recipient), how much of the message a notice returns (`RET`), and the
//! identifiers it echoes (`ENVID`, `ORCPT`). They travel with the message: in the spool's
//! envelope, to the next hop when it speaks DSN, and into the notices we send.

use std::collections::BTreeMap;

use smtp_proto::{
    MAIL_RET_FULL, MAIL_RET_HDRS, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};

/// Longest ENVID taken (RFC 3461 §4.4: 100 characters).
pub const MAX_ENVID: usize = 100;
/// Longest ORCPT taken (RFC 3461 §4.2: 500 characters).
pub const MAX_ORCPT: usize = 500;

/// What a sender wants returned with a notice (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// When a recipient's sender wants a notice: the `NOTIFY` flags, or `None` for the default
/// (failures and delays, RFC 3461 §4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify(Option<u64>);

impl Notify {
    /// From smtp-proto's RCPT flags; `Err` for NEVER with anything else (§4.1).
    pub fn from_rcpt_flags(flags: u64) -> Result<Notify, &'static str> {
        let asked = flags & (RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER);
        if asked & RCPT_NOTIFY_NEVER != 0 && asked != RCPT_NOTIFY_NEVER {
            return Err("NOTIFY=NEVER cannot go with another value");
        }
        Ok(Notify((asked != 0).then_some(asked)))
    }

    /// Whether a successful delivery (or a relay to a hop without DSN) is to be reported.
    pub fn success(self) -> bool {
        self.0.is_some_and(|f| f & RCPT_NOTIFY_SUCCESS != 0)
    }

    /// Whether a failure is to be reported (by default it is).
    pub fn failure(self) -> bool {
        self.0.is_none_or(|f| f & RCPT_NOTIFY_FAILURE != 0)
    }

    /// Whether a delay is to be reported (by default it is).
    pub fn delay(self) -> bool {
        self.0.is_none_or(|f| f & RCPT_NOTIFY_DELAY != 0)
    }

    /// The `NOTIFY=` value (`SUCCESS,FAILURE`, `NEVER`); `None` for the default.
    pub fn value(self) -> Option<String> {
        let flags = self.0?;
        if flags & RCPT_NOTIFY_NEVER != 0 {
            return Some("NEVER".into());
        }
        let names = [(RCPT_NOTIFY_SUCCESS, "SUCCESS"), (RCPT_NOTIFY_FAILURE, "FAILURE"), (RCPT_NOTIFY_DELAY, "DELAY")];
        Some(names.iter().filter(|(f, _)| flags & f != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(","))
    }

    /// The flags named by [`Notify::value`].
    fn parse(value: &str) -> Option<Notify> {
        let mut flags = 0;
        for name in value.split(',') {
            flags |= match name {
                "SUCCESS" => RCPT_NOTIFY_SUCCESS,
                "FAILURE" => RCPT_NOTIFY_FAILURE,
                "DELAY" => RCPT_NOTIFY_DELAY,
                "NEVER" => RCPT_NOTIFY_NEVER,
                _ => return None,
            };
        }
        Some(Notify(Some(flags)))
    }
}

/// One recipient's DSN parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptDsn {
    pub notify: Notify,
    /// The address `ORCPT=rfc822;…` gave, decoded from xtext (smtp-proto takes only rfc822).
    pub orcpt: Option<String>,
}

/// A message's DSN parameters, its recipients' by the address (or, for our own users, the
/// login) they are delivered to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    pub ret: Option<Ret>,
    /// `ENVID`, decoded from xtext.
    pub envid: Option<String>,
    pub rcpts: BTreeMap<String, RcptDsn>,
}

impl Dsn {
    /// RET and ENVID from smtp-proto's MAIL FROM; `Err` names what is wrong.
    pub fn from_mail(flags: u64, envid: Option<&str>) -> Result<Dsn, &'static str> {
        let ret = match (flags & MAIL_RET_FULL != 0, flags & MAIL_RET_HDRS != 0) {
            (true, true) => return Err("RET takes one value"),
            (true, false) => Some(Ret::Full),
            (false, true) => Some(Ret::Hdrs),
            (false, false) => None,
        };
        if envid.is_some_and(|e| e.len() > MAX_ENVID || e.chars().any(char::is_control)) {
            return Err("ENVID too long or not printable");
        }
        Ok(Dsn { ret, envid: envid.map(str::to_string), rcpts: BTreeMap::new() })
    }

    /// The parameters of `rcpt` (the default ones when none were given).
    pub fn rcpt(&self, rcpt: &str) -> RcptDsn {
        self.rcpts.get(rcpt).cloned().unwrap_or_default()
    }

    /// Whether there is anything to keep: a message sent without any DSN parameter has nothing.
    pub fn is_empty(&self) -> bool {
        self.ret.is_none() && self.envid.is_none() && self.rcpts.is_empty()
    }

    /// The spool envelope's lines for these parameters (values in xtext, so one word each).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(ret) = self.ret {
            s.push_str(if ret == Ret::Full { "dsn-ret FULL\n" } else { "dsn-ret HDRS\n" });
        }
        if let Some(envid) = &self.envid {
            s.push_str(&format!("dsn-envid {}\n", xtext(envid)));
        }
        for (rcpt, r) in &self.rcpts {
            let notify = r.notify.value().unwrap_or_else(|| "-".into());
            let orcpt = r.orcpt.as_deref().map_or_else(|| "-".into(), xtext);
            s.push_str(&format!("dsn-rcpt {rcpt} {notify} {orcpt}\n"));
        }
        s
    }

    /// Takes one envelope line of [`Dsn::render`]'s (`key`, `value`); false if it is not one.
    pub fn parse_line(&mut self, key: &str, value: &str) -> bool {
        match key {
            "dsn-ret" => self.ret = Some(if value == "FULL" { Ret::Full } else { Ret::Hdrs }),
            "dsn-envid" => self.envid = unxtext(value),
            "dsn-rcpt" => {
                let mut words = value.split(' ');
                let (Some(rcpt), Some(notify), Some(orcpt)) = (words.next(), words.next(), words.next()) else {
                    return true;
                };
                let notify = if notify == "-" { Notify::default() } else { Notify::parse(notify).unwrap_or_default() };
                let orcpt = if orcpt == "-" { None } else { unxtext(orcpt) };
                self.rcpts.insert(rcpt.to_string(), RcptDsn { notify, orcpt });
            }
            _ => return false,
        }
        true
    }

    /// ` RET=… ENVID=…` for a MAIL FROM to a next hop that speaks DSN.
    pub fn mail_parameters(&self) -> String {
        let mut s = String::new();
        if let Some(ret) = self.ret {
            s.push_str(if ret == Ret::Full { " RET=FULL" } else { " RET=HDRS" });
        }
        if let Some(envid) = &self.envid {
            s.push_str(&format!(" ENVID={}", xtext(envid)));
        }
        s
    }

    /// ` NOTIFY=… ORCPT=…` for `rcpt`'s RCPT TO to a next hop that speaks DSN.
    pub fn rcpt_parameters(&self, rcpt: &str) -> String {
        let r = self.rcpt(rcpt);
        let mut s = String::new();
        if let Some(notify) = r.notify.value() {
            s.push_str(&format!(" NOTIFY={notify}"));
        }
        if let Some(orcpt) = &r.orcpt {
            s.push_str(&format!(" ORCPT=rfc822;{}", xtext(orcpt)));
        }
        s
    }
}

/// RFC 3461 §4's xtext: `+XX` for `+`, `=`, and anything outside `!`..`~`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// The text an xtext names; `None` if it is not valid xtext or not UTF-8.
pub fn unxtext(value: &str) -> Option<String> {
    crate::hex_escape::decode(value, b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_defaults_and_never() {
        let default = Notify::default();
        assert!(!default.success() && default.failure() && default.delay());
        let never = Notify::from_rcpt_flags(RCPT_NOTIFY_NEVER).unwrap();
        assert!(!never.success() && !never.failure() && !never.delay());
        assert!(Notify::from_rcpt_flags(RCPT_NOTIFY_NEVER | RCPT_NOTIFY_SUCCESS).is_err());
        let success = Notify::from_rcpt_flags(RCPT_NOTIFY_SUCCESS).unwrap();
        assert!(success.success() && !success.failure() && !success.delay());
        assert_eq!(
            Notify::from_rcpt_flags(RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_SUCCESS).unwrap().value().as_deref(),
            Some("SUCCESS,FAILURE")
        );
    }

    #[test]
    fn xtext_roundtrips_and_refuses_garbage() {
        for value in ["a@b.test", "id with space+plus=eq", "naïve"] {
            let coded = xtext(value);
            assert!(!coded.contains(' ') && !coded.contains('='), "{coded}");
            assert_eq!(unxtext(&coded).as_deref(), Some(value));
        }
        assert_eq!(unxtext("a+2"), None);
        assert_eq!(unxtext("a+ZZ"), None);
    }

    #[test]
    fn envelope_lines_roundtrip() {
        let mut dsn = Dsn::from_mail(MAIL_RET_FULL, Some("QQ 314")).unwrap();
        dsn.rcpts.insert(
            "b@far.test".into(),
            RcptDsn { notify: Notify::from_rcpt_flags(RCPT_NOTIFY_SUCCESS).unwrap(), orcpt: Some("B@far.test".into()) },
        );
        dsn.rcpts.insert("c@far.test".into(), RcptDsn::default());
        let mut back = Dsn::default();
        for line in dsn.render().lines() {
            let (key, value) = line.split_once(' ').unwrap();
            assert!(back.parse_line(key, value), "{line}");
        }
        assert_eq!(back, dsn);
        assert_eq!(dsn.mail_parameters(), " RET=FULL ENVID=QQ+20314");
        assert_eq!(dsn.rcpt_parameters("b@far.test"), " NOTIFY=SUCCESS ORCPT=rfc822;B@far.test");
        assert_eq!(dsn.rcpt_parameters("c@far.test"), "");
        assert!(Dsn::from_mail(MAIL_RET_FULL | MAIL_RET_HDRS, None).is_err());
        assert!(Dsn::from_mail(0, Some(&"x".repeat(101))).is_err());
    }
}
