//! Gives the generic parse tree its meaning: known commands, tests and tags, argument types,
//! and that every extension used was `require`d.

use std::collections::HashSet;

use crate::ast::{
    AddressPart, BodyTransform, Command, Comparator, FlagOp, Match, MatchKind, Modifier, Relation, Test, VacationArgs,
};
use crate::error::{Pos, SieveError};
use crate::parse::{RawArg, RawCommand, RawTest};
use crate::variables::is_identifier;

/// Extensions this crate implements, as named in `require`.
pub const EXTENSIONS: &[&str] = &[
    "fileinto",
    "reject",
    "ereject",
    "envelope",
    "imap4flags",
    "body",
    "variables",
    "relational",
    "subaddress",
    "copy",
    "vacation",
    "spamtest",
    "mailbox",
    "comparator-i;ascii-numeric",
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
];

struct Args {
    items: Vec<RawArg>,
    at: usize,
    what: String,
    pos: Pos,
    seen: Vec<String>,
}

impl Args {
    fn new(items: Vec<RawArg>, what: String, pos: Pos) -> Self {
        Args { items, at: 0, what, pos, seen: Vec::new() }
    }

    /// The next tagged argument, if the next argument is one; a tag given twice is an error.
    fn tag(&mut self) -> Result<Option<(String, Pos)>, SieveError> {
        let Some(RawArg::Tag(t, p)) = self.items.get(self.at) else { return Ok(None) };
        if self.seen.contains(t) {
            return Err(SieveError::new(*p, format!("tag \":{t}\" given twice")));
        }
        self.seen.push(t.clone());
        self.at += 1;
        Ok(Some((t.clone(), *p)))
    }

    fn here(&self) -> Pos {
        self.items.get(self.at).map_or(self.pos, RawArg::pos)
    }

    fn remaining(&self) -> usize {
        self.items.len().saturating_sub(self.at)
    }

    fn missing(&self, what: &str) -> SieveError {
        SieveError::new(self.here(), format!("\"{}\" needs {what}", self.what))
    }

    fn string(&mut self, what: &str) -> Result<String, SieveError> {
        match self.items.get(self.at) {
            Some(RawArg::Str(s, _)) => {
                self.at += 1;
                Ok(s.clone())
            }
            Some(a) => Err(SieveError::new(a.pos(), format!("\"{}\" expects a string for {what}", self.what))),
            None => Err(self.missing(what)),
        }
    }

    fn string_list(&mut self, what: &str) -> Result<Vec<String>, SieveError> {
        match self.items.get(self.at) {
            Some(RawArg::Str(s, _)) => {
                self.at += 1;
                Ok(vec![s.clone()])
            }
            Some(RawArg::List(l, _)) => {
                self.at += 1;
                Ok(l.clone())
            }
            Some(a) => Err(SieveError::new(a.pos(), format!("\"{}\" expects a string list for {what}", self.what))),
            None => Err(self.missing(what)),
        }
    }

    fn number(&mut self, what: &str) -> Result<u64, SieveError> {
        match self.items.get(self.at) {
            Some(RawArg::Number(n, _)) => {
                self.at += 1;
                Ok(*n)
            }
            Some(a) => Err(SieveError::new(a.pos(), format!("\"{}\" expects a number for {what}", self.what))),
            None => Err(self.missing(what)),
        }
    }

    fn finish(&self) -> Result<(), SieveError> {
        match self.items.get(self.at) {
            None => Ok(()),
            Some(RawArg::Tag(t, p)) => Err(SieveError::new(*p, format!("unknown tag \":{t}\" for \"{}\"", self.what))),
            Some(a) => Err(SieveError::new(a.pos(), format!("too many arguments for \"{}\"", self.what))),
        }
    }
}

#[derive(Default)]
struct MatchOpts {
    kind: Option<MatchKind>,
    comparator: Option<Comparator>,
    part: Option<AddressPart>,
}

