//! Vacation (RFC 5230): whether a reply may be sent, and what it looks like.
//!
//! Only the rules that can be decided from the message itself are applied here. The rule that
//! one sender gets at most one reply per `:days` needs memory across deliveries, so it is the
//! caller's: `Action::Vacation` carries `handle`, `days` and `to`, and the caller sends the
//! reply only if it has not sent one for (handle, to) within `days` days.

use crate::ast::VacationArgs;
use crate::run::{Action, Run};
use crate::validate::plausible_address;

/// Default `:days` (RFC 5230 §4.1 leaves it to the site; 7 is the common choice).
const DEFAULT_DAYS: u64 = 7;

/// Headers whose recipients count as "sent to the user" (RFC 5230 §4.5).
const RECIPIENT_HEADERS: &[&str] = &["to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"];

fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Whether the sender is a robot that must not get automatic replies (RFC 5230 §4.6).
fn robot_sender(from: &str) -> bool {
    let local = from.rsplit_once('@').map_or(from, |(l, _)| l).to_ascii_lowercase();
    local == "mailer-daemon"
        || local == "listserv"
        || local == "majordomo"
        || local.starts_with("owner-")
        || local.ends_with("-request")
}

/// The vacation reply for this message, or None when RFC 5230 says not to answer.
pub(crate) fn respond(run: &Run<'_, '_>, args: &VacationArgs) -> Option<Action> {
    let env = run.env();
    let sender = env.envelope_from.trim().trim_start_matches('<').trim_end_matches('>');
    if sender.is_empty() || !plausible_address(sender) || robot_sender(sender) {
        return None;
    }
    let auto = run.header_values("auto-submitted");
    if auto.iter().any(|v| !v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("no")) {
        return None;
    }
    let msg = run.msg.as_ref()?;
    if msg.headers().iter().any(|h| h.name().get(..5).is_some_and(|p| p.eq_ignore_ascii_case("list-"))) {
        return None;
    }
    let bulk = ["bulk", "junk", "list"];
    if run.header_values("precedence").iter().any(|v| bulk.iter().any(|b| v.eq_ignore_ascii_case(b))) {
        return None;
    }
    let mut own: Vec<String> =
        env.user_addresses.iter().chain(&args.addresses).map(|a| a.trim().to_ascii_lowercase()).collect();
    let rcpt = env.envelope_to.trim().trim_start_matches('<').trim_end_matches('>');
    if !rcpt.is_empty() {
        own.push(rcpt.to_ascii_lowercase());
    }
    if own.iter().any(|a| a.eq_ignore_ascii_case(sender)) {
        return None;
    }
    let addressed = RECIPIENT_HEADERS
        .iter()
        .flat_map(|h| run.header_addresses(h))
        .any(|a| own.iter().any(|o| o.eq_ignore_ascii_case(&a)));
    if !addressed {
        return None;
    }
    let days = args.days.unwrap_or(DEFAULT_DAYS).clamp(1, u64::from(run.max_vacation_days().max(1)));
    let days = u32::try_from(days).unwrap_or(u32::MAX);
    let subject = match &args.subject {
        Some(s) => s.clone(),
        None => match run.header_values("subject").into_iter().next() {
            Some(s) if !s.is_empty() => format!("Auto: {s}"),
            _ => "Automated reply".to_string(),
        },
    };
    let handle = match &args.handle {
        Some(h) => h.clone(),
        // RFC 5230 §4.2: without :handle, replies that differ in these arguments are different.
        None => format!(
            "{:016x}",
            fnv1a(&[
                &args.reason,
                args.subject.as_deref().unwrap_or(""),
                args.from.as_deref().unwrap_or(""),
                if args.mime { "mime" } else { "" },
            ])
        ),
    };
    let from = args.from.clone().filter(|f| !f.trim().is_empty());
    let in_reply_to = run.header_values("message-id").into_iter().next().filter(|s| !s.is_empty());
    Some(Action::Vacation {
        handle,
        days,
        subject,
        from,
        reason: args.reason.clone(),
        mime: args.mime,
        to: sender.to_string(),
        in_reply_to,
    })
}
