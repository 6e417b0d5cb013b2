//! The Store gRPC service (server side) and `RemoteStore` (a `MailStore` over it).

use std::time::Duration;

mod apply_batch;
pub mod body;
mod convert;
pub mod fail_fast;
mod idempotency;
mod remote;
mod server;

pub use remote::RemoteStore;
pub use server::StoreService;

/// Most message bytes in one streamed chunk: small enough that a big message does not
/// hold up the other calls sharing the HTTP/2 connection.
const CHUNK_SIZE: usize = 64 * 1024;

/// Largest single gRPC message either side accepts. Bodies travel in chunks, so what can
/// get big is a listing: the metadata of every message of a very large mailbox.
const MAX_GRPC_MESSAGE: usize = 128 * 1024 * 1024;

/// How often an idle connection is pinged, so a vanished peer ends its watch streams.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A tonic server set up as every internal SIRMS endpoint is (keepalive pings), for callers
/// that serve more services next to the Store.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder().http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
}
