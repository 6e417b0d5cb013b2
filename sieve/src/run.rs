//! The interpreter: runs a checked script over one message and says what to do with it.

use std::collections::HashSet;

use mail_parser::{HeaderValue, Message, MessageParser, PartType};

use crate::Script;
use crate::ast::{AddressPart, BodyTransform, Command, FlagOp, Match, Test};
use crate::matching::{Budget, match_values};
use crate::vacation;
use crate::variables::{Vars, apply_modifiers};

/// What the script is run for: the message and its envelope, plus facts only the server knows.
#[derive(Debug, Clone, Copy)]
pub struct Environment<'a> {
    /// Envelope sender (MAIL FROM), without angle brackets; empty for the null sender.
    pub envelope_from: &'a str,
    /// Envelope recipient (RCPT TO) this delivery is for, without angle brackets.
    pub envelope_to: &'a str,
    /// The whole message as received: header and body.
    pub message: &'a [u8],
    /// The message's size in octets as the `size` test sees it.
    pub size: u64,
    /// Spam score from 0 (clean) to 10 (spam), or None when the message was not checked.
    pub spam_score: Option<u8>,
    /// The recipient's own addresses, for `vacation` (RFC 5230 §4.5).
    pub user_addresses: &'a [String],
    /// The recipient's mailboxes that mail can be filed into, for `mailboxexists` (RFC 5490).
    pub mailboxes: &'a [String],
}

impl<'a> Environment<'a> {
    /// An environment for `message` with empty envelope, its length as size, no spam score,
    /// and no user addresses or mailboxes.
    pub fn new(message: &'a [u8]) -> Self {
        Environment {
            envelope_from: "",
            envelope_to: "",
            message,
            size: message.len() as u64,
            spam_score: None,
            user_addresses: &[],
            mailboxes: &[],
        }
    }
}

/// One thing the delivery path should do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver to the user's inbox with these IMAP flags.
    Keep { flags: Vec<String> },
    /// Deliver to `mailbox` with these flags, creating the mailbox first if `create`.
    FileInto { mailbox: String, flags: Vec<String>, create: bool },
    /// Forward to `address`; `copy` says the script asked for `:copy` (RFC 3894).
    Redirect { address: String, copy: bool },
    /// Refuse the message with `reason`; `extended` for `ereject` (RFC 5429: refuse in SMTP if possible).
    Reject { reason: String, extended: bool },
    /// The script discarded the message and nothing keeps or files it: no local delivery.
    Discard,
    /// Send an automatic reply to `to`, unless one went to `to` with this `handle` in the last
    /// `days` days; that record is the caller's to keep (RFC 5230 §4.2).
    Vacation {
        /// Identifies this vacation response; the caller remembers (handle, sender) pairs.
        handle: String,
        /// Minimum days between two replies to one sender.
        days: u32,
        /// Subject of the reply (by default "Auto: " and the original subject, RFC 5230 §5.3).
        subject: String,
        /// From address of the reply, if the script gave one.
        from: Option<String>,
        /// The reply's body text, or a MIME entity if `mime`.
        reason: String,
        /// Whether `reason` is a MIME entity (headers and body) rather than plain text.
        mime: bool,
        /// The address to answer (the envelope sender).
        to: String,
        /// Message-ID of the original message, for the reply's In-Reply-To and References.
        in_reply_to: Option<String>,
    },
}

/// The result of one run: the actions, and the runtime errors that forced an implicit keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// What to do with the message, in the order the script asked for it.
    pub actions: Vec<Action>,
    /// Runtime errors; when not empty, `actions` is a single keep (RFC 5228 §2.10.6).
    pub errors: Vec<String>,
}

enum Flow {
    Go,
    Stop,
}

pub(crate) struct Run<'s, 'e> {
    script: &'s Script,
    env: &'e Environment<'e>,
    pub(crate) msg: Option<Message<'e>>,
    vars: Vars,
    flags: Vec<String>,
    actions: Vec<Action>,
    implicit_keep: bool,
    discarded: bool,
    vacation_done: bool,
    instructions: usize,
    redirects: usize,
    budget: Budget,
}

