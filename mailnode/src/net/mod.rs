//! What every listener shares: the stream that may turn into TLS, TLS setup, the PROXY
//! header from the router, and the accept loop with its limits.

pub mod listener;
pub mod stream;
pub mod tls;
