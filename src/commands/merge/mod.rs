//! `steep merge`: compare two nodes that both hold data (`analyze`), make them hold the same rows
//! (`run`), list merges (`list`), and follow a merge job (`progress`, `wait`, `cancel`).

mod analyze;
mod job;
mod list;
mod prompt;
mod run;

use anyhow::Result;
use clap::{Args, Subcommand};

pub(crate) use crate::commands::job_result;
use crate::commands::Usage;
use steep::conn::ConnParams;

use crate::context::Ctx;
use analyze::AnalyzeArgs;
use job::{CancelArgs, ProgressArgs, WaitArgs};
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
    /// Live progress of merge jobs (or of one), with the conflicts still undecided.
    Progress(ProgressArgs),
    /// Wait until a merge job ends (or waits for decisions).
    Wait(WaitArgs),
    /// Cancel a merge job: the table it is writing is rolled back on both nodes.
    Cancel(CancelArgs),
}

impl MergeArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            MergeCommand::Analyze(a) => a.execute(ctx),
            MergeCommand::Run(a) => a.execute(ctx),
            MergeCommand::List(a) => a.execute(ctx),
            MergeCommand::Progress(a) => a.execute(ctx),
            MergeCommand::Wait(a) => a.execute(ctx),
            MergeCommand::Cancel(a) => a.execute(ctx),
        }
    }
}

/// `--direct` never sends a peer connection string that holds a password: the server would
/// refuse it, but the statement would carry it first.
pub(crate) fn refuse_password_for_direct(peer: &str) -> Result<()> {
    if ConnParams::parse(peer).is_ok_and(|p| p.get("password").is_some()) {
        return Err(Usage(
            "--peer holds a password, which --direct would send to the server: give the \
             server's OS user a passfile or service file (or use a peer a superuser defined), \
             or run in client mode"
                .into(),
        )
        .into());
    }
    Ok(())
}
