//! Conversions between the wire types of `sirms_proto::store` and the storage types, and
//! the one mapping between `StoreError` and `tonic::Status`.

use std::io;

use sirms_proto::store as proto;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::change::Change;
use crate::error::{QuotaResource, Result, StoreError};
use crate::flags::{FlagOp, Flags, SystemFlags};
use crate::mailbox::{MailboxInfo, MailboxStatus, SpecialUse};
use crate::message::{AppendResult, BodyPart, CopyResult, MessageMeta, QuotaUsage};
use crate::replica::Apply;
use crate::uidset::UidSet;

impl From<Flags> for proto::Flags {
    fn from(flags: Flags) -> Self {
        proto::Flags { system: flags.system.bits(), keywords: flags.keywords }
    }
}

impl From<proto::Flags> for Flags {
    fn from(flags: proto::Flags) -> Self {
        // `Flags::new` restores the sorted, de-duplicated keyword order the store relies on.
        Flags::new(SystemFlags::from_bits(flags.system), flags.keywords)
    }
}

/// Flags from an optional wire field; absent means no flags, as proto3 defaults do.
pub(super) fn flags(flags: Option<proto::Flags>) -> Flags {
    flags.map(Flags::from).unwrap_or_default()
}

impl From<&UidSet> for proto::UidSet {
    fn from(set: &UidSet) -> Self {
        let ranges = set.ranges().iter().map(|&(first, last)| proto::UidRange { first, last }).collect();
        proto::UidSet { ranges }
    }
}

impl From<proto::UidSet> for UidSet {
    fn from(set: proto::UidSet) -> Self {
        UidSet::from_ranges(set.ranges.into_iter().map(|r| (r.first, r.last)))
    }
}

/// A UID set from an optional wire field; absent means the empty set.
pub(super) fn uid_set(set: Option<proto::UidSet>) -> UidSet {
    set.map(UidSet::from).unwrap_or_default()
}

impl From<MessageMeta> for proto::MessageMeta {
    fn from(meta: MessageMeta) -> Self {
        proto::MessageMeta {
            uid: meta.uid,
            flags: Some(meta.flags.into()),
            internal_date: meta.internal_date,
            size: meta.size,
            modseq: meta.modseq,
        }
    }
}

impl From<proto::MessageMeta> for MessageMeta {
    fn from(meta: proto::MessageMeta) -> Self {
        MessageMeta {
            uid: meta.uid,
            flags: flags(meta.flags),
            internal_date: meta.internal_date,
            size: meta.size,
            modseq: meta.modseq,
        }
    }
}

impl From<MailboxStatus> for proto::MailboxStatus {
    fn from(status: MailboxStatus) -> Self {
        proto::MailboxStatus {
            messages: status.messages,
            unseen: status.unseen,
            recent: status.recent,
            uid_next: status.uid_next,
            uid_validity: status.uid_validity,
            highest_modseq: status.highest_modseq,
            size: status.size,
        }
    }
}

impl From<proto::MailboxStatus> for MailboxStatus {
    fn from(status: proto::MailboxStatus) -> Self {
        MailboxStatus {
            messages: status.messages,
            unseen: status.unseen,
            recent: status.recent,
            uid_next: status.uid_next,
            uid_validity: status.uid_validity,
            highest_modseq: status.highest_modseq,
            size: status.size,
        }
    }
}

impl From<MailboxInfo> for proto::MailboxInfo {
    fn from(info: MailboxInfo) -> Self {
        proto::MailboxInfo {
            name: info.name,
            special_use: special_use_to_proto(info.special_use),
            subscribed: info.subscribed,
            has_children: info.has_children,
        }
    }
}

impl From<proto::MailboxInfo> for MailboxInfo {
    fn from(info: proto::MailboxInfo) -> Self {
        MailboxInfo {
            name: info.name,
            special_use: special_use_from_proto(info.special_use),
            subscribed: info.subscribed,
            has_children: info.has_children,
        }
    }
}

/// The wire form of an optional special use.
pub(super) fn special_use_to_proto(special_use: Option<SpecialUse>) -> i32 {
    let wire = match special_use {
        None => proto::SpecialUse::None,
        Some(SpecialUse::Sent) => proto::SpecialUse::Sent,
        Some(SpecialUse::Drafts) => proto::SpecialUse::Drafts,
        Some(SpecialUse::Trash) => proto::SpecialUse::Trash,
        Some(SpecialUse::Junk) => proto::SpecialUse::Junk,
        Some(SpecialUse::Archive) => proto::SpecialUse::Archive,
        Some(SpecialUse::All) => proto::SpecialUse::All,
        Some(SpecialUse::Flagged) => proto::SpecialUse::Flagged,
    };
    wire.into()
}

