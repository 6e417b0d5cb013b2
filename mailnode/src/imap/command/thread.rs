//! THREAD and UID THREAD (RFC 5256 §4, §5): the messages SEARCH criteria match, grouped into
//! conversations by ORDEREDSUBJECT or REFERENCES, answered with `* THREAD (1)(2 3)…`.
//!
//! Both algorithms are pure functions from [`MessageKeys`] to a [`Forest`]. Threads can be as
//! deep as a mailbox is long, so nothing here recurses: trees are walked with explicit stacks,
//! and the link-loop checks of REFERENCES share a bounded budget of steps.

use std::collections::HashMap;

use imap_types::core::{Charset, Vec1};
use imap_types::extensions::thread::ThreadingAlgorithm;
use imap_types::search::SearchKey;
use tokio::io::AsyncWriteExt;

use super::base_subject::BaseSubject;
use super::search::Reads;
use super::sort::MessageKeys;
use crate::imap::error::{CommandError, CommandResult, Done};
use crate::imap::response::Data;
use crate::imap::session::{Session, Sink};

/// Ancestor steps one link's loop check may take: a thread deeper than this is cut there.
const MAX_DEPTH: usize = 10_000;

/// Ancestor steps all loop checks of one THREAD may take together; past it, no more links
/// are made (every message still appears, in fewer or shallower threads).
const MAX_LINK_STEPS: usize = 20_000_000;

/// A set of threads: nodes in an arena, each a message or a dummy (a message referred to but
/// not among those threaded).
#[derive(Debug, Default)]
pub struct Forest {
    /// The message of each node, as an index into the threaded messages; `None`: a dummy.
    message: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    /// The top-level nodes, in order.
    roots: Vec<usize>,
}

impl Forest {
    fn add(&mut self, message: Option<usize>) -> usize {
        self.message.push(message);
        self.children.push(Vec::new());
        self.message.len() - 1
    }

    fn is_dummy(&self, node: usize) -> bool {
        self.message[node].is_none()
    }

    /// Nodes below the roots, each after its parent (a pre-order, without recursion).
    fn descendants(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.message.len());
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(node) = stack.pop() {
            order.push(node);
            stack.extend(self.children[node].iter().rev());
        }
        order
    }

    /// Sorts every set of siblings, the roots too, by sent date then sequence number; a dummy
    /// goes by its first child once its children are sorted (§4 steps 4 and 6).
    fn sort_by_date(&mut self, messages: &[MessageKeys]) {
        let mut key = vec![(i64::MAX, u32::MAX); self.message.len()];
        for node in self.descendants().into_iter().rev() {
            let mut children = std::mem::take(&mut self.children[node]);
            children.sort_by_key(|&c| key[c]);
            key[node] = match self.message[node] {
                Some(m) => (messages[m].sent, messages[m].seq),
                None => children.first().map_or((i64::MAX, u32::MAX), |&c| key[c]),
            };
            self.children[node] = children;
        }
        let mut roots = std::mem::take(&mut self.roots);
        roots.sort_by_key(|&r| key[r]);
        self.roots = roots;
    }

    /// `* THREAD (…)(…)`, naming each message by its [`MessageKeys::number`] (RFC 5256 §4):
    /// a parent and its only child are listed in a row, several children each in parentheses.
    pub fn response(&self, messages: &[MessageKeys]) -> Vec<u8> {
        enum Step {
            Open(usize),
            Close,
        }
        let mut data = Data::new("THREAD");
        if self.roots.is_empty() {
            return data.finish();
        }
        data.raw(" ");
        let mut stack: Vec<Step> = self.roots.iter().rev().map(|&r| Step::Open(r)).collect();
        while let Some(step) = stack.pop() {
            let Step::Open(mut node) = step else {
                data.raw(")");
                continue;
            };
            data.raw("(");
            stack.push(Step::Close);
            let mut wrote = false;
            loop {
                if let Some(m) = self.message[node] {
                    data.raw(format_args!("{}{}", if wrote { " " } else { "" }, messages[m].number));
                    wrote = true;
                }
                match self.children[node].as_slice() {
                    [] => break,
                    [only] => node = *only,
                    several => {
                        if wrote {
                            data.raw(" ");
                        }
                        stack.extend(several.iter().rev().map(|&c| Step::Open(c)));
                        break;
                    }
                }
            }
        }
        data.finish()
    }
}

