//! `steep ops list|cancel|watch|selftest`: the background operations of a database.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use crate::commands::require_extension;
use crate::context::Ctx;
use steep::cli::follow::{describe, percentile, wait_for_end, Ending, Followed, Follower};
use steep::cli::output::table;
use steep::db_error::db_error;
use steep::progress_record::CHANNEL;

#[derive(Args)]
pub struct OpsArgs {
    #[command(subcommand)]
    command: OpsCommand,
}

#[derive(Subcommand)]
enum OpsCommand {
    /// Operations of this database (visible to you), oldest first.
    List(ListArgs),
    /// Cancel a pending or running operation.
    Cancel(CancelArgs),
    /// Follow one operation (or every operation in flight) until it ends.
    Watch(WatchArgs),
    /// Run the worker selftest: a real job with progress; reports start and progress latency.
    Selftest(SelftestArgs),
}

impl OpsArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut client = ctx.connect()?;
        require_extension(&mut client)?;
        match &self.command {
            OpsCommand::List(a) => a.execute(ctx, &mut client),
            OpsCommand::Cancel(a) => a.execute(ctx, &mut client),
            OpsCommand::Watch(a) => a.execute(ctx, &mut client),
            OpsCommand::Selftest(a) => a.execute(ctx, &mut client),
        }
    }
}

#[derive(Serialize)]
struct Operation {
    id: i64,
    operation: String,
    status: String,
    created_by: String,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    error: Option<String>,
    snapshot_id: Option<String>,
    /// Why a pending operation has not started (a job slot, max_jobs, a worker process).
    waiting: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only operations with this status (pending, running, complete, failed, cancelled).
    #[arg(long)]
    status: Option<String>,
}

impl ListArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let rows = client
            .query(
                "SELECT id, operation, status, created_by::text, created_at::text,
                        started_at::text, completed_at::text, error_message, snapshot_id,
                        CASE WHEN status = 'pending' THEN progress ->> 'phase' END
                 FROM steep_repl.list_operations($1)",
                &[&self.status],
            )
            .map_err(db_error)?;
        let ops: Vec<Operation> = rows
            .iter()
            .map(|r| Operation {
                id: r.get(0),
                operation: r.get(1),
                status: r.get(2),
                created_by: r.get(3),
                created_at: r.get(4),
                started_at: r.get(5),
                completed_at: r.get(6),
                error: r.get(7),
                snapshot_id: r.get(8),
                waiting: r.get(9),
            })
            .collect();
        ctx.out.json(&ops)?;
        if ops.is_empty() {
            ctx.out.note("no operations");
            return Ok(());
        }
        let body: Vec<Vec<String>> = ops
            .iter()
            .map(|o| {
                vec![
                    o.id.to_string(),
                    o.operation.clone(),
                    o.status.clone(),
                    o.created_by.clone(),
                    o.created_at.clone(),
                    o.error.clone().or(o.waiting.clone()).unwrap_or_default(),
                ]
            })
            .collect();
        ctx.out.line(table(
            &[
                "id",
                "operation",
                "status",
                "by",
                "queued at",
                "error / waiting for",
            ],
            &body,
        ));
        Ok(())
    }
}

#[derive(Args)]
pub struct CancelArgs {
    /// Operation id (see `steep ops list`).
    id: i64,
}

impl CancelArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let ok: bool = client
            .query_one("SELECT steep_repl.cancel_operation($1)", &[&self.id])
            .map_err(db_error)?
            .get(0);
        if !ok {
            bail!(
                "operation {} is not pending or running (or not yours): see `steep ops list`",
                self.id
            );
        }
        let status = wait_for_end(client, self.id)?;
        ctx.out
            .status("Cancelled", format!("operation {} (now {status})", self.id));
        ctx.out
            .json(&json!({ "id": self.id, "cancel_requested": true, "status": status }))
    }
}

#[derive(Args)]
pub struct WatchArgs {
    /// Operation id; without it, every operation in flight until none is left.
    id: Option<i64>,
}

impl WatchArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        match self.id {
            Some(id) => {
                if steep::cli::follow::poll(client, id)?.is_none() {
                    bail!("no operation {id} here (or not yours): see `steep ops list`");
                }
                let f = Follower::new(&ctx.out, format!("operation {id}")).follow(client, id)?;
                report(ctx, &f)
            }
            None => watch_all(ctx, client),
        }
    }
}