/// A special use from the wire; a value this build does not know is an attribute it cannot
/// show anyway, so it reads as none rather than failing the call.
pub(super) fn special_use_from_proto(value: i32) -> Option<SpecialUse> {
    match proto::SpecialUse::try_from(value).ok()? {
        proto::SpecialUse::None => None,
        proto::SpecialUse::Sent => Some(SpecialUse::Sent),
        proto::SpecialUse::Drafts => Some(SpecialUse::Drafts),
        proto::SpecialUse::Trash => Some(SpecialUse::Trash),
        proto::SpecialUse::Junk => Some(SpecialUse::Junk),
        proto::SpecialUse::Archive => Some(SpecialUse::Archive),
        proto::SpecialUse::All => Some(SpecialUse::All),
        proto::SpecialUse::Flagged => Some(SpecialUse::Flagged),
    }
}

impl From<FlagOp> for proto::FlagOp {
    fn from(op: FlagOp) -> Self {
        match op {
            FlagOp::Set => proto::FlagOp::Set,
            FlagOp::Add => proto::FlagOp::Add,
            FlagOp::Remove => proto::FlagOp::Remove,
        }
    }
}

/// A flag operation from the wire; unlike special uses an unknown one is an error, since
/// guessing could wipe flags.
pub(super) fn flag_op_from_proto(value: i32) -> Result<FlagOp> {
    Ok(match known_enum(value, "flag operation")? {
        proto::FlagOp::Set => FlagOp::Set,
        proto::FlagOp::Add => FlagOp::Add,
        proto::FlagOp::Remove => FlagOp::Remove,
    })
}

/// The body selector fields of a `FetchRequest`: kind, offset and length.
pub(super) fn body_part_to_proto(body: BodyPart) -> (i32, u64, u64) {
    let (kind, offset, length) = match body {
        BodyPart::None => (proto::BodyKind::BodyNone, 0, 0),
        BodyPart::Full => (proto::BodyKind::BodyFull, 0, 0),
        BodyPart::Range { offset, length } => (proto::BodyKind::BodyRange, offset, length),
    };
    (kind.into(), offset, length)
}

/// The body selector of a `FetchRequest`.
pub(super) fn body_part_from_proto(request: &proto::FetchRequest) -> Result<BodyPart> {
    Ok(match known_enum(request.body, "body kind")? {
        proto::BodyKind::BodyNone => BodyPart::None,
        proto::BodyKind::BodyFull => BodyPart::Full,
        proto::BodyKind::BodyRange => BodyPart::Range { offset: request.offset, length: request.length },
    })
}

/// A wire enum value this build must understand to carry out the call.
fn known_enum<E: TryFrom<i32>>(value: i32, what: &str) -> Result<E> {
    E::try_from(value).map_err(|_| StoreError::Protocol(format!("unknown {what} {value}")))
}

impl From<AppendResult> for proto::AppendReply {
    fn from(result: AppendResult) -> Self {
        proto::AppendReply {
            uid_validity: result.uid_validity,
            uid: result.uid,
            modseq: result.modseq,
            internal_date: result.internal_date,
        }
    }
}

impl From<proto::AppendReply> for AppendResult {
    fn from(reply: proto::AppendReply) -> Self {
        AppendResult {
            uid_validity: reply.uid_validity,
            uid: reply.uid,
            modseq: reply.modseq,
            internal_date: reply.internal_date,
        }
    }
}

impl From<CopyResult> for proto::CopyReply {
    fn from(result: CopyResult) -> Self {
        let pairs = result.pairs.into_iter().map(|(source, dest)| proto::UidPair { source, dest }).collect();
        proto::CopyReply { uid_validity: result.uid_validity, pairs }
    }
}

impl From<proto::CopyReply> for CopyResult {
    fn from(reply: proto::CopyReply) -> Self {
        let pairs = reply.pairs.into_iter().map(|pair| (pair.source, pair.dest)).collect();
        CopyResult { uid_validity: reply.uid_validity, pairs }
    }
}

impl From<QuotaUsage> for proto::QuotaUsage {
    fn from(usage: QuotaUsage) -> Self {
        proto::QuotaUsage { bytes: usage.bytes, messages: usage.messages }
    }
}

impl From<proto::QuotaUsage> for QuotaUsage {
    fn from(usage: proto::QuotaUsage) -> Self {
        QuotaUsage { bytes: usage.bytes, messages: usage.messages }
    }
}