/// THREAD=ORDEREDSUBJECT (§4): messages with the same base subject form a thread, the
/// earliest sent its parent and the others its children by date; threads go by the date of
/// their parent.
pub fn ordered_subject(messages: &[MessageKeys]) -> Forest {
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&messages[a], &messages[b]);
        (&a.subject.key, a.sent, a.seq).cmp(&(&b.subject.key, b.sent, b.seq))
    });
    let mut forest = Forest::default();
    let mut parent: Option<(usize, &str)> = None;
    for m in order {
        let node = forest.add(Some(m));
        match parent {
            Some((p, subject)) if subject == messages[m].subject.key => forest.children[p].push(node),
            _ => {
                forest.roots.push(node);
                parent = Some((node, &messages[m].subject.key));
            }
        }
    }
    // Children are already in date order; the roots need sorting by theirs.
    forest.roots.sort_by_key(|&r| forest.message[r].map(|m| (messages[m].sent, messages[m].seq)));
    forest
}

/// The parent links of step 1 of REFERENCES, with loop checks on a budget.
struct Links {
    parent: Vec<Option<usize>>,
    steps_left: usize,
}

impl Links {
    /// Whether making `parent` the parent of `child` would make a loop: `child` is `parent`
    /// or one of its ancestors. Out of budget, every link would.
    fn would_loop(&mut self, parent: usize, child: usize) -> bool {
        let mut node = parent;
        for _ in 0..MAX_DEPTH {
            if node == child {
                return true;
            }
            if self.steps_left == 0 {
                return true;
            }
            self.steps_left -= 1;
            match self.parent[node] {
                Some(up) => node = up,
                None => return false,
            }
        }
        true
    }
}

/// THREAD=REFERENCES (§4): threads from Message-ID, References and In-Reply-To, with dummy
/// parents for messages referred to but absent, then roots with the same base subject merged.
///
/// `messages` must be in sequence order: of messages sharing a Message-ID, the first keeps it.
pub fn references(messages: &[MessageKeys]) -> Forest {
    let mut forest = Forest::default();
    let mut links = Links { parent: Vec::new(), steps_left: MAX_LINK_STEPS };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    fn container<'a>(
        forest: &mut Forest,
        links: &mut Links,
        by_id: &mut HashMap<&'a str, usize>,
        id: &'a str,
    ) -> usize {
        *by_id.entry(id).or_insert_with(|| {
            links.parent.push(None);
            forest.add(None)
        })
    }
    // Step 1: a container per Message-ID, linked as the references say.
    for (m, message) in messages.iter().enumerate() {
        // (A) The message's container; a Message-ID already taken counts as none (§4 1.A).
        let own = match message.message_id.as_deref() {
            Some(id) if by_id.get(id).is_none_or(|&c| forest.is_dummy(c)) => {
                container(&mut forest, &mut links, &mut by_id, id)
            }
            _ => {
                links.parent.push(None);
                forest.add(None)
            }
        };
        forest.message[own] = Some(m);
        // (B) Each reference the parent of the next, unless that one has a parent already or
        // the link would make a loop.
        let refs: Vec<usize> =
            message.references.iter().map(|id| container(&mut forest, &mut links, &mut by_id, id)).collect();
        for pair in refs.windows(2) {
            let (parent, child) = (pair[0], pair[1]);
            if links.parent[child].is_none() && !links.would_loop(parent, child) {
                links.parent[child] = Some(parent);
            }
        }
        // (C) The last reference is the message's parent: a parent it had from another
        // message's References gives way (a truncated References probably set it).
        let parent = refs.last().copied();
        if links.parent[own] != parent {
            links.parent[own] = None;
            if let Some(parent) = parent
                && !links.would_loop(parent, own)
            {
                links.parent[own] = Some(parent);
            }
        }
    }
    // Step 2: the roots are the containers without a parent.
    for (node, parent) in links.parent.iter().enumerate() {
        match parent {
            Some(p) => forest.children[*p].push(node),
            None => forest.roots.push(node),
        }
    }
    // Step 3: dummies go, their children promoted in their place — at the top level only
    // when there is one, so that two replies to a missing message stay together.
    for node in forest.descendants().into_iter().rev() {
        let children = std::mem::take(&mut forest.children[node]);
        let mut kept = Vec::with_capacity(children.len());
        for child in children {
            if forest.is_dummy(child) {
                // Its own dummies are gone already: it is processed before its parent.
                kept.append(&mut forest.children[child]);
            } else {
                kept.push(child);
            }
        }
        forest.children[node] = kept;
    }
    let mut roots = Vec::with_capacity(forest.roots.len());
    for &root in &forest.roots {
        match forest.children[root].as_slice() {
            [] if forest.is_dummy(root) => {}
            [only] if forest.is_dummy(root) => roots.push(*only),
            _ => roots.push(root),
        }
    }
    forest.roots = roots;
    // Step 4: the roots (and all siblings) in date order, which decides which root of a
    // subject step 5 keeps.
    forest.sort_by_date(messages);
    merge_subjects(&mut forest, messages);
    // Step 6: siblings in date order again, now that step 5 has moved threads.
    forest.sort_by_date(messages);
    forest
}

