//! `steep snapshot apply`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
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
    /// Continue a failed apply, in the schema mode it was started with: tables whose load
    /// committed are skipped (steep_repl 0.4.0+ on the target records them; without it every
    /// table is loaded again), and with --schema create so are the schema (when every table
    /// exists) and the indexes, constraints, triggers, policies and rules the target has.
    #[arg(long)]
    resume: bool,
    /// Let the target's user triggers fire while rows are loaded. By default they do not, as in
    /// replication (the table's owner keeps them from firing inside the load's transaction).
    #[arg(long)]
    fire_triggers: bool,
    /// With --schema create: do not restore the objects' owners (everything belongs to the role
    /// that applies), as pg_restore --no-owner. By default owners are restored, and roles the
    /// target lacks (or the applying role may not become) are refused before anything changes.
    #[arg(long)]
    no_owner: bool,
    /// With --schema create: do not restore privileges (GRANT/REVOKE, default privileges), as
    /// pg_restore --no-privileges.
    #[arg(long)]
    no_privileges: bool,
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
                // A server whose steep_repl predates 0.4.0 lets triggers fire and drops owners and
                // privileges: say so, and refuse the options it does not have.
                let current: bool = c
                    .query_one(
                        "SELECT to_regprocedure('steep_repl.start_apply(text,integer,boolean,text,boolean,boolean,boolean,boolean)') IS NOT NULL",
                        &[],
                    )
                    .map_err(db_error)?
                    .get(0);
                if !current {
                    if self.fire_triggers || self.no_owner || self.no_privileges {
                        bail!(
                            "the server's steep_repl is older than 0.4.0 and has no \
                             --fire-triggers, --no-owner or --no-privileges: upgrade it with \
                             `steep init`"
                        );
                    }
                    ctx.out.warn(
                        "the server's steep_repl is older than 0.4.0: its worker lets the target's \
                         user triggers fire during the load and restores no owners or \
                         privileges; upgrade it with `steep init`",
                    );
                }
                let verify = !self.no_verify;
                let schema = self.schema.name();
                let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    vec![&self.input, &self.parallel, &verify, &schema, &self.resume];
                // (Older servers take five arguments.)
                if current {
                    args.extend([
                        &self.fire_triggers as &(dyn postgres::types::ToSql + Sync),
                        &self.no_owner,
                        &self.no_privileges,
                    ]);
                }
                let list: Vec<String> = (1..=args.len()).map(|i| format!("${i}")).collect();
                let row = c
                    .query_one(
                        &format!(
                            "SELECT snapshot_id, storage_path FROM steep_repl.start_apply({})",
                            list.join(", ")
                        ),
                        &args,
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
                // (Also for the large objects, whatever the schema mode.)
                let pg_restore = match (&m.schema, self.schema) {
                    (Some(s), SchemaMode::Create) => {
                        find_pg_tool("pg_restore", "STEEP_PG_RESTORE", tool_major(&s.pg_dump))
                    }
                    (Some(s), _) if s.large_objects.is_some() => {
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
                    fire_triggers: self.fire_triggers,
                    no_owner: self.no_owner,
                    no_privileges: self.no_privileges,
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
