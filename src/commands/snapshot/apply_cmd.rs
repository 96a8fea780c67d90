//! `steep snapshot apply`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::client_run::{find_pg_tool, outcome_of, run_local, CliConnect, Recorder};
use super::follow::follow_snapshot;
use super::mode::{resolve_mode, Mode, ModeArgs};
use crate::commands::Blocking;
use crate::context::Ctx;
use steep::db_error::db_error;
use steep::engine::apply::{self, ApplyOptions, SchemaMode};
use steep::engine::counters::Counters;
use steep::engine::manifest::Manifest;
use steep::engine::new_snapshot_id;
use steep::engine::schema_archive::tool_major;
use steep::engine::snapshot_row::Totals;

#[derive(Args)]
pub struct ApplyArgs {
    /// Snapshot directory (in direct mode a path on the server).
    #[arg(long, short = 'i', value_name = "DIR")]
    input: String,
    /// Connections loading in parallel.
    #[arg(long, short = 'j', default_value_t = 4, value_parser = crate::commands::parallel_arg)]
    parallel: i32,
    /// What to do about the target's tables.
    #[arg(long, value_enum, default_value_t = SchemaMode::Verify)]
    schema: SchemaMode,
    /// Skip the checksum pass before loading (row counts are still checked).
    #[arg(long)]
    no_verify: bool,
    /// Continue a failed apply: tables whose row count already matches are skipped, and with
    /// --schema create so are the schema (when every table exists) and the indexes,
    /// constraints, triggers, policies and rules the target already has.
    #[arg(long)]
    resume: bool,
    /// Direct mode: queue it and return at once.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    mode: ModeArgs,
}

impl ApplyArgs {
    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        // The server that answered: every connection of this run (and pg_dump/pg_restore) goes
        // to it, even when the connection names several hosts.
        let (mut c, params) = ctx.open()?;
        match resolve_mode(ctx, &mut c, &self.mode)? {
            Mode::Direct => {
                let row = c
                    .query_one(
                        "SELECT snapshot_id, storage_path FROM steep_repl.start_apply($1, $2, $3, $4, $5)",
                        &[&self.input, &self.parallel, &!self.no_verify, &self.schema.name(), &self.resume],
                    )
                    .map_err(db_error)?;
                let (id, path): (String, String) = (row.get(0), row.get(1));
                ctx.out
                    .status("Queued", format!("apply of {path} as {id} (on the server)"));
                if self.detach {
                    return ctx
                        .out
                        .json(&json!({ "snapshot_id": id, "storage_path": path }));
                }
                follow_snapshot(ctx, &mut c, &id)
            }
            Mode::Client => {
                drop(c);
                let input = PathBuf::from(&self.input);
                // Read it first: a missing or malformed manifest is refused before anything else.
                let m = Manifest::read(&input)?;
                let id = new_snapshot_id();
                let mut rec = Recorder::start(
                    ctx,
                    &params,
                    &id,
                    "apply",
                    &input.to_string_lossy(),
                    m.compression.name(),
                    self.parallel,
                );
                // pg_restore as new as the pg_dump that wrote the schema archive.
                let pg_restore = match (&m.schema, self.schema) {
                    (Some(s), SchemaMode::Create) => {
                        find_pg_tool("pg_restore", "STEEP_PG_RESTORE", tool_major(&s.pg_dump))
                    }
                    _ => None,
                };
                let opts = ApplyOptions {
                    input: input.clone(),
                    parallel: self.parallel as usize,
                    verify_checksums: !self.no_verify,
                    schema: self.schema,
                    resume: self.resume,
                    pg_restore,
                };
                ctx.out.status(
                    "Applying",
                    format!(
                        "snapshot {} from {} (client mode)",
                        m.snapshot_id,
                        input.display()
                    ),
                );
                let progress = Arc::new(Counters::default());
                let dst = CliConnect(params.clone());
                let started = Instant::now();
                let (result, last) = run_local(ctx, "apply", &progress, &mut rec, || {
                    apply::apply(&dst, &opts, &progress)
                });
                let (status, err) = outcome_of(&result);
                if let Some(r) = rec {
                    r.finish(
                        status,
                        err.as_deref(),
                        result
                            .as_ref()
                            .ok()
                            .map(|s| Totals::of_apply(s, last.bytes)),
                    );
                }
                let s = match result {
                    Ok(s) => s,
                    Err(e) if e.downcast_ref::<apply::SchemaMismatch>().is_some() => {
                        return Err(Blocking(format!("{e:#}")).into())
                    }
                    Err(e) => return Err(e),
                };
                ctx.out
                    .json(&json!({ "summary": s, "seconds": started.elapsed().as_secs_f64() }))?;
                ctx.out.status(
                    "Applied",
                    format!(
                        "snapshot {}: {} tables loaded, {} already there, {} rows, {} sequences, {:.1} s",
                        s.snapshot_id,
                        s.tables_loaded,
                        s.tables_skipped,
                        s.rows_loaded,
                        s.sequences,
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(())
            }
        }
    }
}
