//! ManageSieve (RFC 5804): users upload, check, list and activate their Sieve scripts. The
//! scripts are kept as the user's files on their home (see [`crate::sieve::scripts`]), so
//! every node's delivery finds them and they replicate and fail over with the mail.

pub mod command;
pub mod connection;
pub mod reply;
pub mod session;

pub use connection::SieveService;
pub use session::{Action, Next, Outcome, Session, SessionConfig};
