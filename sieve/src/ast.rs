//! A checked script: every command and test with its arguments in typed form.

/// How strings are compared (RFC 4790 collations named in RFC 5228 §2.7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparator {
    Octet,
    AsciiCasemap,
    AsciiNumeric,
}

/// A relational operator (RFC 5231).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// How a value is matched against the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchKind {
    Is,
    Contains,
    Matches,
    Value(Relation),
    Count(Relation),
}

/// A match type together with its comparator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Match {
    pub kind: MatchKind,
    pub comparator: Comparator,
}

/// Which part of an address is compared (RFC 5228 §2.7.4, RFC 5233).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressPart {
    All,
    LocalPart,
    Domain,
    User,
    Detail,
}

/// What a `body` test looks at (RFC 5173).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyTransform {
    Raw,
    Text,
    Content(Vec<String>),
}

/// A `set` modifier (RFC 5229 §4.1), in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Modifier {
    Lower,
    Upper,
    LowerFirst,
    UpperFirst,
    QuoteWildcard,
    Length,
}

impl Modifier {
    pub fn precedence(self) -> u8 {
        match self {
            Modifier::Lower | Modifier::Upper => 40,
            Modifier::LowerFirst | Modifier::UpperFirst => 30,
            Modifier::QuoteWildcard => 20,
            Modifier::Length => 10,
        }
    }
}

/// Which imap4flags command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagOp {
    Set,
    Add,
    Remove,
}

/// A test.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    True,
    False,
    Not(Box<Test>),
    AllOf(Vec<Test>),
    AnyOf(Vec<Test>),
    Address { part: AddressPart, headers: Vec<String>, keys: Vec<String>, m: Match },
    Envelope { part: AddressPart, parts: Vec<String>, keys: Vec<String>, m: Match },
    Header { headers: Vec<String>, keys: Vec<String>, m: Match },
    Exists(Vec<String>),
    MailboxExists(Vec<String>),
    Size { over: bool, limit: u64 },
    HasFlag { vars: Option<Vec<String>>, keys: Vec<String>, m: Match },
    Body { transform: BodyTransform, keys: Vec<String>, m: Match },
    String { sources: Vec<String>, keys: Vec<String>, m: Match },
    Spam { value: String, m: Match },
}

/// A `vacation` command's arguments (RFC 5230 §4).
#[derive(Debug, Clone)]
pub(crate) struct VacationArgs {
    pub days: Option<u64>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub addresses: Vec<String>,
    pub mime: bool,
    pub handle: Option<String>,
    pub reason: String,
}

/// A command.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    If { branches: Vec<(Test, Vec<Command>)>, otherwise: Option<Vec<Command>> },
    Stop,
    Keep { flags: Option<Vec<String>> },
    Discard,
    FileInto { mailbox: String, flags: Option<Vec<String>>, create: bool, copy: bool },
    Redirect { address: String, copy: bool },
    Reject { reason: String, extended: bool },
    Flags { op: FlagOp, var: Option<String>, flags: Vec<String> },
    Set { name: String, value: String, modifiers: Vec<Modifier> },
    Vacation(Box<VacationArgs>),
}