/// Step 5 of REFERENCES: threads whose roots have the same base subject are merged.
fn merge_subjects(forest: &mut Forest, messages: &[MessageKeys]) {
    // A root's subject: its message's, or its first child's if it is a dummy.
    let subject = |forest: &Forest, node: usize| -> Option<&BaseSubject> {
        let message = forest.message[node].or_else(|| forest.children[node].first().and_then(|&c| forest.message[c]));
        message.map(|m| &messages[m].subject).filter(|s| !s.key.is_empty())
    };
    let reply =
        |forest: &Forest, node: usize| forest.message[node].is_some_and(|m| messages[m].subject.reply_or_forward);
    // (A)-(E) The root that stands for each subject: a dummy if there is one, else one
    // that is not a reply, else the first.
    let mut table: HashMap<String, usize> = HashMap::new();
    for &root in &forest.roots {
        let Some(s) = subject(forest, root) else { continue };
        match table.get(&s.key) {
            None => {
                table.insert(s.key.clone(), root);
            }
            Some(&held) => {
                if !forest.is_dummy(held) && (forest.is_dummy(root) || (reply(forest, held) && !reply(forest, root))) {
                    table.insert(s.key.clone(), root);
                }
            }
        }
    }
    // (F)-(J) Every other root of a subject joins the one in the table. `roots` keeps the
    // top-level order: a root merged away leaves a hole, a dummy takes its partner's place.
    let mut roots: Vec<Option<usize>> = std::mem::take(&mut forest.roots).into_iter().map(Some).collect();
    let mut place: HashMap<usize, usize> = roots.iter().enumerate().filter_map(|(i, r)| Some(((*r)?, i))).collect();
    for i in 0..roots.len() {
        let Some(root) = roots[i] else { continue };
        let Some(key) = subject(forest, root).map(|s| s.key.clone()) else { continue };
        let Some(&held) = table.get(&key) else { continue };
        if held == root {
            continue;
        }
        if forest.is_dummy(held) && forest.is_dummy(root) {
            let mut moved = std::mem::take(&mut forest.children[root]);
            forest.children[held].append(&mut moved);
        } else if forest.is_dummy(held) || (reply(forest, root) && !reply(forest, held)) {
            forest.children[held].push(root);
        } else {
            let dummy = forest.add(None);
            forest.children[dummy] = vec![held, root];
            if let Some(at) = place.get(&held).copied() {
                roots[at] = Some(dummy);
                place.insert(dummy, at);
            }
            table.insert(key, dummy);
        }
        roots[i] = None;
    }
    forest.roots = roots.into_iter().flatten().collect();
}

