//! `sirms ctl aliases`: addresses delivered to other addresses.

use clap::Subcommand;
use sirms_proto::cluster::{Alias, Empty, Name};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum AliasesCmd {
    /// List aliases.
    List,
    /// Deliver mail for ADDRESS to TARGETS.
    Add { address: String, targets: Vec<String> },
    /// Remove an alias.
    #[command(alias = "rm")]
    Remove { address: String },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: AliasesCmd) -> Result<String, CtlError> {
    match cmd {
        AliasesCmd::List => {
            let aliases = c.get_directory(Empty {}).await?.into_inner().aliases;
            show(json, &aliases, |l| l.iter().map(|a| format!("{} -> {}\n", a.address, a.targets.join(" "))).collect())
        }
        AliasesCmd::Add { address, targets } => acked(json, c.put_alias(Alias { address, targets }).await),
        AliasesCmd::Remove { address } => acked(json, c.remove_alias(Name { name: address }).await),
    }
}
