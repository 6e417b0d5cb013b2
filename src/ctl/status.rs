//! `sirms ctl status`: the router's view of the cluster.

use sirms_proto::cluster::Empty;

use super::{Client, CtlError, nodes, show};

pub(super) async fn run(c: &mut Client, json: bool) -> Result<String, CtlError> {
    show(json, &c.status(Empty {}).await?.into_inner(), |s| {
        let mut out = format!(
            "directory version {}, {} domains, {} users, {} routes\n",
            s.directory_version, s.domains, s.users, s.routes
        );
        if let Some(nat) = &s.nat {
            out.push_str(&format!(
                "nat: {} flows; {} opened, {} reset; packets {} forwarded, {} answered, {} dropped\n",
                nat.flows, nat.flows_opened, nat.flows_reset, nat.forwarded, nat.answered, nat.discarded
            ));
        }
        out.push_str(&nodes::table(&s.nodes));
        out
    })
}
