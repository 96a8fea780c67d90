//! `steep merge analyze`: which rows of two nodes that both hold data match, conflict, or exist
//! on one side only (the merge itself comes next).

mod analyze;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::context::Ctx;
use analyze::AnalyzeArgs;

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
}

impl MergeArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            MergeCommand::Analyze(a) => a.execute(ctx),
        }
    }
}
