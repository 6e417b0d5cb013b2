//! Replica appends to one peer, sent in batches: while [`IN_FLIGHT`] calls are out, the
//! appends of other writers wait and then go together in the next call — one HTTP/2 exchange
//! and one task on the replica for all of them, where each used to cost its own. A lone append
//! goes at once, as a batch of one. Two calls, not one, may be out at a time, so the replica
//! is preparing the next batch's files while it commits the last: with one, its committer
//! would sit idle for every round trip.
//!
//! Only small appends are batched, the hot path of delivery. Other records (a copy of many
//! messages, a mailbox emptied and made again) may take a while on the replica, and an
//! append batched behind one would wait for it; they keep a call of their own.

use std::sync::{Arc, Mutex};

use sirms_proto::store::{self as proto, apply_request};
use tokio::sync::oneshot;
use tonic::Code;

use super::convert;
use super::remote::Client;
use crate::error::{Result, StoreError};

/// How many batch calls to one peer may be out at once.
const IN_FLIGHT: usize = 2;
/// Most records the server takes in one batch.
pub const MAX_APPLY_BATCH: usize = 256;
/// Most records the client puts in one batch.
const BATCH_RECORDS: usize = 64;
/// Most message bytes one batch gathers.
const BATCH_BYTES: usize = 2 * 1024 * 1024;
/// The largest append that is batched: a bigger one would hold up the small ones with it.
const MAX_BATCHED_APPEND: usize = 256 * 1024;

/// A record waiting, with its size and where its outcome goes.
struct Waiting {
    request: proto::ApplyRequest,
    bytes: usize,
    reply: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiting>,
    /// Tasks sending (at most [`IN_FLIGHT`]): each takes what waits when its call returns.
    sending: usize,
    /// The peer has no ApplyBatch (an older SIRMS): each record goes alone.
    unbatched: bool,
}

/// The appends waiting for one peer.
#[derive(Clone, Default)]
pub(super) struct ApplyQueue {
    state: Arc<Mutex<State>>,
}

/// The message bytes of a record that may be batched; `None` for one that goes alone.
pub(super) fn batchable(request: &proto::ApplyRequest) -> Option<usize> {
    match &request.record {
        Some(apply_request::Record::Append(append)) if append.data.len() <= MAX_BATCHED_APPEND => {
            Some(append.data.len())
        }
        _ => None,
    }
}

impl ApplyQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `request` (of `bytes` message bytes) through `client`, together with whatever
    /// else waits for the same peer.
    pub(super) async fn apply(&self, client: &Client, request: proto::ApplyRequest, bytes: usize) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        let lead = {
            let mut state = self.state();
            state.waiting.push(Waiting { request, bytes, reply });
            let lead = state.sending < IN_FLIGHT;
            state.sending += usize::from(lead);
            lead
        };
        if lead {
            // A task of its own, not this caller's: the caller may stop waiting (its timeout)
            // while the records of others ride in the same call.
            tokio::spawn(self.clone().send_all(client.clone()));
        }
        outcome.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the batch sender stopped".into())))
    }

    /// Sends batches until nothing waits.
    async fn send_all(self, mut client: Client) {
        loop {
            let (batch, unbatched) = {
                let mut state = self.state();
                if state.waiting.is_empty() {
                    state.sending -= 1;
                    return;
                }
                (take_batch(&mut state.waiting), state.unbatched)
            };
            if batch.len() == 1 || unbatched {
                send_alone(&mut client, batch).await;
                continue;
            }
            let requests = batch.iter().map(|w| w.request.clone()).collect();
            match client.apply_batch(proto::ApplyBatchRequest { records: requests }).await {
                Ok(reply) => answer(batch, reply.into_inner().outcomes),
                Err(status) if status.code() == Code::Unimplemented && !convert::answered(&status) => {
                    tracing::info!("the replica's store has no ApplyBatch: sending its records one by one");
                    self.state().unbatched = true;
                    send_alone(&mut client, batch).await;
                }
                Err(status) => {
                    for waiting in batch {
                        let _ = waiting.reply.send(Err(StoreError::from(status.clone())));
                    }
                }
            }
        }
    }
}

/// The oldest records that fit in one batch (always at least one).
fn take_batch(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let (mut count, mut bytes) = (0, 0);
    for w in waiting.iter() {
        if count > 0 && (count == BATCH_RECORDS || bytes + w.bytes > BATCH_BYTES) {
            break;
        }
        count += 1;
        bytes += w.bytes;
    }
    waiting.drain(..count).collect()
}

/// Sends each record in a call of its own.
async fn send_alone(client: &mut Client, batch: Vec<Waiting>) {
    for waiting in batch {
        let outcome = client.apply(waiting.request).await.map(drop).map_err(StoreError::from);
        let _ = waiting.reply.send(outcome);
    }
}

/// Hands each record its outcome.
fn answer(batch: Vec<Waiting>, outcomes: Vec<proto::ApplyOutcome>) {
    if outcomes.len() != batch.len() {
        let why = format!("{} outcomes for a batch of {}", outcomes.len(), batch.len());
        for waiting in batch {
            let _ = waiting.reply.send(Err(StoreError::Protocol(why.clone())));
        }
        return;
    }
    for (waiting, outcome) in batch.into_iter().zip(outcomes) {
        let _ = waiting.reply.send(convert::apply_outcome(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(bytes: usize) -> Waiting {
        let record =
            apply_request::Record::Append(proto::ApplyAppend { data: vec![b'x'; bytes].into(), ..Default::default() });
        let request = proto::ApplyRequest { record: Some(record), ..Default::default() };
        Waiting { bytes: batchable(&request).unwrap_or(bytes), request, reply: oneshot::channel().0 }
    }

    #[test]
    fn a_batch_is_bounded_by_count_and_bytes_but_never_empty() {
        let mut waiting: Vec<Waiting> = (0..100).map(|_| append(10)).collect();
        assert_eq!(take_batch(&mut waiting).len(), BATCH_RECORDS);
        assert_eq!(waiting.len(), 100 - BATCH_RECORDS);

        let mut waiting: Vec<Waiting> = (0..20).map(|_| append(MAX_BATCHED_APPEND)).collect();
        assert_eq!(take_batch(&mut waiting).len(), BATCH_BYTES / MAX_BATCHED_APPEND);

        let mut waiting = vec![append(BATCH_BYTES * 2), append(1)];
        assert_eq!(take_batch(&mut waiting).len(), 1, "an oversized record goes alone, first");
        assert_eq!(take_batch(&mut waiting).len(), 1);
        assert!(waiting.is_empty());
    }

    #[test]
    fn only_small_appends_are_batched() {
        let small = append(100);
        assert_eq!(batchable(&small.request), Some(100));
        let big = append(MAX_BATCHED_APPEND + 1);
        assert_eq!(batchable(&big.request), None);
        let flags = proto::ApplyRequest {
            record: Some(apply_request::Record::Flags(proto::ApplyFlags::default())),
            ..Default::default()
        };
        assert_eq!(batchable(&flags), None);
    }
}