/// `* THREAD` for the messages of [`references`] or [`ordered_subject`].
pub fn thread_response(messages: &[MessageKeys], forest: &Forest) -> Vec<u8> {
    forest.response(messages)
}

impl Session {
    /// THREAD and UID THREAD: the matches of `search`, threaded by `algorithm`.
    pub(crate) async fn thread(
        &mut self,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &Charset<'_>,
        search: &Vec1<SearchKey<'_>>,
        uid: bool,
        out: &mut Sink<'_>,
    ) -> CommandResult {
        let threads: fn(&[MessageKeys]) -> Forest = match algorithm {
            ThreadingAlgorithm::OrderedSubject => ordered_subject,
            ThreadingAlgorithm::References => references,
            ThreadingAlgorithm::Other(_) => {
                return Err(CommandError::bad(
                    "unknown threading algorithm (REFERENCES and ORDEREDSUBJECT are offered)",
                ));
            }
        };
        let (found, _) = self
            .search_matches(Some(charset), search, Reads::Header, out, |c| {
                MessageKeys::of(c, if uid { c.entry.meta.uid } else { c.seq })
            })
            .await?;
        let forest = threads(&found);
        out.write_all(&thread_response(&found, &forest)).await?;
        Ok(Done::ok(if uid { "UID THREAD completed" } else { "THREAD completed" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::command::base_subject::base_subject;

    /// A message: its sent time, Message-ID, references and subject.
    fn msg(seq: u32, sent: i64, id: Option<&str>, refs: &[&str], subject: &str) -> MessageKeys {
        MessageKeys {
            seq,
            number: seq,
            sent,
            message_id: id.map(str::to_string),
            references: refs.iter().map(|r| r.to_string()).collect(),
            subject: base_subject(subject),
            ..MessageKeys::default()
        }
    }

    fn threads(messages: &[MessageKeys], algorithm: fn(&[MessageKeys]) -> Forest) -> String {
        let response = thread_response(messages, &algorithm(messages));
        String::from_utf8(response).expect("ASCII")
    }

    /// Renumbers messages 1.. in their order, as an EXPUNGE would.
    fn renumber(mut messages: Vec<MessageKeys>) -> Vec<MessageKeys> {
        for (i, m) in messages.iter_mut().enumerate() {
            (m.seq, m.number) = (i as u32 + 1, i as u32 + 1);
        }
        messages
    }

    #[test]
    fn references_follow_imaptest() {
        // thread: 2 refers to 1 and 3, 3 to 2; 3's own word about its parent wins over 2's.
        let t = vec![
            msg(1, 17, Some("a@b"), &[], ""),
            msg(2, 15, Some("b@b"), &["a@b", "c@b"], ""),
            msg(3, 16, Some("c@b"), &["b@b"], ""),
        ];
        assert_eq!(threads(&t, references), "* THREAD (3 2)(1)\r\n");
        assert_eq!(threads(&renumber(t[1..].to_vec()), references), "* THREAD (2 1)\r\n");
        // thread2: a duplicate Message-ID is no Message-ID.
        let t = [msg(1, 0, Some("a@b"), &[], ""), msg(2, 0, Some("a@b"), &[], "")];
        assert_eq!(threads(&t, references), "* THREAD (1)(2)\r\n");
        // thread3 and thread4: a reply joins the thread of its subject.
        let t = [msg(1, 0, Some("a@b"), &[], "foo"), msg(2, 1, Some("a@b"), &[], "Re: foo")];
        assert_eq!(threads(&t, references), "* THREAD (1 2)\r\n");
        let t = [msg(1, 0, Some("a@b"), &[], "foo"), msg(2, 1, Some("b@b"), &["c@b"], "Re: foo")];
        assert_eq!(threads(&t, references), "* THREAD (1 2)\r\n");
        // thread5: dummies at the top level stay only with two children or more.
        let t = [
            msg(1, 17, Some("1@b"), &[], ""),
            msg(2, 15, Some("2@b"), &["1@b"], ""),
            msg(3, 15, Some("3@b"), &["1@b"], ""),
            msg(4, 15, Some("4@b"), &["2@b"], ""),
            msg(5, 15, Some("5@b"), &["2@b"], ""),
        ];
        assert_eq!(threads(&t[..4], references), "* THREAD (1 (2 4)(3))\r\n");
        assert_eq!(threads(&renumber(t[2..4].to_vec()), references), "* THREAD (1)(2)\r\n");
        assert_eq!(threads(&renumber(t[2..].to_vec()), references), "* THREAD (1)((2)(3))\r\n");
        // thread6: two replies to a missing message.
        let t = [msg(1, 0, None, &["a@b"], ""), msg(2, 1, None, &["a@b"], "")];
        assert_eq!(threads(&t, references), "* THREAD ((1)(2))\r\n");
        // thread7: which duplicate keeps the Message-ID depends on the sequence.
        let t = vec![
            msg(1, 0, Some("a@b"), &[], ""),
            msg(2, 0, Some("b@b"), &["a@b"], ""),
            msg(3, 0, Some("c@b"), &["b@b"], ""),
            msg(4, 0, Some("b@b"), &["a@b"], ""),
        ];
        assert_eq!(threads(&t, references), "* THREAD (1 (2 3)(4))\r\n");
        let expunged = renumber(vec![t[0].clone(), t[2].clone(), t[3].clone()]);
        assert_eq!(threads(&expunged, references), "* THREAD (1 3 2)\r\n");
    }

    #[test]
    fn references_merge_subjects() {
        // Two unrelated roots with one subject go under a dummy; a reply under the original.
        let t = [
            msg(1, 0, Some("1@x"), &[], "hello"),
            msg(2, 1, Some("2@x"), &[], "Hello"),
            msg(3, 2, Some("3@x"), &[], "Re: hello"),
            msg(4, 3, Some("4@x"), &[], "other"),
        ];
        assert_eq!(threads(&t, references), "* THREAD ((1)(2)(3))(4)\r\n");
        let t = [msg(1, 5, Some("1@x"), &[], "Re: hi"), msg(2, 6, Some("2@x"), &[], "hi")];
        assert_eq!(threads(&t, references), "* THREAD (2 1)\r\n");
        // A dummy root takes roots of its subject as children; two dummies pool theirs.
        let t = [
            msg(1, 0, None, &["p@x"], "topic"),
            msg(2, 1, None, &["p@x"], "topic"),
            msg(3, 2, None, &[], "Re: topic"),
            msg(4, 3, None, &["q@x"], "topic"),
            msg(5, 4, None, &["q@x"], "topic"),
        ];
        assert_eq!(threads(&t, references), "* THREAD ((1)(2)(3)(4)(5))\r\n");
    }

    #[test]
    fn references_of_the_rfc_shape() {
        // A thread deep and wide, like the example of RFC 5256 §4:
        // "(2)(3 6 (4 23)(44 7 96))".
        let t = [
            msg(2, 0, Some("2@x"), &[], "a"),
            msg(3, 1, Some("3@x"), &[], "b"),
            msg(4, 3, Some("4@x"), &["3@x", "6@x"], "Re: b"),
            msg(6, 2, Some("6@x"), &["3@x"], "Re: b"),
            msg(7, 6, Some("7@x"), &["3@x", "6@x", "44@x"], "Re: b"),
            msg(23, 4, Some("23@x"), &["6@x", "4@x"], "Re: b"),
            msg(44, 5, Some("44@x"), &["6@x"], "Re: b"),
            msg(96, 7, Some("96@x"), &["44@x", "7@x"], "Re: b"),
        ];
        assert_eq!(threads(&t, references), "* THREAD (2)(3 6 (4 23)(44 7 96))\r\n");
    }

    #[test]
    fn ordered_subject_follows_imaptest() {
        // thread-orderedsubject2: children by date, threads by their first message's date.
        let t = [
            msg(1, 10, None, &[], "a"),
            msg(2, 9, None, &[], "b"),
            msg(3, 8, None, &[], "a"),
            msg(4, 7, None, &[], "b"),
            msg(5, 30, None, &[], "a"),
            msg(6, 29, None, &[], "b"),
            msg(7, 28, None, &[], "a"),
            msg(8, 27, None, &[], "b"),
        ];
        assert_eq!(threads(&t, ordered_subject), "* THREAD (4 (2)(8)(6))(3 (1)(7)(5))\r\n");
        let t = [msg(1, 0, None, &[], ""), msg(2, 0, None, &[], "x"), msg(3, 0, None, &[], " ")];
        assert_eq!(threads(&t, ordered_subject), "* THREAD (1 3)(2)\r\n");
        assert_eq!(threads(&[], ordered_subject), "* THREAD\r\n");
        assert_eq!(threads(&[], references), "* THREAD\r\n");
    }

    #[test]
    fn loops_and_self_references_are_refused() {
        let t = [
            msg(1, 0, Some("a@x"), &["b@x"], ""),
            msg(2, 1, Some("b@x"), &["a@x"], ""),
            msg(3, 2, Some("c@x"), &["c@x"], ""),
            msg(4, 3, Some("d@x"), &["e@x", "d@x", "e@x"], ""),
        ];
        // 2 is named 1's parent first; 2's claim of 1 as its parent would close a loop.
        assert_eq!(threads(&t, references), "* THREAD (2 1)(3)(4)\r\n");
    }

    #[test]
    fn deep_and_wide_threads_are_handled_without_recursion() {
        // A chain of 100 000 replies, each to the one before, plus a side reply at each level.
        let n = 100_000;
        let mut t = Vec::with_capacity(n);
        for i in 0..n {
            let refs: Vec<String> = if i == 0 { vec![] } else { vec![format!("{}@x", i - 1)] };
            let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
            t.push(msg(i as u32 + 1, i as i64, Some(&format!("{i}@x")), &refs, "Re: long"));
        }
        let response = threads(&t, references);
        assert!(response.starts_with("* THREAD ((1 2 3 "), "{}", &response[..40]);
        // The chain is cut where the loop checks' budget ends; every message is still there once.
        let mut numbers: Vec<usize> =
            response[9..].split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=n).collect::<Vec<_>>());
        let wide: Vec<MessageKeys> =
            (1..=50_000).map(|i| msg(i, 0, Some(&format!("{i}@x")), &["root@x"], "")).collect();
        let response = threads(&wide, references);
        assert!(response.starts_with("* THREAD ((1)(2)(3)"));
        assert_eq!(ordered_subject(&wide).roots.len(), 1);
    }

    #[test]
    fn responses_parse_as_imap() {
        use imap_codec::ResponseCodec;
        use imap_codec::decode::Decoder;
        use imap_types::response::{Data as ImapData, Response};
        let t = [
            msg(1, 0, None, &["p@x"], ""),
            msg(2, 1, None, &["p@x"], ""),
            msg(3, 2, Some("3@x"), &[], "b"),
            msg(4, 3, Some("4@x"), &["3@x"], "b"),
            msg(5, 4, Some("5@x"), &["3@x"], "b"),
            msg(6, 5, Some("6@x"), &["5@x"], "b"),
        ];
        let response = thread_response(&t, &references(&t));
        assert_eq!(response, b"* THREAD ((1)(2))(3 (4)(5 6))\r\n");
        let decoded = ResponseCodec::default().decode(&response).map(|(rest, r)| (rest.len(), r));
        let Ok((0, Response::Data(ImapData::Thread(parsed)))) = decoded else { panic!("{decoded:?}") };
        let rendered: String = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(rendered, "((1)(2))(3 (4)(5 6))");
    }
}
