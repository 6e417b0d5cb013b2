//! `sirms ctl transports`: static outbound routes, a domain's mail to one relay.

use clap::Subcommand;
use sirms_proto::cluster::{Empty, Name, Transport};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum TransportsCmd {
    /// List static transports.
    List,
    /// Send mail for DOMAIN to RELAY (`host:port`, or a host for port 25).
    Add { domain: String, relay: String },
    /// Remove a transport (the domain's MX hosts are used again).
    #[command(alias = "rm")]
    Remove { domain: String },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: TransportsCmd) -> Result<String, CtlError> {
    match cmd {
        TransportsCmd::List => {
            let transports = c.get_directory(Empty {}).await?.into_inner().transports;
            show(json, &transports, |l| l.iter().map(|t| format!("{} -> {}\n", t.domain, t.relay)).collect())
        }
        TransportsCmd::Add { domain, relay } => acked(json, c.put_transport(Transport { domain, relay }).await),
        TransportsCmd::Remove { domain } => acked(json, c.remove_transport(Name { name: domain }).await),
    }
}
