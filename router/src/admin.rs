//! The Admin and Directory gRPC services the router serves, both behind the cluster token.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sirms_proto::cluster::admin_server::{Admin, AdminServer};
use sirms_proto::cluster::directory_server::{Directory, DirectoryServer};
use sirms_proto::cluster::{
    Ack, Alias, ClusterStatus, DirectorySnapshot, DkimKey, DomainQuota, DrainRequest, Empty, GreylistAnswer,
    GreylistQuery, Group, GroupList, Invitation, Invite, Name, Node, NodeList, NodeLoad, ReplicaState, Route,
    RouteExplanation, RouteList, Transport, User, WatchRequest,
};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use sirms_proto::cluster_tls::invitation::Token;
use sirms_proto::cluster_tls::{self, Role};

use crate::directory::DirectoryError;
use crate::pick::Choice;
use crate::server::Router;
use crate::service::Service;

/// Both services over one router.
#[derive(Clone)]
pub struct AdminService {
    router: Arc<Router>,
    token: Arc<str>,
}

impl From<DirectoryError> for Status {
    fn from(e: DirectoryError) -> Status {
        match e {
            DirectoryError::NotFound(_) => Status::not_found(e.to_string()),
            DirectoryError::Db(_) => Status::internal(e.to_string()),
            DirectoryError::Unavailable(_) => Status::unavailable(e.to_string()),
            DirectoryError::Conflict(_) => Status::aborted(e.to_string()),
            DirectoryError::UnknownDomain(_)
            | DirectoryError::UnknownNode(_)
            | DirectoryError::StaleEpoch(_)
            | DirectoryError::NoReplica(_) => Status::failed_precondition(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn ack(result: Result<(), DirectoryError>) -> Reply<Ack> {
    result.map(|()| Response::new(Ack {})).map_err(Status::from)
}

impl AdminService {
    /// The services over `router`, open to callers with `token`.
    pub fn new(router: Arc<Router>, token: &str) -> AdminService {
        AdminService { router, token: token.into() }
    }

    /// The tonic services to add to a server.
    pub fn into_servers(self) -> (AdminServer<AdminService>, DirectoryServer<AdminService>) {
        (AdminServer::new(self.clone()), DirectoryServer::new(self))
    }

    /// The request's body, if it carries the cluster token.
    fn open<T>(&self, request: Request<T>) -> Result<T, Status> {
        if sirms_proto::token::presented(&request, &self.token) {
            Ok(request.into_inner())
        } else {
            Err(Status::unauthenticated("missing or wrong cluster token"))
        }
    }

    /// An Admin call's body: the cluster token, and over mutual TLS the admin's certificate,
    /// which no node holds.
    fn admin<T>(&self, request: Request<T>) -> Result<T, Status> {
        cluster_tls::authorize(&request, &[Role::Admin])?;
        self.open(request)
    }

    /// A Directory call's body, made for the node `node_of` names: over mutual TLS only that
    /// node's own certificate may make it (a node registers and heartbeats only as itself).
    fn as_node<T>(&self, request: Request<T>, node_of: impl Fn(&T) -> String) -> Result<T, Status> {
        cluster_tls::acting_as(&request, &node_of(request.get_ref()))?;
        self.open(request)
    }

    /// A Directory call's body that names no node of its own (a replica state): over mutual
    /// TLS any node or storage node the directory knows may make it.
    fn any_node<T>(&self, request: Request<T>) -> Result<T, Status> {
        if let Some(identity) = cluster_tls::authorize(&request, &[Role::Node, Role::Storage])?
            && self.dir().node(&identity.name).is_none()
        {
            return Err(Status::permission_denied(format!("{identity} is not a node of the directory")));
        }
        self.open(request)
    }

    fn dir(&self) -> &crate::directory::ClusterDirectory {
        self.router.directory()
    }

    /// Refuses to hand out a directory this router has not read yet: a node given the empty
    /// copy would refuse every user.
    fn loaded(&self) -> Result<(), Status> {
        if self.dir().current().loaded {
            Ok(())
        } else {
            Err(Status::unavailable(format!("this router has not read the directory yet ({})", self.dir().describe())))
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn put_node(&self, request: Request<Node>) -> Reply<Ack> {
        ack(self.dir().put_node(self.admin(request)?).await)
    }
    async fn remove_node(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_node(&self.admin(request)?.name).await)
    }
    async fn drain_node(&self, request: Request<DrainRequest>) -> Reply<Ack> {
        let r = self.admin(request)?;
        ack(self.dir().set_drained(&r.id, r.drained).await)
    }
    async fn list_nodes(&self, request: Request<Empty>) -> Reply<NodeList> {
        self.admin(request)?;
        self.dir().catch_up().await;
        Ok(Response::new(NodeList { nodes: self.router.status() }))
    }
    async fn invite_node(&self, request: Request<Invite>) -> Reply<Invitation> {
        let mut invite = self.admin(request)?;
        let token = Token::new(&invite.node).ok_or_else(|| Status::internal("no randomness for a token"))?;
        if !invite.hosts.contains(&invite.node) {
            invite.hosts.insert(0, invite.node.clone());
        }
        self.dir().put_invite(&token.hash(), invite.clone()).await?;
        tracing::info!(node = %invite.node, role = %invite.role, "node invited");
        Ok(Response::new(Invitation { token: token.to_string(), expires_unix: invite.expires_unix }))
    }
    async fn put_route(&self, request: Request<Route>) -> Reply<Ack> {
        let r = self.admin(request)?;
        ack(self.dir().put_route(&r.cidr, &r.target).await)
    }
    async fn remove_route(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_route(&self.admin(request)?.name).await)
    }
    async fn list_routes(&self, request: Request<Empty>) -> Reply<RouteList> {
        self.admin(request)?;
        self.dir().catch_up().await;
        Ok(Response::new(RouteList { routes: self.dir().routes() }))
    }
    async fn put_group(&self, request: Request<Group>) -> Reply<Ack> {
        ack(self.dir().put_group(self.admin(request)?).await)
    }
    async fn remove_group(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_group(&self.admin(request)?.name).await)
    }
    async fn list_groups(&self, request: Request<Empty>) -> Reply<GroupList> {
        self.admin(request)?;
        self.dir().catch_up().await;
        Ok(Response::new(GroupList { groups: self.dir().groups() }))
    }
    async fn put_domain(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().put_domain(&self.admin(request)?.name).await)
    }
    async fn set_domain_quota(&self, request: Request<DomainQuota>) -> Reply<Ack> {
        ack(self.dir().set_domain_quota(&self.admin(request)?).await)
    }
    async fn remove_domain(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_domain(&self.admin(request)?.name).await)
    }
    async fn put_user(&self, request: Request<User>) -> Reply<Ack> {
        ack(self.dir().put_user(self.admin(request)?).await)
    }
    async fn remove_user(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_user(&self.admin(request)?.name).await)
    }
    async fn put_alias(&self, request: Request<Alias>) -> Reply<Ack> {
        ack(self.dir().put_alias(self.admin(request)?).await)
    }
    async fn remove_alias(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_alias(&self.admin(request)?.name).await)
    }
    async fn put_transport(&self, request: Request<Transport>) -> Reply<Ack> {
        let t = self.admin(request)?;
        ack(self.dir().put_transport(&t.domain, &t.relay).await)
    }
    async fn remove_transport(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_transport(&self.admin(request)?.name).await)
    }
    async fn put_dkim_key(&self, request: Request<DkimKey>) -> Reply<Ack> {
        ack(self.dir().put_dkim_key(self.admin(request)?).await)
    }
    async fn remove_dkim_key(&self, request: Request<Name>) -> Reply<Ack> {
        ack(self.dir().remove_dkim_key(&self.admin(request)?.name).await)
    }
    async fn get_directory(&self, request: Request<Empty>) -> Reply<DirectorySnapshot> {
        self.admin(request)?;
        self.dir().catch_up().await;
        let mut snapshot = self.dir().snapshot();
        // Admins see who exists, not password hashes.
        for user in &mut snapshot.users {
            user.password_hash.clear();
        }
        Ok(Response::new(snapshot))
    }
    async fn export_directory(&self, request: Request<Empty>) -> Reply<DirectorySnapshot> {
        self.admin(request)?;
        self.dir().catch_up().await;
        Ok(Response::new(self.dir().snapshot()))
    }
    async fn status(&self, request: Request<Empty>) -> Reply<ClusterStatus> {
        self.admin(request)?;
        self.dir().catch_up().await;
        Ok(Response::new(self.router.cluster_status()))
    }
    async fn explain(&self, request: Request<Name>) -> Reply<RouteExplanation> {
        let name = self.admin(request)?.name;
        let ip: IpAddr = name.parse().map_err(|_| Status::invalid_argument(format!("not an IP address: {name}")))?;
        // The SMTP choice; a service that is down on that node sends its clients elsewhere,
        // which the reason says.
        let choice = self.router.choose(ip, Service::Smtp);
        let first = |choice: &Choice| choice.candidates.first().map(|n| n.to_string()).unwrap_or_default();
        let mut reason = choice.reason.to_string();
        for service in Service::ALL {
            let other = first(&self.router.choose(ip, service));
            if other != first(&choice) {
                reason.push_str(&format!("; {} -> {other}", service.name()));
            }
        }
        Ok(Response::new(RouteExplanation {
            node: first(&choice),
            reason,
            ranked: choice.candidates.iter().map(|n| n.to_string()).collect(),
        }))
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<DirectorySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Directory for AdminService {
    async fn register(&self, request: Request<Node>) -> Reply<DirectorySnapshot> {
        let node = self.as_node(request, |n: &Node| n.id.clone())?;
        self.loaded()?;
        let (id, host) = (node.id.clone(), node.host.clone());
        self.dir().register_node(node).await?;
        if let Some(membership) = self.router.membership() {
            membership
                .join(&id, &NodeLoad { node_id: id.clone(), ..Default::default() })
                .await
                .map_err(|e| Status::unavailable(format!("cannot take the node's lease: {e}")))?;
        }
        tracing::info!(node = %id, %host, "node registered");
        Ok(Response::new(self.dir().snapshot()))
    }

    async fn heartbeat(&self, request: Request<NodeLoad>) -> Reply<Ack> {
        let load = self.as_node(request, |l: &NodeLoad| l.node_id.clone())?;
        // A router that cannot renew the node's lease says so: the node moves to another.
        if let Some(membership) = self.router.membership() {
            membership
                .alive(&load.node_id, &load)
                .await
                .map_err(|e| Status::unavailable(format!("cannot renew the node's lease: {e}")))?;
        }
        self.router.record_load(load);
        Ok(Response::new(Ack {}))
    }

    async fn set_replica_state(&self, request: Request<ReplicaState>) -> Reply<ReplicaState> {
        let request = self.any_node(request)?;
        self.loaded()?;
        let state = self.dir().set_replica_state(request).await?;
        tracing::info!(user = %state.user, epoch = state.epoch, in_sync = state.in_sync, "replica state");
        Ok(Response::new(state))
    }

    async fn greylist(&self, request: Request<GreylistQuery>) -> Reply<GreylistAnswer> {
        let query = self.any_node(request)?;
        Ok(Response::new(self.dir().greylist(&query).await?))
    }

    type WatchStream = SnapshotStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Reply<SnapshotStream> {
        let since = self.as_node(request, |w: &WatchRequest| w.node_id.clone())?.version;
        self.loaded()?;
        let states = WatchStream::new(self.dir().subscribe());
        let stream = futures::StreamExt::filter_map(states, move |state| async move {
            (state.loaded && state.version > since).then(|| Ok(state.snapshot()))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