/// Print every operation's events until nothing is in flight.
fn watch_all(ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    let mut events = Vec::new();
    loop {
        let in_flight: i64 = client
            .query_one("SELECT count(*) FROM steep_repl.progress", &[])
            .map_err(db_error)?
            .get(0);
        if in_flight == 0 {
            break;
        }
        let mut moved: Vec<i64> = Vec::new();
        for sig in steep::cli::follow::wait_signals(client, Duration::from_millis(500), None)? {
            if !moved.contains(&sig.id) {
                moved.push(sig.id);
            }
        }
        // A signal says only which operation moved; what it is and where it stands is read
        // through operation_progress, which shows only this role's operations.
        for id in moved {
            if let Some(e) = steep::cli::follow::poll(client, id)? {
                ctx.out.status(
                    "Progress",
                    format!("{} #{} {:>5.1}% {}", e.op, e.id, e.percent, describe(&e)),
                );
                events.push(e);
            }
        }
    }
    if events.is_empty() {
        ctx.out.note("no operations in flight");
    }
    ctx.out.json(&events)
}

fn report(ctx: &Ctx, f: &Followed) -> Result<()> {
    ctx.out.json(f)?;
    let e = &f.last;
    match (&f.ending, e.status.as_str()) {
        (Ending::Detached, _) => Ok(()),
        (_, "complete") => {
            ctx.out
                .status("Finished", format!("{} #{}: {}", e.op, e.id, describe(e)));
            Ok(())
        }
        (_, status) => bail!(
            "{} #{} {status}: {}",
            e.op,
            e.id,
            e.error.as_deref().unwrap_or("no reason recorded")
        ),
    }
}

#[derive(Args)]
pub struct SelftestArgs {
    /// How long each run works.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Steps per run (progress is reported after each).
    #[arg(long, default_value_t = 10)]
    steps: i32,
    /// Runs, one after the other (latency percentiles need several).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Queue it and return at once.
    #[arg(long)]
    detach: bool,
}

#[derive(Serialize)]
struct Latency {
    p50: Option<i64>,
    p95: Option<i64>,
    max: Option<i64>,
    samples: usize,
}

impl Latency {
    fn of(v: &[i64]) -> Self {
        Self {
            p50: percentile(v, 50.0),
            p95: percentile(v, 95.0),
            max: v.iter().copied().max(),
            samples: v.len(),
        }
    }
}

impl SelftestArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let mut starts = Vec::new();
        let mut progress = Vec::new();
        let mut results = Vec::new();
        for run in 0..self.runs.max(1) {
            let id: i64 = client
                .query_one(
                    "SELECT id FROM steep_repl.start_selftest($1, $2)",
                    &[&self.seconds, &self.steps],
                )
                .map_err(db_error)?
                .get(0);
            if self.detach {
                ctx.out.status("Queued", format!("selftest operation {id}"));
                return ctx.out.json(&json!({ "id": id }));
            }
            let f = Follower::new(&ctx.out, format!("selftest {}", run + 1)).follow(client, id)?;
            if f.ending == Ending::Detached {
                return report(ctx, &f);
            }
            if f.last.status != "complete" {
                return report(ctx, &f);
            }
            starts.extend(f.start_latency_ms);
            progress.extend(f.latencies_ms.iter().copied());
            let result: Option<serde_json::Value> = client
                .query_one(
                    "SELECT result FROM steep_repl.work_queue WHERE id = $1",
                    &[&id],
                )?
                .get(0);
            results.push(json!({ "id": id, "notifications": f.notifications, "result": result }));
        }
        let start = Latency::of(&starts);
        let prog = Latency::of(&progress);
        ctx.out.json(&json!({
            "runs": results.len(),
            "start_latency_ms": start,
            "progress_latency_ms": prog,
            "results": results,
        }))?;
        let ms = |v: Option<i64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
        ctx.out.status(
            "Selftest",
            format!(
                "{} run(s) complete; start latency p50 {} p95 {}; progress latency p50 {} p95 {} \
                 ({} notifications)",
                results.len(),
                ms(start.p50),
                ms(start.p95),
                ms(prog.p50),
                ms(prog.p95),
                prog.samples
            ),
        );
        Ok(())
    }
}
