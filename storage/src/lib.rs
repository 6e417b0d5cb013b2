//! The SIRMS mail store.
//!
//! [`MailStore`] is the one interface protocol code uses. [`LocalStore`] keeps mail in
//! Maildir (the truth) with a sled index beside it; [`grpc::StoreService`] exports any
//! `MailStore` over gRPC and [`RemoteStore`] is a `MailStore` that talks to it — together
//! they replace the NFS of the original system. [`MemoryStore`] keeps mail in memory, for
//! tests and fuzzing.

pub mod append_all;
pub mod change;
pub mod durable;
pub mod error;
pub mod flags;
pub mod grpc;
pub mod local;
pub mod mailbox;
pub mod maildrop;
pub mod measured;
pub mod memory;
pub mod message;
pub mod replica;
pub mod role;
pub mod store;
pub mod uidset;
pub mod user_file;

pub use append_all::append_all;
pub use change::{Change, ChangeStream};
pub use error::{QuotaResource, Result, StoreError};
pub use flags::{FlagOp, Flags, SystemFlags};
pub use grpc::{RemoteStore, StoreService};
pub use local::LocalStore;
pub use mailbox::{MailboxInfo, MailboxStatus, SpecialUse};
pub use maildrop::{MaildropLock, MaildropLocks};
pub use measured::{Measured, StoreMetrics};
pub use memory::MemoryStore;
pub use message::{
    AppendResult, BodyPart, Cached, CopyResult, FetchedMessage, MAX_CACHED_SIZE, MessageMeta, NewMessage, QuotaUsage,
};
pub use replica::{Apply, ReplicaStore};
pub use store::MailStore;
pub use uidset::UidSet;
pub use user_file::UserFile;
