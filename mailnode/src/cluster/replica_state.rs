//! Telling the directory that a user's replica fell behind, or caught up (`SetReplicaState`),
//! through whichever router answers. The directory changes it only if the user's epoch is
//! still the one the caller saw, so a node that was replaced as primary cannot use it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sirms_proto::cluster::ReplicaState;
use sirms_proto::cluster::directory_client::DirectoryClient;
use sirms_proto::cluster_tls::Credentials;
use sirms_proto::token::TokenInterceptor;
use tonic::Code;

/// How long one router may take to connect and answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the replica's state could not be set.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The user's epoch moved on: another node changed the record, or a failover happened.
    #[error("the directory refused: {0}")]
    Refused(String),
    #[error("no router answered: {0}")]
    Unreachable(String),
}

/// Sets users' replica state in the directory.
pub struct ReplicaStates {
    routers: Vec<String>,
    credentials: Credentials,
    /// Users this node marked out of sync, with the epoch it did so from: the writes that
    /// failed together at that epoch need only one directory change.
    marked: Mutex<HashMap<String, u64>>,
}

impl ReplicaStates {
    /// Through `routers`, tried in turn.
    pub fn new(routers: Vec<String>, credentials: Credentials) -> ReplicaStates {
        ReplicaStates { routers, credentials, marked: Mutex::new(HashMap::new()) }
    }

    /// Marks `user`'s replica out of sync if the user's epoch is still `epoch`.
    pub async fn mark_behind(&self, user: &str, epoch: u64) -> Result<(), StateError> {
        if self.marked.lock().unwrap_or_else(|p| p.into_inner()).get(user) == Some(&epoch) {
            return Ok(());
        }
        self.change(ReplicaState { user: user.to_string(), epoch, in_sync: false, promote: false }).await.map(drop)
    }

    /// Marks `user`'s replica in sync if the user's epoch is still `epoch`; returns the user's
    /// epoch after the change.
    pub async fn mark_in_sync(&self, user: &str, epoch: u64) -> Result<u64, StateError> {
        let state = self.change(ReplicaState { user: user.to_string(), epoch, in_sync: true, promote: false }).await?;
        Ok(state.epoch)
    }

    /// Whether this node marked `user`'s replica out of sync at `epoch` (before the directory's
    /// new version reached it).
    pub fn marked_behind(&self, user: &str, epoch: u64) -> bool {
        self.marked.lock().unwrap_or_else(|p| p.into_inner()).get(user) == Some(&epoch)
    }

    /// Makes `user`'s in-sync replica the home, if the user's epoch is still `epoch`: the home
    /// found it has lost the user's mail.
    pub async fn promote(&self, user: &str, epoch: u64) -> Result<(), StateError> {
        self.change(ReplicaState { user: user.to_string(), epoch, in_sync: false, promote: true }).await.map(drop)
    }

    /// Asks a router for the change; the user's replica state after it.
    async fn change(&self, request: ReplicaState) -> Result<ReplicaState, StateError> {
        let (user, epoch, in_sync) = (request.user.as_str(), request.epoch, request.in_sync && !request.promote);
        let mut failures = Vec::new();
        for router in &self.routers {
            match self.call(router, request.clone()).await {
                Ok(state) => {
                    let mut marked = self.marked.lock().unwrap_or_else(|p| p.into_inner());
                    if in_sync {
                        marked.remove(user);
                    } else {
                        marked.insert(user.to_string(), epoch);
                    }
                    return Ok(state);
                }
                Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                    return Err(StateError::Refused(status.message().to_string()));
                }
                Err(status) => failures.push(format!("{router}: {}", status.message())),
            }
        }
        Err(StateError::Unreachable(failures.join("; ")))
    }

    async fn call(&self, router: &str, request: ReplicaState) -> Result<ReplicaState, tonic::Status> {
        let call = async {
            let channel = self
                .credentials
                .endpoint(router)
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                .configure(|e| e.connect_timeout(CALL_TIMEOUT))
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let token = TokenInterceptor::new(&self.credentials.token)
                .ok_or_else(|| tonic::Status::invalid_argument("invalid cluster token"))?;
            Ok(DirectoryClient::with_interceptor(channel, token).set_replica_state(request).await?.into_inner())
        };
        tokio::time::timeout(CALL_TIMEOUT * 2, call)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::unavailable(format!("no answer in {:?}", CALL_TIMEOUT * 2))))
    }
}
