//! Following a direct-mode snapshot: `steep snapshot progress|wait|cancel` and the follower the
//! queueing commands use.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::json;

use crate::commands::{require_extension, Blocking};
use crate::context::Ctx;
use steep::cli::follow::{human_bytes, wait_for_end, Ending, Follower};
use steep::cli::output::table;
use steep::db_error::db_error;
use steep::engine::error::ErrorKind;

/// The work_queue operation that runs a direct-mode snapshot.
pub(super) fn snapshot_operation(c: &mut postgres::Client, snapshot_id: &str) -> Result<i64> {
    Ok(c.query_opt(
        "SELECT id FROM steep_repl.work_queue WHERE snapshot_id = $1 ORDER BY id DESC LIMIT 1",
        &[&snapshot_id],
    )?
    .ok_or_else(|| {
        anyhow!("no operation for snapshot {snapshot_id} (or not yours): see `steep snapshot list`")
    })?
    .get(0))
}

/// Follow a direct-mode snapshot (by its work_queue operation) and report how it ended.
pub(super) fn follow_snapshot(
    ctx: &Ctx,
    c: &mut postgres::Client,
    snapshot_id: &str,
) -> Result<()> {
    let op = snapshot_operation(c, snapshot_id)?;
    let f = Follower::new(&ctx.out, format!("snapshot {snapshot_id}")).follow(c, op)?;
    if f.ending == Ending::Detached {
        return Ok(());
    }
    let row = c.query_one(
        "SELECT s.status, s.error_message, s.storage_path, s.table_count, s.rows_processed,
                s.bytes_processed, w.result
         FROM steep_repl.snapshots s JOIN steep_repl.work_queue w ON w.snapshot_id = s.snapshot_id
         WHERE s.snapshot_id = $1 ORDER BY w.id DESC LIMIT 1",
        &[&snapshot_id],
    )?;
    let status: String = row.get(0);
    let result: Option<serde_json::Value> = row.get(6);
    ctx.out.json(&json!({
        "snapshot_id": snapshot_id,
        "status": status,
        "error": row.get::<_, Option<String>>(1),
        "storage_path": row.get::<_, Option<String>>(2),
        "result": result,
    }))?;
    if status != "complete" {
        let err: Option<String> = row.get(1);
        let msg = format!(
            "snapshot {snapshot_id} {status}: {}",
            err.unwrap_or_default()
        );
        let kind = result
            .as_ref()
            .and_then(|r| r.get("error_kind"))
            .and_then(|k| k.as_str());
        if kind == Some(ErrorKind::SchemaMismatch.name()) {
            return Err(Blocking(msg).into());
        }
        bail!(msg);
    }
    ctx.out.status(
        "Finished",
        format!(
            "snapshot {snapshot_id} ({}): {} tables, {} rows, {}",
            row.get::<_, Option<String>>(2).unwrap_or_default(),
            row.get::<_, Option<i32>>(3).unwrap_or(0),
            row.get::<_, i64>(4),
            human_bytes(row.get::<_, i64>(5))
        ),
    );
    Ok(())
}

#[derive(Args)]
pub struct ProgressArgs {
    /// Snapshot id; without it, every snapshot in flight.
    snapshot_id: Option<String>,
}

impl ProgressArgs {
    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let rows = c
            .query(
                "SELECT snapshot_id, phase, overall_percent, tables_completed, tables_total,
                        current_table, bytes_processed, eta_seconds, error
                 FROM steep_repl.snapshot_progress($1)",
                &[&self.snapshot_id],
            )
            .map_err(db_error)?;
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "snapshot_id": r.get::<_, String>(0),
                    "phase": r.get::<_, Option<String>>(1),
                    "percent": r.get::<_, f64>(2),
                    "tables_completed": r.get::<_, i32>(3),
                    "tables_total": r.get::<_, i32>(4),
                    "current_table": r.get::<_, Option<String>>(5),
                    "bytes": r.get::<_, i64>(6),
                    "eta_seconds": r.get::<_, Option<i32>>(7),
                    "error": r.get::<_, Option<String>>(8),
                })
            })
            .collect();
        if let Some(id) = &self.snapshot_id {
            if items.is_empty() {
                bail!("no snapshot {id} (or not yours): see `steep snapshot list`");
            }
        }
        ctx.out.json(&items)?;
        if items.is_empty() {
            ctx.out.note("no snapshots in flight");
            return Ok(());
        }
        let body: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    i["snapshot_id"].as_str().unwrap_or("").into(),
                    i["phase"].as_str().unwrap_or("-").into(),
                    format!("{:.1}%", i["percent"].as_f64().unwrap_or(0.0)),
                    format!("{}/{}", i["tables_completed"], i["tables_total"]),
                    i["current_table"].as_str().unwrap_or("-").into(),
                    human_bytes(i["bytes"].as_i64().unwrap_or(0)),
                    i["eta_seconds"]
                        .as_i64()
                        .map(|s| format!("{s}s"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        ctx.out.line(table(
            &[
                "snapshot", "phase", "done", "tables", "table", "bytes", "eta",
            ],
            &body,
        ));
        Ok(())
    }
}

#[derive(Args)]
pub struct WaitArgs {
    snapshot_id: String,
}

impl WaitArgs {
    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        follow_snapshot(ctx, &mut c, &self.snapshot_id)
    }
}

#[derive(Args)]
pub struct CancelArgs {
    snapshot_id: String,
}

impl CancelArgs {
    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let ok: bool = c
            .query_one(
                "SELECT steep_repl.cancel_snapshot($1)",
                &[&self.snapshot_id],
            )
            .map_err(db_error)?
            .get(0);
        if !ok {
            bail!(
                "snapshot {} is not pending or running (or not yours): see `steep snapshot list`",
                self.snapshot_id
            );
        }
        let op = snapshot_operation(&mut c, &self.snapshot_id)?;
        let status = wait_for_end(&mut c, op)?;
        ctx.out.status(
            "Cancelled",
            format!("snapshot {} (now {status})", self.snapshot_id),
        );
        ctx.out
            .json(&json!({ "snapshot_id": self.snapshot_id, "status": status }))
    }
}
