//! `steep replication`: bring this node and a peer into logical replication (`init`), show how
//! it runs (`status`), and remove it (`drop`).

mod drop_cmd;
mod init;
mod status;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::context::Ctx;
use drop_cmd::DropArgs;
use init::InitArgs;
use status::StatusArgs;

#[derive(Args)]
pub struct ReplicationArgs {
    #[command(subcommand)]
    command: ReplicationCommand,
}

#[derive(Subcommand)]
enum ReplicationCommand {
    /// Bring this node (A) and a peer (B) into logical replication, both ways unless --one-way:
    /// B's data from a snapshot of A taken at A's slot, from a merge of both, or empty tables.
    Init(InitArgs),
    /// Slots (lag, retained WAL), subscriptions (errors), publications and the key scheme on
    /// this node (and the peer).
    Status(StatusArgs),
    /// Remove a setup: subscriptions, slots, publications, and the key scheme's increments.
    Drop(DropArgs),
}

impl ReplicationArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            ReplicationCommand::Init(a) => a.execute(ctx),
            ReplicationCommand::Status(a) => a.execute(ctx),
            ReplicationCommand::Drop(a) => a.execute(ctx),
        }
    }
}

/// The setup's name (`--name`), shared by every replication command.
#[derive(Args, Clone)]
pub(crate) struct SetupName {
    /// The setup's name: its publications are steep_NAME, its slots and subscriptions
    /// steep_NAME_<node tag>.
    #[arg(long = "name", default_value = "main", value_name = "NAME")]
    pub(crate) name: String,
}
