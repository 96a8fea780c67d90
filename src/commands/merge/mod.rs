//! `steep merge`: compare two nodes that both hold data (`analyze`), make them hold the same rows
//! (`run`), and list merges (`list`).

mod analyze;
mod list;
mod prompt;
mod run;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::context::Ctx;
use analyze::AnalyzeArgs;
use list::ListArgs;
use run::RunArgs;

#[derive(Args)]
pub struct MergeArgs {
    #[command(subcommand)]
    command: MergeCommand,
}

#[derive(Subcommand)]
enum MergeCommand {
    /// Compare this node's rows with a peer's, per table: match, conflict, local only, remote
    /// only; exit 3 when the nodes cannot be compared.
    Analyze(AnalyzeArgs),
    /// Make this node and a peer hold the same rows: one-sided rows copied, conflicts decided
    /// by a strategy, a decisions file or at a prompt; every decision in the audit log.
    Run(RunArgs),
    /// The merges and analyses recorded on this node.
    List(ListArgs),
}

impl MergeArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            MergeCommand::Analyze(a) => a.execute(ctx),
            MergeCommand::Run(a) => a.execute(ctx),
            MergeCommand::List(a) => a.execute(ctx),
        }
    }
}