/// Splits flag strings on white space and drops duplicates (compared without case), in
/// linear time: a flag list may be thousands of flags long.
fn normalise_flags<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for s in lists {
        for f in s.split_whitespace() {
            if seen.insert(f.to_ascii_lowercase()) {
                out.push(f.to_string());
            }
        }
    }
    out
}

fn split_address(addr: &str, part: AddressPart) -> Option<String> {
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (addr, ""),
    };
    Some(match part {
        AddressPart::All => addr.to_string(),
        AddressPart::LocalPart => local.to_string(),
        AddressPart::Domain => domain.to_string(),
        // RFC 5233: "+" separates user and detail; no separator means no detail at all.
        AddressPart::User => local.split_once('+').map_or(local, |(u, _)| u).to_string(),
        AddressPart::Detail => local.split_once('+')?.1.to_string(),
    })
}

impl<'s, 'e> Run<'s, 'e> {
    pub(crate) fn new(script: &'s Script, env: &'e Environment<'e>) -> Self {
        let l = &script.limits;
        Run {
            script,
            env,
            msg: MessageParser::new().with_mime_headers().parse(env.message),
            vars: Vars::new(l.max_variables, l.max_variable_size, l.max_expanded_string),
            flags: Vec::new(),
            actions: Vec::new(),
            implicit_keep: true,
            discarded: false,
            vacation_done: false,
            instructions: 0,
            redirects: 0,
            budget: Budget::new(l.max_work_steps),
        }
    }

    pub(crate) fn execute(mut self) -> Outcome {
        let commands = &self.script.commands;
        match self.block(commands) {
            Ok(_) => {
                if self.implicit_keep && !self.actions.iter().any(|a| matches!(a, Action::Keep { .. })) {
                    self.actions.push(Action::Keep { flags: self.flags.clone() });
                }
                let delivered = self.actions.iter().any(|a| matches!(a, Action::Keep { .. } | Action::FileInto { .. }));
                if self.discarded && !delivered {
                    self.actions.push(Action::Discard);
                }
                Outcome { actions: self.actions, errors: Vec::new() }
            }
            Err(e) => Outcome { actions: vec![Action::Keep { flags: self.flags.clone() }], errors: vec![e] },
        }
    }

    fn too_much_work(&self) -> String {
        format!("script took too long (more than {} steps of reading and matching)", self.script.limits.max_work_steps)
    }

    fn tick(&mut self) -> Result<(), String> {
        if self.budget.exhausted() {
            return Err(self.too_much_work());
        }
        self.instructions += 1;
        if self.instructions > self.script.limits.max_instructions {
            return Err(format!(
                "script ran too long (more than {} instructions)",
                self.script.limits.max_instructions
            ));
        }
        Ok(())
    }

    fn s(&self, s: &str) -> String {
        let out = if self.script.variables { self.vars.expand(s) } else { s.to_string() };
        self.budget.spend(out.len());
        out
    }

    fn list(&self, l: &[String]) -> Vec<String> {
        l.iter().map(|s| self.s(s)).collect()
    }

    fn block(&mut self, cmds: &[Command]) -> Result<Flow, String> {
        for c in cmds {
            self.tick()?;
            if let Flow::Stop = self.command(c)? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    fn push(&mut self, action: Action) -> Result<(), String> {
        if self.actions.len() >= self.script.limits.max_actions {
            return Err(format!("too many actions (at most {})", self.script.limits.max_actions));
        }
        self.actions.push(action);
        Ok(())
    }

    fn has_reject(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::Reject { .. }))
    }

