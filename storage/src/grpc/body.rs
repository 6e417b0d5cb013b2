//! Message bytes on a gRPC stream: cut into chunks by the sender, put together by the receiver
//! within the size the header announced. Every streamed body (Store appends and fetches, the
//! nodes' Import calls) goes through here.

use bytes::Bytes;
use tonic::{Status, Streaming};

use super::CHUNK_SIZE;
use crate::error::StoreError;
use crate::message::MAX_MESSAGE_SIZE;

/// The most a receiver reserves for a body before the bytes arrive.
const PREALLOCATE_AT_MOST: usize = 1024 * 1024;

/// Splits message bytes into data chunks of at most `CHUNK_SIZE`. An empty message is one
/// empty chunk, so that a fetched empty body stays distinguishable from no body.
pub fn chunks(bytes: Bytes) -> impl Iterator<Item = Bytes> + Send + 'static {
    let count = bytes.len().div_ceil(CHUNK_SIZE).max(1);
    // Slices of one reference-counted buffer: no copy per chunk.
    (0..count).map(move |i| {
        let start = i * CHUNK_SIZE;
        bytes.slice(start..bytes.len().min(start + CHUNK_SIZE))
    })
}

/// The body that follows a header on `stream`: exactly `announced` bytes, taken from each
/// message by `data` (`None`: the message is not body data, a protocol error).
pub async fn receive<T>(
    stream: &mut Streaming<T>,
    announced: u64,
    data: fn(T) -> Option<Bytes>,
) -> Result<Bytes, Status> {
    if announced > MAX_MESSAGE_SIZE {
        return Err(StoreError::TooLarge.into());
    }
    let announced = usize::try_from(announced).map_err(|_| StoreError::TooLarge)?;
    // The announced size is a peer's word: room for it is reserved only as far as a typical
    // message, and beyond that the buffer grows with the bytes that actually arrive, so a
    // peer announcing large messages and sending nothing holds no memory for them.
    let mut body = Vec::with_capacity(announced.min(PREALLOCATE_AT_MOST));
    while let Some(message) = stream.message().await? {
        match data(message) {
            Some(chunk) if chunk.len() <= announced - body.len() => body.extend_from_slice(&chunk),
            Some(_) => return Err(StoreError::SizeMismatch.into()),
            None => return Err(StoreError::Protocol("expected message data after the header".into()).into()),
        }
    }
    if body.len() != announced {
        return Err(StoreError::SizeMismatch.into());
    }
    Ok(body.into())
}
