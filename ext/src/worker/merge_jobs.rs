//! The merge jobs — the overlap analysis, and the merge itself — driving the shared engine
//! between this server (sessions restricted to the job's owner) and the peer, which the owner must
//! still be allowed to use when the job runs.

use pgrx::prelude::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use steep::engine::counters::Counters;

use steep::engine::merge::apply::{self, MergeOptions};
use steep::engine::merge::conflicts::{self, Conflict};
use steep::engine::merge::{self, AnalyzeOptions};

use crate::merge_api::{resolve_peer, store, PeerConnect};
use crate::worker::job::{JobCtx, JobError};
use crate::worker::snapshot_jobs::{drive, param_str, strings, worker_connect};
use crate::worker::tx;

/// The job's merge and its peer's connection parameters — the peer checked again as the owner
/// now: a membership revoked since queueing counts.
fn merge_and_peer(ctx: &JobCtx) -> Result<(String, steep::conn::ConnParams), JobError> {
    let peer = param_str(&ctx.job.params, "peer")?;
    let merge_id = ctx
        .job
        .merge_id
        .clone()
        .ok_or_else(|| JobError::Failed("the job names no merge".into()))?;
    let owner = ctx.job.created_by.clone();
    let (params, _) = tx(move || resolve_peer(&owner, &peer))?.map_err(JobError::Failed)?;
    Ok((merge_id, params))
}

pub fn analyze(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let p = ctx.job.params.clone();
    let (merge_id, params) = merge_and_peer(ctx)?;
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

/// A decision waited for at most this long unless the merge's options say otherwise.
const DECISION_TIMEOUT: Duration = Duration::from_secs(3600);

fn set_status(merge_id: &str, status: &'static str) -> Result<(), JobError> {
    let id = merge_id.to_string();
    tx(move || {
        Spi::run_with_args(
            "UPDATE steep_repl.merges SET status = $2,
                    started_at = coalesce(started_at, pg_catalog.clock_timestamp())
              WHERE merge_id = $1",
            &[id.into(), status.into()],
        )
    })?
    .map_err(|e| JobError::Failed(e.to_string()))
}

/// Keep the conflicts the operator decides on, with both images.
fn store_conflicts(merge_id: &str, found: &[Conflict]) -> Result<(), JobError> {
    let mut cols: [Vec<String>; 3] = Default::default();
    let mut hashes: [Vec<Option<i64>>; 2] = Default::default();
    let mut json: [Vec<String>; 4] = Default::default();
    for c in found {
        let (schema, table) =
            conflicts::split_table(&c.table).map_err(|e| JobError::Failed(format!("{e:#}")))?;
        cols[0].push(schema);
        cols[1].push(table);
        cols[2].push(c.key.clone());
        hashes[0].push(c.local_hash.parse().ok());
        hashes[1].push(c.remote_hash.parse().ok());
        json[0].push(c.pk.to_string());
        json[1].push(c.local_row.to_string());
        json[2].push(c.remote_row.to_string());
        json[3].push(serde_json::to_string(&c.differing_columns).unwrap_or_default());
    }
    let id = merge_id.to_string();
    tx(move || {
        // This run's conflicts only: one stored by an earlier attempt may since match.
        Spi::run_with_args(
            "DELETE FROM steep_repl.merge_conflicts WHERE merge_id = $1",
            &[id.clone().into()],
        )?;
        let [s, t, k] = cols;
        let [lh, rh] = hashes;
        let [pk, l, r, d] = json;
        Spi::run_with_args(
            conflicts::STORE,
            &[
                id.into(),
                s.into(),
                t.into(),
                k.into(),
                lh.into(),
                rh.into(),
                pk.into(),
                l.into(),
                r.into(),
                d.into(),
            ],
        )
    })?
    .map_err(|e| JobError::Failed(format!("storing the conflicts: {e}")))
}

fn undecided(merge_id: &str) -> Result<i64, JobError> {
    let id = merge_id.to_string();
    tx(move || Spi::get_one_with_args::<i64>(conflicts::UNDECIDED_COUNT, &[id.into()]))?
        .map(|n| n.unwrap_or(0))
        .map_err(|e| JobError::Failed(e.to_string()))
}

/// The merge job: conflicts of tables whose strategy asks stored for the operator (and, unless
/// told not to, waited on: no lock is held meanwhile), then the engine's merge.
pub fn merge(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let (merge_id, params) = merge_and_peer(ctx)?;
    let owner = ctx.job.created_by.clone();
    // From the job's own row, which only roles that may act as its owner can write (the merges
    // row is writable by any role with the owner's privileges).
    let options = ctx.job.params["options"].clone();
    let opts = MergeOptions::from_stored(
        &merge_id,
        strings(&ctx.job.params["tables"]),
        &options,
        &owner,
    )
    .map_err(JobError::engine)?;
    set_status(&merge_id, "running")?;
    let local = worker_connect(ctx)?;
    let peer = PeerConnect(params);
    if opts.ask_tables().is_some() && !opts.dry_run {
        let progress = Counters::default();
        let found = drive(ctx, &progress, || {
            conflicts::asked(&local, &peer, &opts, &progress)
        })?;
        store_conflicts(&merge_id, &found)?;
        let wait = options["wait_for_decisions"].as_bool().unwrap_or(true);
        let timeout = options["decision_timeout_seconds"]
            .as_u64()
            .map(Duration::from_secs)
            .unwrap_or(DECISION_TIMEOUT);
        if wait && undecided(&merge_id)? > 0 {
            set_status(&merge_id, "awaiting_decisions")?;
            ctx.event.phase = Some("awaiting_decisions".into());
            ctx.event.table = None;
            ctx.publish(true);
            let since = Instant::now();
            loop {
                ctx.sleep(Duration::from_millis(200))?;
                let left = undecided(&merge_id)?;
                if left == 0 {
                    break;
                }
                if since.elapsed() >= timeout {
                    set_status(&merge_id, "running")?;
                    return Err(JobError::Failed(format!(
                        "{left} conflicts still undecided after {} s; the decisions given are \
                         kept: resume with steep merge run --resume {merge_id}",
                        timeout.as_secs()
                    )));
                }
            }
            set_status(&merge_id, "running")?;
        }
    }
    let progress = Counters::default();
    let report = drive(ctx, &progress, || {
        apply::merge(&local, &peer, &opts, &progress)
    })?;
    let result = serde_json::to_value(&report).unwrap_or_default();
    let apply::Totals {
        rows,
        conflicts,
        undecided,
    } = report.totals();
    let (id, r, n) = (merge_id.clone(), result.clone(), report.tables.len() as i32);
    tx(move || {
        Spi::run_with_args(
            "UPDATE steep_repl.merges SET result = $2, tables_total = $3, tables_completed = $3,
                    rows_merged = $4, conflict_count = $5,
                    status = CASE WHEN $6 THEN 'awaiting_decisions' ELSE status END
              WHERE merge_id = $1",
            &[
                id.into(),
                pgrx::JsonB(r).into(),
                n.into(),
                (rows as i64).into(),
                (conflicts as i64).into(),
                (undecided > 0).into(),
            ],
        )
    })?
    .map_err(|e| JobError::Failed(format!("recording the merge: {e}")))?;
    Ok(result)
}