/// The wire form of a replication record.
pub(super) fn apply_to_proto(user: &str, epoch: u64, record: Apply) -> proto::ApplyRequest {
    use proto::apply_request::Record;
    let metas = |metas: Vec<MessageMeta>| metas.into_iter().map(Into::into).collect();
    let record = match record {
        Apply::Mailbox { name, uid_validity, special_use } => {
            Record::Mailbox(proto::ApplyMailbox { name, uid_validity, special_use: special_use_to_proto(special_use) })
        }
        Apply::Delete { name } => Record::Delete(proto::ApplyDelete { name }),
        Apply::Rename { from, to } => Record::Rename(proto::ApplyRename { from, to }),
        Apply::Subscribe { name, subscribed } => Record::Subscribe(proto::ApplySubscribe { name, subscribed }),
        Apply::UserFile { name, content } => Record::UserFile(proto::UserFile {
            user: String::new(),
            name,
            present: content.is_some(),
            content: content.unwrap_or_default(),
        }),
        Apply::Append { mailbox, uid_validity, meta, bytes } => {
            Record::Append(proto::ApplyAppend { mailbox, uid_validity, meta: Some(meta.into()), data: bytes })
        }
        Apply::Copy { from, to, uid_validity, pairs } => Record::Copy(proto::ApplyCopy {
            from,
            to,
            uid_validity,
            messages: pairs
                .into_iter()
                .map(|(source, meta)| proto::CopiedMessage { source, meta: Some(meta.into()) })
                .collect(),
        }),
        Apply::Flags { mailbox, uid_validity, metas: list, exact } => {
            Record::Flags(proto::ApplyFlags { mailbox, uid_validity, messages: metas(list), exact })
        }
        Apply::Expunge { mailbox, uid_validity, uids } => {
            Record::Expunge(proto::ApplyExpunge { mailbox, uid_validity, uids })
        }
        Apply::Counters { mailbox, uid_validity, uid_next, highest_modseq } => {
            Record::Counters(proto::ApplyCounters { mailbox, uid_validity, uid_next, highest_modseq })
        }
    };
    proto::ApplyRequest { user: user.to_string(), epoch, record: Some(record) }
}

/// A replication record from the wire.
pub(super) fn apply_from_proto(record: Option<proto::apply_request::Record>) -> Result<Apply> {
    use proto::apply_request::Record;
    let meta = |m: Option<proto::MessageMeta>| required(m, "message metadata").map(MessageMeta::from);
    Ok(match required(record, "replication record")? {
        Record::Mailbox(m) => Apply::Mailbox {
            name: m.name,
            uid_validity: m.uid_validity,
            special_use: special_use_from_proto(m.special_use),
        },
        Record::Delete(d) => Apply::Delete { name: d.name },
        Record::Rename(r) => Apply::Rename { from: r.from, to: r.to },
        Record::Subscribe(s) => Apply::Subscribe { name: s.name, subscribed: s.subscribed },
        Record::UserFile(f) => Apply::UserFile { name: f.name, content: f.present.then_some(f.content) },
        Record::Append(a) => {
            Apply::Append { mailbox: a.mailbox, uid_validity: a.uid_validity, meta: meta(a.meta)?, bytes: a.data }
        }
        Record::Copy(c) => Apply::Copy {
            from: c.from,
            to: c.to,
            uid_validity: c.uid_validity,
            pairs: c.messages.into_iter().map(|m| Ok((m.source, meta(m.meta)?))).collect::<Result<_>>()?,
        },
        Record::Flags(f) => Apply::Flags {
            mailbox: f.mailbox,
            uid_validity: f.uid_validity,
            metas: f.messages.into_iter().map(Into::into).collect(),
            exact: f.exact,
        },
        Record::Expunge(e) => Apply::Expunge { mailbox: e.mailbox, uid_validity: e.uid_validity, uids: e.uids },
        Record::Counters(c) => Apply::Counters {
            mailbox: c.mailbox,
            uid_validity: c.uid_validity,
            uid_next: c.uid_next,
            highest_modseq: c.highest_modseq,
        },
    })
}

/// The wire form of a change, or `None` for `Lagged`, which has none: the server ends the
/// stream with an error instead and the client turns that back into `Lagged`.
pub(super) fn change_to_proto(change: Change) -> Option<proto::Change> {
    use proto::change::Kind;
    let kind = match change {
        Change::Appended(meta) => Kind::Appended(meta.into()),
        Change::FlagsChanged(meta) => Kind::FlagsChanged(meta.into()),
        Change::Expunged(uids) => Kind::Expunged(proto::UidList { uids }),
        Change::MailboxGone => Kind::MailboxGone(proto::Empty {}),
        Change::Lagged => return None,
    };
    Some(proto::Change { kind: Some(kind) })
}

