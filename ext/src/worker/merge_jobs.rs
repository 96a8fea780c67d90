//! The merge analysis job: the shared engine between this server (sessions restricted to the
//! job's owner) and the peer, which the owner must still be allowed to use when the job runs.

use pgrx::prelude::*;
use serde_json::{json, Value};
use steep::engine::counters::Counters;
use steep::engine::merge::{self, AnalyzeOptions};

use crate::merge_api::{resolve_peer, store, PeerConnect};
use crate::worker::job::{JobCtx, JobError};
use crate::worker::snapshot_jobs::{drive, param_str, strings, worker_connect};
use crate::worker::tx;

pub fn analyze(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let p = ctx.job.params.clone();
    let peer = param_str(&p, "peer")?;
    let merge_id = ctx
        .job
        .merge_id
        .clone()
        .ok_or_else(|| JobError::Failed("the job names no merge".into()))?;
    // Checked again as the owner now: a membership revoked since queueing counts.
    let owner = ctx.job.created_by.clone();
    let (params, _) = tx(move || resolve_peer(&owner, &peer))?.map_err(JobError::Failed)?;
    {
        let id = merge_id.clone();
        tx(move || {
            Spi::run_with_args(
                "UPDATE steep_repl.merges SET status = 'running',
                        started_at = pg_catalog.clock_timestamp()
                  WHERE merge_id = $1 AND status = 'pending'",
                &[id.into()],
            )
        })?
        .map_err(|e| JobError::Failed(e.to_string()))?;
    }
    let local = worker_connect(ctx)?;
    let peer = PeerConnect(params);
    let opts = AnalyzeOptions {
        tables: strings(&p["tables"]),
        parallel: p["parallel"].as_u64().unwrap_or(2) as usize,
    };
    let progress = Counters::default();
    let a = drive(ctx, &progress, || {
        merge::analyze(&local, &peer, &opts, &progress)
    })?;
    let total = |f: fn(&merge::TableOverlap) -> u64| a.tables.iter().map(f).sum::<u64>();
    let summary = json!({
        "merge_id": merge_id,
        "tables": a.tables.len(),
        "match": total(|t| t.matched),
        "conflict": total(|t| t.conflict),
        "local_only": total(|t| t.local_only),
        "remote_only": total(|t| t.remote_only),
    });
    let (id, tables, conflicts) = (
        merge_id.clone(),
        a.tables.len() as i32,
        total(|t| t.conflict) as i64,
    );
    tx(move || {
        store(&id, &a)?;
        Spi::run_with_args(
            "UPDATE steep_repl.merges SET tables_total = $2, tables_completed = $2,
                    conflict_count = $3
              WHERE merge_id = $1",
            &[id.into(), tables.into(), conflicts.into()],
        )
    })?
    .map_err(|e| JobError::Failed(format!("recording the analysis: {e}")))?;
    Ok(summary)
}