    fn command(&mut self, c: &Command) -> Result<Flow, String> {
        match c {
            Command::If { branches, otherwise } => {
                for (test, block) in branches {
                    if self.test(test)? {
                        return self.block(block);
                    }
                }
                if let Some(block) = otherwise {
                    return self.block(block);
                }
            }
            Command::Stop => return Ok(Flow::Stop),
            Command::Discard => {
                self.implicit_keep = false;
                self.discarded = true;
            }
            Command::Keep { flags } => {
                if self.has_reject() {
                    return Err("\"keep\" cannot be used with \"reject\"".into());
                }
                let flags = match flags {
                    Some(f) => normalise_flags(self.list(f).iter().map(String::as_str)),
                    None => self.flags.clone(),
                };
                self.implicit_keep = false;
                if let Some(Action::Keep { flags: old }) =
                    self.actions.iter_mut().find(|a| matches!(a, Action::Keep { .. }))
                {
                    *old = normalise_flags(old.iter().chain(&flags).map(String::as_str));
                } else {
                    self.push(Action::Keep { flags })?;
                }
            }
            Command::FileInto { mailbox, flags, create, copy } => {
                if self.has_reject() {
                    return Err("\"fileinto\" cannot be used with \"reject\"".into());
                }
                let mailbox = self.s(mailbox);
                if mailbox.is_empty() || mailbox.chars().any(char::is_control) {
                    return Err(format!("invalid mailbox name {mailbox:?}"));
                }
                let flags = match flags {
                    Some(f) => normalise_flags(self.list(f).iter().map(String::as_str)),
                    None => self.flags.clone(),
                };
                if !copy {
                    self.implicit_keep = false;
                }
                let same =
                    self.actions.iter_mut().find(|a| matches!(a, Action::FileInto { mailbox: m, .. } if *m == mailbox));
                if let Some(Action::FileInto { flags: old, create: old_create, .. }) = same {
                    *old = normalise_flags(old.iter().chain(&flags).map(String::as_str));
                    *old_create |= create;
                } else {
                    self.push(Action::FileInto { mailbox, flags, create: *create })?;
                }
            }
            Command::Redirect { address, copy } => {
                let address = self.s(address);
                if !crate::validate::plausible_address(&address) {
                    return Err(format!("invalid redirect address {address:?}"));
                }
                let address = address.trim().to_string();
                if !copy {
                    self.implicit_keep = false;
                }
                let same = self
                    .actions
                    .iter_mut()
                    .find(|a| matches!(a, Action::Redirect { address: x, .. } if x.eq_ignore_ascii_case(&address)));
                if let Some(Action::Redirect { copy: old, .. }) = same {
                    *old &= copy;
                } else {
                    self.redirects += 1;
                    if self.redirects > self.script.limits.max_redirects {
                        return Err(format!("too many redirects (at most {})", self.script.limits.max_redirects));
                    }
                    self.push(Action::Redirect { address, copy: *copy })?;
                }
            }
            Command::Reject { reason, extended } => {
                if self.has_reject() {
                    return Err("more than one \"reject\"".into());
                }
                if self.actions.iter().any(|a| matches!(a, Action::Keep { .. } | Action::FileInto { .. })) {
                    return Err("\"reject\" cannot be used with \"keep\" or \"fileinto\"".into());
                }
                self.implicit_keep = false;
                let reason = self.s(reason);
                self.push(Action::Reject { reason, extended: *extended })?;
            }
            Command::Flags { op, var, flags } => {
                let given = self.list(flags);
                let current = match var {
                    Some(v) => normalise_flags(self.vars.get(v)),
                    None => self.flags.clone(),
                };
                let given = normalise_flags(given.iter().map(String::as_str));
                let new = match op {
                    FlagOp::Set => given,
                    FlagOp::Add => normalise_flags(current.iter().chain(&given).map(String::as_str)),
                    FlagOp::Remove => {
                        current.into_iter().filter(|f| !given.iter().any(|g| g.eq_ignore_ascii_case(f))).collect()
                    }
                };
                match var {
                    Some(v) => self.vars.set(v, new.join(" "))?,
                    None => self.flags = new,
                }
            }
            Command::Set { name, value, modifiers } => {
                let value = apply_modifiers(self.s(value), modifiers);
                self.vars.set(name, value)?;
            }
            Command::Vacation(args) => {
                if self.vacation_done {
                    return Err("more than one \"vacation\"".into());
                }
                self.vacation_done = true;
                let args = crate::ast::VacationArgs {
                    days: args.days,
                    subject: args.subject.as_deref().map(|s| self.s(s)),
                    from: args.from.as_deref().map(|s| self.s(s)),
                    addresses: self.list(&args.addresses),
                    mime: args.mime,
                    handle: args.handle.as_deref().map(|s| self.s(s)),
                    reason: self.s(&args.reason),
                };
                if let Some(action) = vacation::respond(self, &args) {
                    self.push(action)?;
                }
            }
        }
        Ok(Flow::Go)
    }

