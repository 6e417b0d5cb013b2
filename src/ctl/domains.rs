//! `sirms ctl domains`: the mail domains the cluster accepts mail for.

use clap::Subcommand;
use sirms_proto::cluster::{Empty, Name};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum DomainsCmd {
    /// List domains.
    List,
    /// Add a domain.
    Add { domain: String },
    /// Remove a domain.
    #[command(alias = "rm")]
    Remove { domain: String },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: DomainsCmd) -> Result<String, CtlError> {
    match cmd {
        DomainsCmd::List => {
            let domains = c.get_directory(Empty {}).await?.into_inner().domains;
            show(json, &domains, |d| d.iter().map(|d| format!("{d}\n")).collect())
        }
        DomainsCmd::Add { domain } => acked(json, c.put_domain(Name { name: domain }).await),
        DomainsCmd::Remove { domain } => acked(json, c.remove_domain(Name { name: domain }).await),
    }
}
