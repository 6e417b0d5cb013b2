//! `sirms ctl routes`: the source-IP routing table, and which node a source goes to.

use clap::Subcommand;
use sirms_proto::cluster::{Empty, Name, Route};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum RoutesCmd {
    /// List routes.
    List,
    /// Route sources in CIDR to a node or `group:NAME` (longest prefix wins).
    Add { cidr: String, target: String },
    /// Remove a route.
    #[command(alias = "rm")]
    Remove { cidr: String },
    /// Which node a source address goes to now, and why.
    Test { ip: String },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: RoutesCmd) -> Result<String, CtlError> {
    match cmd {
        RoutesCmd::List => show(json, &c.list_routes(Empty {}).await?.into_inner(), |l| {
            l.routes.iter().map(|r| format!("{} -> {}\n", r.cidr, r.target)).collect()
        }),
        RoutesCmd::Add { cidr, target } => acked(json, c.put_route(Route { cidr, target }).await),
        RoutesCmd::Remove { cidr } => acked(json, c.remove_route(Name { name: cidr }).await),
        RoutesCmd::Test { ip } => show(json, &c.explain(Name { name: ip }).await?.into_inner(), |e| {
            format!("{} ({}); fallback order: {}\n", e.node, e.reason, e.ranked.join(" "))
        }),
    }
}
