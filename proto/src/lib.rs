//! gRPC contracts between SIRMS roles, generated from `proto/*.proto` at build time.

/// MTA-STS's policy mode and limits, shared by the router (publishing) and nodes (reading).
pub mod mta_sts;

/// The Store service: mailboxes over the network (what replaces NFS).
pub mod store {
    tonic::include_proto!("sirms.store.v1");
}

/// The cluster control plane: Admin (for `sirms ctl`) and Directory (for mail nodes).
pub mod cluster {
    tonic::include_proto!("sirms.cluster.v1");

    impl Node {
        /// What the node takes on, as `sirms ctl nodes list` and the status page name it.
        pub fn state(&self) -> &'static str {
            if self.storage_only {
                "storage"
            } else if self.drained {
                "drained"
            } else {
                "active"
            }
        }
    }
}

/// etcd's v3 API, the part the control plane uses (keys, transactions, watches, leases): the
/// directory and node membership live in etcd when a cluster runs several routers.
pub mod etcd {
    #![allow(missing_docs, clippy::doc_overindented_list_items)]
    tonic::include_proto!("etcdserverpb");
}

/// Metadata key that carries the cluster token on every internal gRPC call.
pub const TOKEN_HEADER: &str = "x-sirms-token";

pub mod budget;
pub mod cidr;
pub mod cluster_tls;
pub mod proxy_v2;
pub mod public_tls;
pub mod token;
pub mod watched;
