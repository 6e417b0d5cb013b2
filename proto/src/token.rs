//! The cluster token: every internal gRPC call carries it, every server checks it.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::TOKEN_HEADER;

/// Whether `request` carries `token`. The comparison has no early exit, so response
/// times do not reveal how much of a guessed token was right (the length is not secret).
pub fn presented<T>(request: &Request<T>, token: &str) -> bool {
    match request.metadata().get(TOKEN_HEADER) {
        Some(given) => same(given.as_bytes(), token.as_bytes()),
        None => false,
    }
}

/// Whether `given` is `token`, compared without an early exit (as [`presented`]); for a token
/// presented some other way (the status page's Basic credential).
pub fn same(given: &[u8], token: &[u8]) -> bool {
    let difference = given.iter().zip(token).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    given.len() == token.len() && std::hint::black_box(difference) == 0
}

/// Attaches the cluster token to every request of a client.
#[derive(Clone)]
pub struct TokenInterceptor(MetadataValue<Ascii>);

impl TokenInterceptor {
    /// An interceptor for `token`; `None` if the token is not a valid metadata value.
    pub fn new(token: &str) -> Option<TokenInterceptor> {
        MetadataValue::try_from(token).ok().map(TokenInterceptor)
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(TOKEN_HEADER, self.0.clone());
        Ok(request)
    }
}
