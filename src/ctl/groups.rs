//! `sirms ctl groups`: named sets of nodes that routes can target.

use clap::Subcommand;
use sirms_proto::cluster::{Empty, Group, Name};

use super::{Client, CtlError, acked, show};

#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// List groups.
    List,
    /// Create or replace a group.
    Set { name: String, members: Vec<String> },
    /// Remove a group.
    #[command(alias = "rm")]
    Remove { name: String },
}

pub(super) async fn run(c: &mut Client, json: bool, cmd: GroupsCmd) -> Result<String, CtlError> {
    match cmd {
        GroupsCmd::List => show(json, &c.list_groups(Empty {}).await?.into_inner(), |l| {
            l.groups.iter().map(|g| format!("{}: {}\n", g.name, g.members.join(" "))).collect()
        }),
        GroupsCmd::Set { name, members } => acked(json, c.put_group(Group { name, members }).await),
        GroupsCmd::Remove { name } => acked(json, c.remove_group(Name { name }).await),
    }
}
