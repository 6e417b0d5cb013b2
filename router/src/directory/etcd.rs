//! The directory in etcd, shared by every router of the cluster.
//!
//! Each record is one key, `PREFIX/directory/TABLE/KEY`, holding the record's protobuf
//! encoding, and `PREFIX/directory/version` holds the version as decimal text. A change is
//! one transaction that writes its records and the next version, on the condition that the
//! version is still the one the change was planned against, so two admins racing through two
//! routers cannot lose either change. Every router reads the whole prefix once and then
//! follows it with a watch; its copy moves one whole transaction at a time.

use std::sync::Arc;

use sirms_proto::etcd::compare::{CompareResult, CompareTarget, TargetUnion};
use sirms_proto::etcd::event::EventType;
use sirms_proto::etcd::request_op::Request as Op;
use sirms_proto::etcd::{Compare, DeleteRangeRequest, Event, KeyValue, PutRequest, RequestOp, TxnRequest};
use tokio::sync::watch;

use super::state::{State, Table, Write};
use super::{DirectoryError, Expired, Store};
use crate::etcd::{EtcdClient, EtcdError, Follower, follow_prefix};

/// The directory under one etcd prefix.
pub struct EtcdStore {
    client: Arc<EtcdClient>,
    keys: Keys,
    /// `PREFIX/greylist/`: greylisting's records, outside the followed directory prefix.
    grey: String,
    follower: tokio::task::JoinHandle<()>,
}

/// Greylisting records read per page while pruning.
const PRUNE_PAGE: i64 = 1000;

/// The directory's key layout under a prefix.
#[derive(Clone)]
struct Keys {
    /// `PREFIX/directory/`
    root: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys { root: format!("{}/directory/", prefix.trim_end_matches('/')) }
    }

    fn version(&self) -> String {
        format!("{}version", self.root)
    }

    fn record(&self, table: Table, key: &str) -> String {
        format!("{}{}/{key}", self.root, table.name())
    }

    /// What a stored key is: the version (`None`), or a record.
    fn parse<'a>(&self, key: &'a [u8]) -> Option<Option<(Table, &'a str)>> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(self.root.as_str())?;
        if key == "version" {
            return Some(None);
        }
        let (table, key) = key.split_once('/')?;
        Some(Some((Table::from_name(table)?, key)))
    }

    /// Takes one key-value pair into `state`.
    fn apply(&self, state: &mut State, kv: &KeyValue, deleted: bool) {
        match self.parse(&kv.key) {
            Some(None) => {
                state.version = if deleted {
                    0
                } else {
                    std::str::from_utf8(&kv.value).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
                }
            }
            Some(Some((table, key))) if deleted => state.apply(&Write::Delete(table, key.to_string())),
            Some(Some((table, key))) => state.apply(&Write::Put(table, key.to_string(), kv.value.to_vec())),
            None => {}
        }
    }
}

fn unavailable(client: &EtcdClient, e: EtcdError) -> DirectoryError {
    DirectoryError::Unavailable(format!("etcd at {}: {e}", client.endpoints()))
}

