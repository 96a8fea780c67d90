//! `steep snapshot generate|apply|progress|wait|cancel|list|verify`.
//!
//! Direct mode queues the work for a background worker on the server (files live on the server,
//! under steep_repl.snapshot_dir); client mode runs the same engine here over our own connections
//! (files live where steep runs). Auto picks direct when the workers are available.

mod apply_cmd;
pub(crate) mod client_run;
mod follow;
mod generate_cmd;
mod list;
mod mode;
mod verify_cmd;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::context::Ctx;
use apply_cmd::ApplyArgs;
use follow::{CancelArgs, ProgressArgs, WaitArgs};
use generate_cmd::GenerateArgs;
use list::ListArgs;
use verify_cmd::VerifyArgs;

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
pub(super) enum SnapshotCommand {
    /// Take a consistent snapshot of every table into a directory.
    Generate(GenerateArgs),
    /// Load a snapshot into this server.
    Apply(ApplyArgs),
    /// Progress of snapshots in flight (or of one).
    Progress(ProgressArgs),
    /// Follow a direct-mode snapshot until it ends.
    Wait(WaitArgs),
    /// Cancel a direct-mode snapshot.
    Cancel(CancelArgs),
    /// Snapshots recorded in this database.
    List(ListArgs),
    /// Check a snapshot directory offline: manifest, sizes, checksums, row counts.
    Verify(VerifyArgs),
}

impl SnapshotArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            SnapshotCommand::Generate(a) => a.execute(ctx),
            SnapshotCommand::Apply(a) => a.execute(ctx),
            SnapshotCommand::Progress(a) => a.execute(ctx),
            SnapshotCommand::Wait(a) => a.execute(ctx),
            SnapshotCommand::Cancel(a) => a.execute(ctx),
            SnapshotCommand::List(a) => a.execute(ctx),
            SnapshotCommand::Verify(a) => a.execute(ctx),
        }
    }
}
