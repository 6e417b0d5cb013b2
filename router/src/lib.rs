//! The router: source-IP routing of connections to mail nodes, the cluster directory and the admin API.
//!
//! The routing decision and the forwarding (the data plane):
//!
//! * [`table`] — the admin's policy table, CIDR → node or group, longest prefix wins;
//! * [`hashing`] — weighted rendezvous hashing of a source IP over nodes, with a stable hash;
//! * [`pick`] — the full choice for one source: table first, hashing otherwise, ranked
//!   fallbacks, never black-holing a source while any node can take it;
//! * [`health`] — active probes of each service of each node with hysteresis, passive
//!   failures, cheap snapshots; [`store_probe`] — the storage nodes' probe, a Store `Ping`;
//! * PROXY protocol v2 lives in `sirms_proto::proxy_v2`, shared with the mail nodes that decode it;
//! * [`forward`] — connect to the first backend that accepts, send the header, relay bytes;
//! * [`nat`] — NAT mode instead of forwarding: packets from a TUN device, translated.
//!
//! One connection flows through them like this: the listener accepts a client; [`server`]
//! asks [`Cluster::choose`] for candidates given the client's IP, the current
//! [`RouteTable`] and node states for the listener's service (combined from the directory's
//! drain flags and the [`HealthMonitor`]'s snapshot of that service with [`NodeState::new`]:
//! one cluster per service); it maps the candidates to
//! [`Backend`] addresses for the listener's service, and [`Forwarder::forward`] serves the
//! client, reporting refused backends back to the monitor.
//!
//! Around them: [`directory`], the cluster directory (nodes, routes, domains, users) that the
//! routing state is rebuilt from; [`failover`], which moves a user whose home died to its
//! in-sync replica; [`admin`], the Admin and Directory gRPC services (the admin
//! CLI, `sirms ctl`, is the binary's); [`autoconfig`], the HTTPS listener that tells mail
//! clients and sending servers how to reach the cluster; [`status_page`], the read-only HTML page
//! for people (nodes, routes, replicas, recent errors) behind the admin token; [`role`],
//! `sirms router` wired together.

pub mod admin;
pub mod autoconfig;
pub mod config;
pub mod directory;
pub mod enrol;
pub mod etcd;
pub mod failover;
pub mod forward;
pub mod greylist;
pub mod hashing;
pub mod health;
pub mod membership;
pub mod metrics;
pub mod nat;
pub mod node;
pub mod pick;
pub mod role;
pub mod scrape;
pub mod server;
pub mod service;
pub mod status_page;
pub mod store_probe;
pub mod table;

pub use forward::{
    Backend, ConnectFailures, ForwardConfig, ForwardError, ForwardStats, Forwarder, Inbound, SessionEnd,
};
pub use hashing::{Rendezvous, Weighted, WeightedNode};
pub use health::{
    Health, HealthConfig, HealthMonitor, HealthSnapshot, NodeHealth, Probe, ProbeTarget, Streak, TcpConnectProbe,
};
pub use node::{GroupName, NameError, NodeId, NodeState};
pub use pick::{Choice, Cluster, ClusterNode, Reason};
pub use service::Service;
pub use table::{Cidr, CidrError, RouteTable, Target};