impl EtcdStore {
    /// The directory under `prefix` in the etcd cluster `client` reaches. The returned copy is
    /// marked loaded once the whole directory has been read; until then (etcd away at start)
    /// it is empty and the follower keeps trying.
    pub fn open(client: Arc<EtcdClient>, prefix: &str) -> (EtcdStore, watch::Receiver<Arc<State>>) {
        let keys = Keys::new(prefix);
        let (sender, receiver) = watch::channel(Arc::new(State::default()));
        let copy = Copy { keys: keys.clone(), sender };
        let follower = tokio::spawn(follow_prefix(client.clone(), keys.root.clone().into_bytes(), copy));
        let grey = format!("{}/greylist/", prefix.trim_end_matches('/'));
        (EtcdStore { client, keys, grey, follower }, receiver)
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// This router's copy of the directory, kept by [`follow_prefix`].
struct Copy {
    keys: Keys,
    sender: watch::Sender<Arc<State>>,
}

impl Follower for Copy {
    fn reset(&mut self, kvs: &[KeyValue]) {
        let mut state = State::default();
        state.loaded = true;
        for kv in kvs {
            self.keys.apply(&mut state, kv, false);
        }
        tracing::info!(version = state.version, records = kvs.len(), "directory read from etcd");
        self.sender.send_replace(Arc::new(state));
    }

    fn events(&mut self, events: &[Event]) {
        // One revision is one transaction: the copy moves from one whole change to the next.
        self.sender.send_modify(|state| {
            let state = Arc::make_mut(state);
            for event in events {
                if let Some(kv) = &event.kv {
                    self.keys.apply(state, kv, event.r#type() == EventType::Delete);
                }
            }
        });
    }
}

#[tonic::async_trait]
impl Store for EtcdStore {
    async fn commit(&self, base: u64, writes: &[Write]) -> Result<bool, DirectoryError> {
        let version = self.keys.version();
        // Version 0 is a directory never written: its version key does not exist yet.
        let unchanged = if base == 0 {
            Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: version.clone().into_bytes().into(),
                target_union: Some(TargetUnion::Version(0)),
                ..Default::default()
            }
        } else {
            Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: version.clone().into_bytes().into(),
                target_union: Some(TargetUnion::Value(base.to_string().into_bytes().into())),
                ..Default::default()
            }
        };
        let put = |key: String, value: Vec<u8>| RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: key.into_bytes().into(),
                value: value.into(),
                ..Default::default()
            })),
        };
        let mut success: Vec<RequestOp> = writes
            .iter()
            .map(|write| match write {
                Write::Put(table, key, value) => put(self.keys.record(*table, key), value.clone()),
                Write::Delete(table, key) => RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: self.keys.record(*table, key).into_bytes().into(),
                        ..Default::default()
                    })),
                },
            })
            .collect();
        success.push(put(version, (base + 1).to_string().into_bytes()));
        let txn = TxnRequest { compare: vec![unchanged], success, failure: Vec::new() };
        let reply = self.client.txn(txn).await.map_err(|e| unavailable(&self.client, e))?;
        Ok(reply.succeeded)
    }

    async fn latest(&self) -> Result<u64, DirectoryError> {
        let value = self.client.get(self.keys.version().as_bytes()).await.map_err(|e| unavailable(&self.client, e))?;
        Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0))
    }

    fn describe(&self) -> String {
        format!("the etcd directory at {} ({})", self.client.endpoints(), self.keys.root)
    }

    async fn grey_record(&self, key: &str) -> Result<Option<Vec<u8>>, DirectoryError> {
        let key = format!("{}{key}", self.grey);
        self.client.get(key.as_bytes()).await.map_err(|e| unavailable(&self.client, e))
    }

    async fn put_grey_records(&self, records: &[(String, Vec<u8>)]) -> Result<(), DirectoryError> {
        // One transaction: a triplet and its network change together. etcd has them on a
        // quorum's disks when it answers.
        let success = (records.iter())
            .map(|(key, value)| RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: format!("{}{key}", self.grey).into_bytes().into(),
                    value: value.clone().into(),
                    ..Default::default()
                })),
            })
            .collect();
        let txn = TxnRequest { compare: Vec::new(), success, failure: Vec::new() };
        self.client.txn(txn).await.map_err(|e| unavailable(&self.client, e))?;
        Ok(())
    }

    async fn prune_grey_records(&self, expired: &Expired) -> Result<u64, DirectoryError> {
        let end = crate::etcd::prefix_end(self.grey.as_bytes());
        let mut from = self.grey.clone().into_bytes();
        let mut left = 0;
        loop {
            let (kvs, more) =
                self.client.range_page(&from, &end, PRUNE_PAGE).await.map_err(|e| unavailable(&self.client, e))?;
            for kv in &kvs {
                if !expired(&kv.value) {
                    left += 1;
                    continue;
                }
                // Deleted only if nobody rewrote it since it was read (another router
                // passing the triplet again).
                let unchanged = Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: kv.key.clone(),
                    target_union: Some(TargetUnion::ModRevision(kv.mod_revision)),
                    ..Default::default()
                };
                let delete = RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: kv.key.clone(),
                        ..Default::default()
                    })),
                };
                let txn = TxnRequest { compare: vec![unchanged], success: vec![delete], failure: Vec::new() };
                self.client.txn(txn).await.map_err(|e| unavailable(&self.client, e))?;
            }
            match kvs.last() {
                Some(last) if more => {
                    from = last.key.to_vec();
                    from.push(0);
                }
                _ => return Ok(left),
            }
        }
    }
}
