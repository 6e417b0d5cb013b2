//! What every listener shares: the stream that may turn into TLS, the PROXY header from the
//! router, and the accept loop with its limits. TLS setup (certificates, SNI, reloads) is
//! `sirms_proto::public_tls`, shared with the router's autoconfiguration listener.

pub mod listener;
pub mod scratch_read;
pub mod stream;
pub mod write_buffer;