impl TryFrom<proto::Change> for Change {
    type Error = StoreError;

    fn try_from(change: proto::Change) -> Result<Self> {
        use proto::change::Kind;
        Ok(match required(change.kind, "change kind")? {
            Kind::Appended(meta) => Change::Appended(meta.into()),
            Kind::FlagsChanged(meta) => Change::FlagsChanged(meta.into()),
            Kind::Expunged(list) => Change::Expunged(list.uids),
            Kind::MailboxGone(proto::Empty {}) => Change::MailboxGone,
        })
    }
}

/// A wire field the receiver cannot do without.
pub(super) fn required<T>(field: Option<T>, name: &str) -> Result<T> {
    field.ok_or_else(|| StoreError::Protocol(format!("missing {name}")))
}

/// Metadata entry that names the `StoreError` variant behind an error status, so that the
/// client rebuilds the same variant instead of guessing from the status code.
const ERROR_KIND_KEY: &str = "x-sirms-error";

/// Every reason the store gives `InvalidName`, so the client gets the same `&'static str`.
const INVALID_NAME_REASONS: &[&str] = &[
    "empty",
    "too long",
    "control character",
    "too deep",
    "empty hierarchy level",
    "'.' or '..' level",
    "cannot move a mailbox into itself",
];

/// What the client reports for an `InvalidName` reason missing from the list above
/// (a newer server).
const UNKNOWN_INVALID_NAME: &str = "rejected by the store";

/// A `StoreError` as it crosses the wire: the variant's name (the `x-sirms-error` metadata, or
/// an `ApplyOutcome`'s kind), the status code, and the message that carries its payload.
pub(super) fn error_parts(error: StoreError) -> (&'static str, Code, String) {
    let (kind, code) = match &error {
        StoreError::NoSuchMailbox => ("NoSuchMailbox", Code::NotFound),
        StoreError::MailboxExists => ("MailboxExists", Code::AlreadyExists),
        StoreError::InvalidName(_) => ("InvalidName", Code::InvalidArgument),
        StoreError::InvalidUser => ("InvalidUser", Code::InvalidArgument),
        StoreError::CannotDeleteInbox => ("CannotDeleteInbox", Code::FailedPrecondition),
        StoreError::HasChildren => ("HasChildren", Code::FailedPrecondition),
        StoreError::TooManyKeywords => ("TooManyKeywords", Code::FailedPrecondition),
        StoreError::TooManyMailboxes => ("TooManyMailboxes", Code::ResourceExhausted),
        StoreError::TooManyFiles => ("TooManyFiles", Code::ResourceExhausted),
        StoreError::OverQuota { .. } => ("OverQuota", Code::ResourceExhausted),
        StoreError::InvalidKeyword => ("InvalidKeyword", Code::InvalidArgument),
        StoreError::TooLarge => ("TooLarge", Code::InvalidArgument),
        StoreError::SizeMismatch => ("SizeMismatch", Code::InvalidArgument),
        StoreError::Unavailable(_) => ("Unavailable", Code::Unavailable),
        StoreError::Unauthorized => ("Unauthorized", Code::Unauthenticated),
        StoreError::Io(_) => ("Io", Code::Internal),
        StoreError::Index(_) => ("Index", Code::Internal),
        StoreError::Protocol(_) => ("Protocol", Code::Internal),
        StoreError::StaleEpoch(_) => ("StaleEpoch", Code::FailedPrecondition),
        StoreError::Diverged(_) => ("Diverged", Code::FailedPrecondition),
    };
    // Variants with a payload send only the payload, which the client puts back in place.
    let message = match error {
        StoreError::InvalidName(reason) => reason.to_owned(),
        StoreError::Unavailable(text)
        | StoreError::Index(text)
        | StoreError::Protocol(text)
        | StoreError::Diverged(text) => text,
        StoreError::StaleEpoch(epoch) => epoch.to_string(),
        StoreError::OverQuota { used, limit, resource } => format!("{used} {limit} {resource}"),
        StoreError::Io(e) => e.to_string(),
        other => other.to_string(),
    };
    (kind, code, message)
}