    /// The decoded values of the top-level header fields called `name` (case-insensitive).
    pub(crate) fn header_values(&self, name: &str) -> Vec<String> {
        let Some(msg) = &self.msg else { return Vec::new() };
        let max = self.script.limits.max_header_values;
        msg.headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
            .take(max)
            .map(|h| {
                let raw = self.env.message.get(h.offset_start() as usize..h.offset_end() as usize).unwrap_or(&[]);
                self.budget.spend(raw.len());
                let mut raw = raw.to_vec();
                if raw.last() != Some(&b'\n') {
                    raw.push(b'\n');
                }
                match mail_parser::parsers::MessageStream::new(&raw).parse_unstructured() {
                    HeaderValue::Text(t) => t.trim().to_string(),
                    _ => String::new(),
                }
            })
            .collect()
    }

    /// The addresses in the top-level header fields called `name`.
    pub(crate) fn header_addresses(&self, name: &str) -> Vec<String> {
        let Some(msg) = &self.msg else { return Vec::new() };
        let max = self.script.limits.max_header_values;
        let mut out = Vec::new();
        for h in msg.headers().iter().filter(|h| h.name().eq_ignore_ascii_case(name)) {
            let raw = self.env.message.get(h.offset_start() as usize..h.offset_end() as usize).unwrap_or(&[]);
            self.budget.spend(raw.len());
            let mut raw = raw.to_vec();
            if raw.last() != Some(&b'\n') {
                raw.push(b'\n');
            }
            if let HeaderValue::Address(a) = mail_parser::parsers::MessageStream::new(&raw).parse_address() {
                for addr in a.iter() {
                    if out.len() >= max {
                        return out;
                    }
                    if let Some(x) = addr.address() {
                        out.push(x.trim().to_string());
                    }
                }
            }
        }
        out
    }

    fn body_values(&self, transform: &BodyTransform) -> Vec<String> {
        let Some(msg) = &self.msg else { return Vec::new() };
        let mut budget = self.script.limits.max_body_scan;
        let mut take = |bytes: &[u8]| -> Option<String> {
            if budget == 0 {
                return None;
            }
            let n = bytes.len().min(budget);
            budget -= n;
            self.budget.spend(n);
            Some(String::from_utf8_lossy(&bytes[..n]).into_owned())
        };
        match transform {
            BodyTransform::Raw => {
                let start = msg.root_part().raw_body_offset() as usize;
                let body = self.env.message.get(start..).unwrap_or(&[]);
                take(body).into_iter().collect()
            }
            BodyTransform::Text | BodyTransform::Content(_) => {
                let types: Vec<String> = match transform {
                    BodyTransform::Content(t) => self.list(t).iter().map(|t| t.to_ascii_lowercase()).collect(),
                    _ => vec!["text".into()],
                };
                let mut out = Vec::new();
                for part in &msg.parts {
                    let (ctype, sub) = match part.headers.iter().find_map(|h| h.value().as_content_type()) {
                        Some(ct) => (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or("").to_ascii_lowercase()),
                        None => ("text".to_string(), "plain".to_string()),
                    };
                    let wanted = types.iter().any(|t| match t.split_once('/') {
                        Some((a, b)) => *a == ctype && *b == sub,
                        None => t.is_empty() || *t == ctype,
                    });
                    if !wanted {
                        continue;
                    }
                    let text = match &part.body {
                        PartType::Text(t) => take(t.as_bytes()),
                        // RFC 5173 §5.2: :text sees HTML as the text a reader would see.
                        PartType::Html(t) if matches!(transform, BodyTransform::Text) => {
                            take(mail_parser::decoders::html::html_to_text(t).as_bytes())
                        }
                        PartType::Html(t) => take(t.as_bytes()),
                        PartType::Binary(b) | PartType::InlineBinary(b) => take(b),
                        PartType::Message(_) | PartType::Multipart(_) => None,
                    };
                    out.extend(text);
                }
                out
            }
        }
    }

