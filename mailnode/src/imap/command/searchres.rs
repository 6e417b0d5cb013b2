//! `$`, the saved search result (SEARCHRES, RFC 5182): put into a decoded command in place of
//! the marker the pre-decoder ([`crate::imap::extension::searchres`]) left for it.

use imap_types::command::CommandBody;
use imap_types::core::Vec1;
use imap_types::search::SearchKey;
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::imap::selected::Selected;

/// Deepest nesting of criteria rewritten (imap-codec's parser limits it far below).
const MAX_DEPTH: usize = 64;

/// Whether `set` is the pre-decoder's marker for `$`.
fn is_marker(set: &SequenceSet) -> bool {
    let max = SeqOrUid::Value(std::num::NonZeroU32::MAX);
    matches!(set.0.as_ref(), [Sequence::Range(a, b)] if *a == max && *b == max)
}

/// Puts the saved result of `view` where `body` has the marker. False when the command's
/// message set is the marker and the saved result holds no message still in the view: the
/// command selects nothing (RFC 5182 §2.1: no error).
pub fn substitute(view: Option<&Selected>, body: &mut CommandBody<'_>) -> bool {
    let saved = |uid: bool| view.and_then(|v| v.saved_set(uid));
    match body {
        CommandBody::Fetch { sequence_set, uid, .. }
        | CommandBody::Store { sequence_set, uid, .. }
        | CommandBody::Copy { sequence_set, uid, .. }
        | CommandBody::Move { sequence_set, uid, .. } => {
            if !is_marker(sequence_set) {
                return true;
            }
            match saved(*uid) {
                Some(set) => {
                    *sequence_set = set;
                    true
                }
                None => false,
            }
        }
        CommandBody::ExpungeUid { sequence_set } => {
            if !is_marker(sequence_set) {
                return true;
            }
            match saved(true) {
                Some(set) => {
                    *sequence_set = set;
                    true
                }
                None => false,
            }
        }
        CommandBody::Search { criteria, .. } => {
            let uids = saved(true);
            rewrite_all(criteria, uids.as_ref(), 0);
            true
        }
        _ => true,
    }
}

/// [`rewrite`] on each of `keys` (imap-types lends no `&mut` into its non-empty vectors).
fn rewrite_all(keys: &mut Vec1<SearchKey<'_>>, uids: Option<&SequenceSet>, depth: usize) {
    let mut all: Vec<SearchKey<'_>> = std::mem::replace(keys, Vec1::from(SearchKey::All)).into_iter().collect();
    all.iter_mut().for_each(|k| rewrite(k, uids, depth));
    // Never empty: it came from a `Vec1`.
    if let Ok(rewritten) = Vec1::try_from(all) {
        *keys = rewritten;
    }
}

/// The text of the OK for a command whose `$` selected nothing: as the handler words it.
pub fn nothing_selected(body: &CommandBody<'_>) -> String {
    let name = body.name();
    let uid = matches!(
        body,
        CommandBody::Fetch { uid: true, .. }
            | CommandBody::Store { uid: true, .. }
            | CommandBody::Copy { uid: true, .. }
            | CommandBody::Move { uid: true, .. }
            | CommandBody::ExpungeUid { .. }
    );
    if uid && !name.starts_with("UID") { format!("UID {name} completed") } else { format!("{name} completed") }
}

/// Replaces `$` in search criteria: the saved messages by UID, or no message when none is left.
fn rewrite(key: &mut SearchKey<'_>, uids: Option<&SequenceSet>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match key {
        SearchKey::And(keys) => rewrite_all(keys, uids, depth + 1),
        SearchKey::Not(k) => rewrite(k, uids, depth + 1),
        SearchKey::Or(a, b) => {
            rewrite(a, uids, depth + 1);
            rewrite(b, uids, depth + 1);
        }
        SearchKey::SequenceSet(set) | SearchKey::Uid(set) if is_marker(set) => {
            *key = match uids {
                Some(uids) => SearchKey::Uid(uids.clone()),
                None => SearchKey::Not(Box::new(SearchKey::All)),
            };
        }
        _ => {}
    }
}