struct Validator {
    exts: HashSet<String>,
}

impl Validator {
    fn has(&self, ext: &str) -> bool {
        self.exts.contains(ext)
    }

    fn need(&self, ext: &str, pos: Pos, what: &str) -> Result<(), SieveError> {
        if self.has(ext) { Ok(()) } else { Err(SieveError::new(pos, format!("{what} needs require \"{ext}\""))) }
    }

    /// Handles a match-type, comparator or address-part tag; false if `tag` is none of them.
    fn match_tag(
        &self,
        tag: &str,
        pos: Pos,
        args: &mut Args,
        o: &mut MatchOpts,
        address: bool,
    ) -> Result<bool, SieveError> {
        let kind = match tag {
            "is" => Some(MatchKind::Is),
            "contains" => Some(MatchKind::Contains),
            "matches" => Some(MatchKind::Matches),
            "value" | "count" => {
                self.need("relational", pos, &format!("\":{tag}\""))?;
                let rel_pos = args.here();
                let rel = match args.string("the relation")?.to_ascii_lowercase().as_str() {
                    "gt" => Relation::Gt,
                    "ge" => Relation::Ge,
                    "lt" => Relation::Lt,
                    "le" => Relation::Le,
                    "eq" => Relation::Eq,
                    "ne" => Relation::Ne,
                    other => return Err(SieveError::new(rel_pos, format!("unknown relation \"{other}\""))),
                };
                Some(if tag == "value" { MatchKind::Value(rel) } else { MatchKind::Count(rel) })
            }
            _ => None,
        };
        if let Some(kind) = kind {
            if o.kind.replace(kind).is_some() {
                return Err(SieveError::new(pos, "more than one match type"));
            }
            return Ok(true);
        }
        if tag == "comparator" {
            let cpos = args.here();
            let name = args.string("the comparator name")?;
            let c = match name.to_ascii_lowercase().as_str() {
                "i;octet" => Comparator::Octet,
                "i;ascii-casemap" => Comparator::AsciiCasemap,
                "i;ascii-numeric" => {
                    self.need("comparator-i;ascii-numeric", cpos, "comparator \"i;ascii-numeric\"")?;
                    Comparator::AsciiNumeric
                }
                _ => return Err(SieveError::new(cpos, format!("unknown comparator \"{name}\""))),
            };
            if o.comparator.replace(c).is_some() {
                return Err(SieveError::new(pos, "more than one comparator"));
            }
            return Ok(true);
        }
        if address {
            let part = match tag {
                "all" => Some(AddressPart::All),
                "localpart" => Some(AddressPart::LocalPart),
                "domain" => Some(AddressPart::Domain),
                "user" | "detail" => {
                    self.need("subaddress", pos, &format!("\":{tag}\""))?;
                    Some(if tag == "user" { AddressPart::User } else { AddressPart::Detail })
                }
                _ => None,
            };
            if let Some(part) = part {
                if o.part.replace(part).is_some() {
                    return Err(SieveError::new(pos, "more than one address part"));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn finish_match(&self, o: &MatchOpts, pos: Pos) -> Result<Match, SieveError> {
        let kind = o.kind.unwrap_or(MatchKind::Is);
        let comparator = o.comparator.unwrap_or(Comparator::AsciiCasemap);
        if comparator == Comparator::AsciiNumeric && matches!(kind, MatchKind::Contains | MatchKind::Matches) {
            return Err(SieveError::new(
                pos,
                "comparator \"i;ascii-numeric\" cannot be used with :contains or :matches",
            ));
        }
        Ok(Match { kind, comparator })
    }

    fn unknown_tag(tag: &str, pos: Pos, what: &str) -> SieveError {
        SieveError::new(pos, format!("unknown tag \":{tag}\" for \"{what}\""))
    }

    fn test(&self, t: RawTest) -> Result<Test, SieveError> {
        let RawTest { name, pos, args, tests, test_list } = t;
        let nested = |expected: usize, list: bool| -> Result<(), SieveError> {
            if list && !test_list && expected != 1 {
                return Err(SieveError::new(pos, format!("\"{name}\" needs a test list in parentheses")));
            }
            if !list && (tests.len() != expected || test_list) {
                let what = if expected == 0 { "takes no tests".to_string() } else { "takes exactly one test".into() };
                return Err(SieveError::new(pos, format!("\"{name}\" {what}")));
            }
            Ok(())
        };
        let mut a = Args::new(args, name.clone(), pos);
        let mut o = MatchOpts::default();
        let test = match name.as_str() {
            "true" | "false" => {
                nested(0, false)?;
                a.finish()?;
                if name == "true" { Test::True } else { Test::False }
            }
            "not" => {
                nested(1, false)?;
                a.finish()?;
                let inner = tests.into_iter().next().ok_or_else(|| SieveError::new(pos, "\"not\" needs a test"))?;
                return Ok(Test::Not(Box::new(self.test(inner)?)));
            }
            "allof" | "anyof" => {
                if !test_list {
                    return Err(SieveError::new(pos, format!("\"{name}\" needs a test list in parentheses")));
                }
                a.finish()?;
                let list = tests.into_iter().map(|t| self.test(t)).collect::<Result<Vec<_>, _>>()?;
                return Ok(if name == "allof" { Test::AllOf(list) } else { Test::AnyOf(list) });
            }
            "address" | "envelope" | "header" => {
                nested(0, false)?;
                if name == "envelope" {
                    self.need("envelope", pos, "test \"envelope\"")?;
                }
                let address = name != "header";
                while let Some((tag, tpos)) = a.tag()? {
                    if !self.match_tag(&tag, tpos, &mut a, &mut o, address)? {
                        return Err(Self::unknown_tag(&tag, tpos, &name));
                    }
                }
                let lpos = a.here();
                let headers =
                    a.string_list(if name == "envelope" { "the envelope parts" } else { "the header names" })?;
                if name != "envelope" {
                    check_header_names(&headers, lpos)?;
                }
                let keys = a.string_list("the key list")?;
                a.finish()?;
                let m = self.finish_match(&o, pos)?;
                let part = o.part.unwrap_or(AddressPart::All);
                match name.as_str() {
                    "address" => Test::Address { part, headers, keys, m },
                    "envelope" => {
                        for p in &headers {
                            if !p.contains("${") && !matches!(p.to_ascii_lowercase().as_str(), "from" | "to") {
                                return Err(SieveError::new(lpos, format!("unknown envelope part \"{p}\"")));
                            }
                        }
                        Test::Envelope { part, parts: headers, keys, m }
                    }
                    _ => Test::Header { headers, keys, m },
                }
            }
            "exists" | "mailboxexists" => {
                nested(0, false)?;
                if name == "mailboxexists" {
                    self.need("mailbox", pos, "test \"mailboxexists\"")?;
                }
                let lpos = a.here();
                let names = a.string_list(if name == "exists" { "the header names" } else { "the mailbox names" })?;
                a.finish()?;
                if name == "exists" {
                    check_header_names(&names, lpos)?;
                    Test::Exists(names)
                } else {
                    Test::MailboxExists(names)
                }
            }
            "size" => {
                nested(0, false)?;
                let over = match a.tag()? {
                    Some((t, _)) if t == "over" => true,
                    Some((t, _)) if t == "under" => false,
                    Some((t, p)) => return Err(Self::unknown_tag(&t, p, &name)),
                    None => return Err(SieveError::new(pos, "\"size\" needs :over or :under")),
                };
                let limit = a.number("the size limit")?;
                a.finish()?;
                Test::Size { over, limit }
            }
            "hasflag" | "string" | "body" | "spamtest" => {
                nested(0, false)?;
                let ext = match name.as_str() {
                    "hasflag" => "imap4flags",
                    "string" => "variables",
                    n => n,
                };
                self.need(ext, pos, &format!("test \"{name}\""))?;
                let mut transform = None;
                while let Some((tag, tpos)) = a.tag()? {
                    if self.match_tag(&tag, tpos, &mut a, &mut o, false)? {
                        continue;
                    }
                    let tr = match (name.as_str(), tag.as_str()) {
                        ("body", "raw") => BodyTransform::Raw,
                        ("body", "text") => BodyTransform::Text,
                        ("body", "content") => BodyTransform::Content(a.string_list("the content types")?),
                        _ => return Err(Self::unknown_tag(&tag, tpos, &name)),
                    };
                    if transform.replace(tr).is_some() {
                        return Err(SieveError::new(tpos, "more than one body transform"));
                    }
                }
                let m = self.finish_match(&o, pos)?;
                let test = match name.as_str() {
                    "hasflag" => {
                        let first = a.string_list("the flags")?;
                        if a.remaining() > 0 {
                            self.need("variables", pos, "a variable list in \"hasflag\"")?;
                            let keys = a.string_list("the flags")?;
                            Test::HasFlag { vars: Some(first), keys, m }
                        } else {
                            Test::HasFlag { vars: None, keys: first, m }
                        }
                    }
                    "string" => {
                        let sources = a.string_list("the source strings")?;
                        let keys = a.string_list("the key list")?;
                        Test::String { sources, keys, m }
                    }
                    "body" => {
                        let keys = a.string_list("the key list")?;
                        Test::Body { transform: transform.unwrap_or(BodyTransform::Text), keys, m }
                    }
                    _ => Test::Spam { value: a.string("the value")?, m },
                };
                a.finish()?;
                test
            }
            _ => return Err(SieveError::new(pos, format!("unknown test \"{name}\""))),
        };
        Ok(test)
    }

    fn commands(&self, cmds: Vec<RawCommand>, top: bool) -> Result<Vec<Command>, SieveError> {
        let mut out = Vec::new();
        let mut may_require = top;
        let mut may_elsif = false;
        for c in cmds {
            if c.name != "require" {
                may_require = false;
            }
            let is_chain = c.name == "elsif" || c.name == "else";
            if is_chain && !may_elsif {
                return Err(SieveError::new(c.pos, format!("\"{}\" without a preceding \"if\"", c.name)));
            }
            may_elsif = c.name == "if" || c.name == "elsif";
            match c.name.as_str() {
                "require" => {
                    if !may_require {
                        return Err(SieveError::new(c.pos, "\"require\" must come before any other command"));
                    }
                    // Already handled by `collect_requires`; only its form is checked here.
                    self.no_tests_or_block(&c)?;
                }
                "if" | "elsif" | "else" => {
                    let test = if c.name == "else" {
                        if !c.args.is_empty() || !c.tests.is_empty() {
                            return Err(SieveError::new(c.pos, "\"else\" takes no arguments or tests"));
                        }
                        None
                    } else {
                        if !c.args.is_empty() {
                            return Err(SieveError::new(
                                c.args[0].pos(),
                                format!("\"{}\" takes a test, not arguments", c.name),
                            ));
                        }
                        if c.tests.len() != 1 || c.test_list {
                            return Err(SieveError::new(c.pos, format!("\"{}\" needs exactly one test", c.name)));
                        }
                        c.tests.into_iter().next().map(|t| self.test(t)).transpose()?
                    };
                    let Some(block) = c.block else {
                        return Err(SieveError::new(c.pos, format!("\"{}\" needs a block", c.name)));
                    };
                    let block = self.commands(block, false)?;
                    match (c.name.as_str(), test) {
                        ("if", Some(t)) => out.push(Command::If { branches: vec![(t, block)], otherwise: None }),
                        (_, test) => {
                            if let Some(Command::If { branches, otherwise }) = out.last_mut() {
                                match test {
                                    Some(t) => branches.push((t, block)),
                                    None => *otherwise = Some(block),
                                }
                            }
                        }
                    }
                }
                _ => out.push(self.command(c)?),
            }
        }
        Ok(out)
    }

    /// Checks that an action command came without tests or a block.
    fn no_tests_or_block(&self, c: &RawCommand) -> Result<(), SieveError> {
        if !c.tests.is_empty() {
            return Err(SieveError::new(c.pos, format!("\"{}\" takes no tests", c.name)));
        }
        if c.block.is_some() {
            return Err(SieveError::new(c.pos, format!("\"{}\" takes no block", c.name)));
        }
        Ok(())
    }

    fn command(&self, c: RawCommand) -> Result<Command, SieveError> {
        let known = matches!(
            c.name.as_str(),
            "stop"
                | "keep"
                | "discard"
                | "fileinto"
                | "redirect"
                | "reject"
                | "ereject"
                | "setflag"
                | "addflag"
                | "removeflag"
                | "set"
                | "vacation"
        );
        if !known {
            return Err(SieveError::new(c.pos, format!("unknown command \"{}\"", c.name)));
        }
        self.no_tests_or_block(&c)?;
        let pos = c.pos;
        let name = c.name.clone();
        let mut a = Args::new(c.args, name.clone(), pos);
        let cmd = match name.as_str() {
            "stop" => Command::Stop,
            "discard" => Command::Discard,
            "keep" | "fileinto" | "redirect" => {
                if name == "fileinto" {
                    self.need("fileinto", pos, "command \"fileinto\"")?;
                }
                let (mut flags, mut create, mut copy) = (None, false, false);
                while let Some((tag, tpos)) = a.tag()? {
                    match tag.as_str() {
                        "flags" if name != "redirect" => {
                            self.need("imap4flags", tpos, "\":flags\"")?;
                            flags = Some(a.string_list("the flags")?);
                        }
                        "create" if name == "fileinto" => {
                            self.need("mailbox", tpos, "\":create\"")?;
                            create = true;
                        }
                        "copy" if name != "keep" => {
                            self.need("copy", tpos, "\":copy\"")?;
                            copy = true;
                        }
                        _ => return Err(Self::unknown_tag(&tag, tpos, &name)),
                    }
                }
                match name.as_str() {
                    "keep" => Command::Keep { flags },
                    "fileinto" => Command::FileInto { mailbox: a.string("the mailbox")?, flags, create, copy },
                    _ => {
                        let apos = a.here();
                        let address = a.string("the address")?;
                        if !address.contains("${") && !plausible_address(&address) {
                            return Err(SieveError::new(apos, format!("invalid redirect address \"{address}\"")));
                        }
                        Command::Redirect { address, copy }
                    }
                }
            }
            "reject" | "ereject" => {
                self.need(&name, pos, &format!("command \"{name}\""))?;
                Command::Reject { reason: a.string("the reason")?, extended: name == "ereject" }
            }
            "setflag" | "addflag" | "removeflag" => {
                self.need("imap4flags", pos, &format!("command \"{name}\""))?;
                let op = match name.as_str() {
                    "setflag" => FlagOp::Set,
                    "addflag" => FlagOp::Add,
                    _ => FlagOp::Remove,
                };
                let vpos = a.here();
                let first = a.string_list("the flags")?;
                if a.remaining() > 0 {
                    self.need("variables", vpos, "a variable name")?;
                    let var = match <[String; 1]>::try_from(first) {
                        Ok([v]) if is_identifier(&v) => v,
                        _ => return Err(SieveError::new(vpos, "invalid variable name")),
                    };
                    Command::Flags { op, var: Some(var.to_ascii_lowercase()), flags: a.string_list("the flags")? }
                } else {
                    Command::Flags { op, var: None, flags: first }
                }
            }
            "set" => {
                self.need("variables", pos, "command \"set\"")?;
                let mut modifiers: Vec<Modifier> = Vec::new();
                while let Some((tag, tpos)) = a.tag()? {
                    let m = match tag.as_str() {
                        "lower" => Modifier::Lower,
                        "upper" => Modifier::Upper,
                        "lowerfirst" => Modifier::LowerFirst,
                        "upperfirst" => Modifier::UpperFirst,
                        "quotewildcard" => Modifier::QuoteWildcard,
                        "length" => Modifier::Length,
                        _ => return Err(Self::unknown_tag(&tag, tpos, &name)),
                    };
                    if modifiers.iter().any(|x| x.precedence() == m.precedence()) {
                        return Err(SieveError::new(tpos, format!("\":{tag}\" conflicts with another modifier")));
                    }
                    modifiers.push(m);
                }
                modifiers.sort_by_key(|m| std::cmp::Reverse(m.precedence()));
                let npos = a.here();
                let vname = a.string("the variable name")?;
                if !is_identifier(&vname) {
                    return Err(SieveError::new(npos, format!("invalid variable name \"{vname}\"")));
                }
                Command::Set { name: vname.to_ascii_lowercase(), value: a.string("the value")?, modifiers }
            }
            _ => {
                self.need("vacation", pos, "command \"vacation\"")?;
                let mut v = VacationArgs {
                    days: None,
                    subject: None,
                    from: None,
                    addresses: Vec::new(),
                    mime: false,
                    handle: None,
                    reason: String::new(),
                };
                while let Some((tag, tpos)) = a.tag()? {
                    match tag.as_str() {
                        "days" => v.days = Some(a.number("the days")?),
                        "subject" => v.subject = Some(a.string("the subject")?),
                        "from" => v.from = Some(a.string("the from address")?),
                        "addresses" => v.addresses = a.string_list("the addresses")?,
                        "mime" => v.mime = true,
                        "handle" => v.handle = Some(a.string("the handle")?),
                        _ => return Err(Self::unknown_tag(&tag, tpos, &name)),
                    }
                }
                v.reason = a.string("the reason")?;
                Command::Vacation(Box::new(v))
            }
        };
        a.finish()?;
        Ok(cmd)
    }
}

/// Refuses header names that no header can have (RFC 5322 §3.6.8: printable ASCII but ":").
/// Names built from variables are checked only when run (they then match nothing).
fn check_header_names(names: &[String], pos: Pos) -> Result<(), SieveError> {
    for n in names {
        if n.contains("${") {
            continue;
        }
        if n.is_empty() || !n.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(SieveError::new(pos, format!("invalid header name \"{n}\"")));
        }
    }
    Ok(())
}

/// Whether `s` looks enough like an RFC 5321 mailbox to send mail to.
pub(crate) fn plausible_address(s: &str) -> bool {
    let s = s.trim();
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s.chars().any(|c| c.is_control() || c == ' ' || c == '<' || c == '>' || c == ',')
        }
        None => false,
    }
}

/// Reads the `require` commands at the head of the script and checks each named extension is known.
fn collect_requires(cmds: &[RawCommand]) -> Result<HashSet<String>, SieveError> {
    let mut exts = HashSet::new();
    for c in cmds.iter().take_while(|c| c.name == "require") {
        let mut a = Args::new(c.args.clone(), c.name.clone(), c.pos);
        let apos = a.here();
        let names = a.string_list("the extension names")?;
        a.finish()?;
        for n in names {
            let n = n.to_ascii_lowercase();
            if !EXTENSIONS.contains(&n.as_str()) {
                return Err(SieveError::new(apos, format!("unsupported extension \"{n}\"")));
            }
            exts.insert(n);
        }
    }
    Ok(exts)
}

/// Checks the parse tree and returns the typed commands and the extensions required.
pub(crate) fn validate(cmds: Vec<RawCommand>) -> Result<(Vec<Command>, HashSet<String>), SieveError> {
    let exts = collect_requires(&cmds)?;
    let v = Validator { exts };
    let out = v.commands(cmds, true)?;
    Ok((out, v.exts))
}