    fn matched(&mut self, m: &Match, values: &[String], keys: &[String]) -> Result<bool, String> {
        let keys = self.list(keys);
        let mut caps = Vec::new();
        let ok = match_values(m, values, &keys, &mut caps, &self.budget)
            .filter(|_| !self.budget.exhausted())
            .ok_or_else(|| self.too_much_work())?;
        if ok && self.script.variables && !caps.is_empty() {
            caps.truncate(10);
            self.vars.matches = caps;
        }
        Ok(ok)
    }

    fn test(&mut self, t: &Test) -> Result<bool, String> {
        self.tick()?;
        Ok(match t {
            Test::True => true,
            Test::False => false,
            Test::Not(t) => !self.test(t)?,
            Test::AllOf(list) => {
                for t in list {
                    if !self.test(t)? {
                        return Ok(false);
                    }
                }
                true
            }
            Test::AnyOf(list) => {
                for t in list {
                    if self.test(t)? {
                        return Ok(true);
                    }
                }
                false
            }
            Test::Address { part, headers, keys, m } => {
                let mut values = Vec::new();
                for h in self.list(headers) {
                    values.extend(self.header_addresses(&h).iter().filter_map(|a| split_address(a, *part)));
                }
                self.matched(m, &values, keys)?
            }
            Test::Envelope { part, parts, keys, m } => {
                let mut values = Vec::new();
                for p in self.list(parts) {
                    let addr = match p.to_ascii_lowercase().as_str() {
                        "from" => self.env.envelope_from,
                        "to" => self.env.envelope_to,
                        _ => continue,
                    };
                    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
                    // The null sender has no parts; only :all sees it, as "" (RFC 5228 §5.4).
                    if addr.is_empty() {
                        if *part == AddressPart::All {
                            values.push(String::new());
                        }
                        continue;
                    }
                    values.extend(split_address(addr, *part));
                }
                self.matched(m, &values, keys)?
            }
            Test::Header { headers, keys, m } => {
                let mut values = Vec::new();
                for h in self.list(headers) {
                    values.extend(self.header_values(&h));
                }
                self.matched(m, &values, keys)?
            }
            Test::Exists(headers) => {
                let names = self.list(headers);
                match &self.msg {
                    Some(msg) => names.iter().all(|n| msg.headers().iter().any(|h| h.name().eq_ignore_ascii_case(n))),
                    None => false,
                }
            }
            Test::MailboxExists(names) => {
                let names = self.list(names);
                names.iter().all(|n| self.env.mailboxes.iter().any(|m| m == n))
            }
            Test::Size { over, limit } => {
                if *over {
                    self.env.size > *limit
                } else {
                    self.env.size < *limit
                }
            }
            Test::HasFlag { vars, keys, m } => {
                let flags = match vars {
                    Some(vs) => {
                        let vs = self.list(vs);
                        let values: Vec<&str> =
                            vs.iter().filter_map(|v| self.vars.get(&v.to_ascii_lowercase())).collect();
                        normalise_flags(values)
                    }
                    None => self.flags.clone(),
                };
                self.matched(m, &flags, keys)?
            }
            Test::Body { transform, keys, m } => {
                let values = self.body_values(transform);
                self.matched(m, &values, keys)?
            }
            Test::String { sources, keys, m } => {
                let mut values = self.list(sources);
                // RFC 5229 §5: :count counts only the non-empty strings.
                if matches!(m.kind, crate::ast::MatchKind::Count(_)) {
                    values.retain(|v| !v.is_empty());
                }
                self.matched(m, &values, keys)?
            }
            Test::Spam { value, m } => {
                // RFC 5235 §3.2: "0" means not tested, "1" clean … "10" certainly spam.
                let score = match self.env.spam_score {
                    None => 0,
                    Some(s) => s.clamp(1, 10),
                };
                self.matched(m, &[score.to_string()], std::slice::from_ref(value))?
            }
        })
    }

    pub(crate) fn env(&self) -> &Environment<'e> {
        self.env
    }

    pub(crate) fn max_vacation_days(&self) -> u32 {
        self.script.limits.max_vacation_days
    }
}