/// The `StoreError` that [`error_parts`] gave `kind` and `message`; `None` for a kind this
/// side does not know.
pub(super) fn error_from_parts(kind: &str, message: &str) -> Option<StoreError> {
    Some(match kind {
        "NoSuchMailbox" => StoreError::NoSuchMailbox,
        "MailboxExists" => StoreError::MailboxExists,
        "InvalidName" => StoreError::InvalidName(invalid_name_reason(message)),
        "InvalidUser" => StoreError::InvalidUser,
        "CannotDeleteInbox" => StoreError::CannotDeleteInbox,
        "HasChildren" => StoreError::HasChildren,
        "TooManyKeywords" => StoreError::TooManyKeywords,
        "TooManyMailboxes" => StoreError::TooManyMailboxes,
        "TooManyFiles" => StoreError::TooManyFiles,
        "OverQuota" => {
            let mut words = message.split(' ');
            let mut number = || words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let (used, limit) = (number(), number());
            let resource = match words.collect::<Vec<_>>().join(" ").as_str() {
                "messages" => QuotaResource::Messages,
                "domain bytes" => QuotaResource::DomainBytes,
                "domain messages" => QuotaResource::DomainMessages,
                _ => QuotaResource::Bytes,
            };
            StoreError::OverQuota { used, limit, resource }
        }
        "InvalidKeyword" => StoreError::InvalidKeyword,
        "TooLarge" => StoreError::TooLarge,
        "SizeMismatch" => StoreError::SizeMismatch,
        "Unavailable" => StoreError::Unavailable(message.to_owned()),
        "Unauthorized" => StoreError::Unauthorized,
        "Io" => StoreError::Io(io::Error::other(message.to_owned())),
        "Index" => StoreError::Index(message.to_owned()),
        "Protocol" => StoreError::Protocol(message.to_owned()),
        "StaleEpoch" => StoreError::StaleEpoch(message.parse().unwrap_or(u64::MAX)),
        "Diverged" => StoreError::Diverged(message.to_owned()),
        _ => return None,
    })
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        let (kind, code, message) = error_parts(error);
        let mut status = Status::new(code, message);
        status.metadata_mut().insert(ERROR_KIND_KEY, MetadataValue::from_static(kind));
        status
    }
}

impl From<Status> for StoreError {
    fn from(status: Status) -> Self {
        let kind = status.metadata().get(ERROR_KIND_KEY).and_then(|kind| kind.to_str().ok());
        kind.and_then(|kind| error_from_parts(kind, status.message())).unwrap_or_else(|| untagged_status(&status))
    }
}

/// A batch outcome as the `StoreError` it carries (`Ok` when it carries none).
pub(super) fn apply_outcome(outcome: proto::ApplyOutcome) -> Result<()> {
    if outcome.error_kind.is_empty() {
        return Ok(());
    }
    Err(error_from_parts(&outcome.error_kind, &outcome.message).unwrap_or_else(|| {
        StoreError::Protocol(format!("unknown error kind {:?}: {}", outcome.error_kind, outcome.message))
    }))
}

/// A record's result as a batch outcome.
pub(super) fn apply_outcome_to_proto(result: Result<()>) -> proto::ApplyOutcome {
    match result {
        Ok(()) => proto::ApplyOutcome::default(),
        Err(e) => {
            let (kind, _, message) = error_parts(e);
            proto::ApplyOutcome { error_kind: kind.to_owned(), message }
        }
    }
}

/// Whether `status` is a Store handler's answer, not the transport's or tonic's own failure
/// (a broken connection, a deadline): only an answer says for sure what became of a call.
pub fn answered(status: &Status) -> bool {
    status.metadata().get(ERROR_KIND_KEY).is_some()
}

/// The `&'static str` the server's `InvalidName` carried.
fn invalid_name_reason(message: &str) -> &'static str {
    INVALID_NAME_REASONS.iter().copied().find(|&reason| reason == message).unwrap_or(UNKNOWN_INVALID_NAME)
}

/// An error that no Store handler produced: from the transport or from tonic itself.
fn untagged_status(status: &Status) -> StoreError {
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // tonic's own encoding and routing failures: the two sides disagree on the protocol.
        Code::Internal
        | Code::Unimplemented
        | Code::InvalidArgument
        | Code::OutOfRange
        | Code::ResourceExhausted
        | Code::DataLoss => StoreError::Protocol(text),
        _ => StoreError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quota_resource_crosses_the_wire() {
        let resources =
            [QuotaResource::Bytes, QuotaResource::Messages, QuotaResource::DomainBytes, QuotaResource::DomainMessages];
        for resource in resources {
            let (kind, _, message) = error_parts(StoreError::OverQuota { used: 7, limit: 5, resource });
            match error_from_parts(kind, &message) {
                Some(StoreError::OverQuota { used: 7, limit: 5, resource: back }) => assert_eq!(back, resource),
                other => panic!("{resource}: came back as {other:?}"),
            }
        }
    }
}
