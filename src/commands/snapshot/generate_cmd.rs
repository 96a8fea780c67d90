//! `steep snapshot generate`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::client_run::{find_pg_tool, outcome_of, run_local, CliConnect, Recorder};
use super::follow::follow_snapshot;
use super::mode::{resolve_mode, Mode, ModeArgs};
use crate::context::Ctx;
use steep::cli::follow::human_bytes;
use steep::db_error::db_error;
use steep::engine::compress::Compression;
use steep::engine::counters::Counters;
use steep::engine::generate::{self, GenerateOptions, Selection};
use steep::engine::manifest::Manifest;
use steep::engine::new_snapshot_id;
use steep::engine::snapshot_row::Totals;

/// clap value parser for `--compression`: a known algorithm and a level in its range.
pub(super) fn compression_arg(s: &str) -> Result<String, String> {
    Compression::parse(s, None)
        .map(|_| s.to_string())
        .map_err(|e| format!("{e:#}"))
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Directory to write (new or empty). In direct mode a path on the server: relative to
    /// steep_repl.snapshot_dir.
    #[arg(long, short = 'o', value_name = "DIR")]
    output: String,
    /// none, gzip, lz4 or zstd (optionally :LEVEL, e.g. zstd:9).
    #[arg(long, default_value = "zstd", value_parser = compression_arg)]
    compression: String,
    /// Compression level (gzip 1-9, lz4 1-12, zstd 1-19).
    #[arg(long)]
    level: Option<i32>,
    /// Connections reading in parallel (and ranges per large table).
    #[arg(long, short = 'j', default_value_t = 4, value_parser = crate::commands::parallel_arg)]
    parallel: i32,
    /// Leave out the schema (the pg_dump archive that `apply --schema create` restores).
    #[arg(long)]
    no_schema: bool,
    /// Only the tables matching PATTERN, as pg_dump -t (repeatable; pg_dump resolves it).
    #[arg(long = "table", short = 't', value_name = "PATTERN")]
    tables: Vec<String>,
    /// Leave out the tables matching PATTERN, as pg_dump -T (repeatable).
    #[arg(long = "exclude-table", short = 'T', value_name = "PATTERN")]
    exclude_tables: Vec<String>,
    /// Only the schemas matching PATTERN, as pg_dump -n (repeatable).
    #[arg(long = "schema", short = 'n', value_name = "PATTERN")]
    schemas: Vec<String>,
    /// Leave out the schemas matching PATTERN, as pg_dump -N (repeatable).
    #[arg(long = "exclude-schema", short = 'N', value_name = "PATTERN")]
    exclude_schemas: Vec<String>,
    /// Client mode: tables larger than this are read in several pieces in parallel.
    #[arg(long, value_name = "MB", default_value_t = 256)]
    chunk_size_mb: u64,
    /// Direct mode: queue it and return at once.
    #[arg(long)]
    detach: bool,
    /// Take the snapshot exactly at a new logical replication slot's consistent point (pgoutput;
    /// created and kept on the source, recorded in the manifest): a subscription created on
    /// that slot with copy_data = false continues where the snapshot ends (create its
    /// publication before the slot: pgoutput reads publications as of each change). Client mode.
    #[arg(long, value_name = "NAME", conflicts_with = "detach")]
    slot: Option<String>,
    #[command(flatten)]
    mode: ModeArgs,
}

impl GenerateArgs {
    fn selection(&self) -> Selection {
        Selection {
            tables: self.tables.clone(),
            exclude_tables: self.exclude_tables.clone(),
            schemas: self.schemas.clone(),
            exclude_schemas: self.exclude_schemas.clone(),
        }
    }

    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        if let (Some((_, in_spec)), Some(level)) = (self.compression.split_once(':'), self.level) {
            if in_spec.trim() != level.to_string() {
                return Err(crate::commands::Usage(format!(
                    "--compression {} and --level {level} contradict each other: give the level \
                     once",
                    self.compression
                ))
                .into());
            }
        }
        let compression = Compression::parse(&self.compression, self.level)
            .map_err(|e| crate::commands::Usage(format!("{e:#}")))?;
        // The server that answered: every connection of this run (and pg_dump/pg_restore) goes
        // to it, even when the connection names several hosts.
        let (mut c, params) = ctx.open()?;
        let mode =
            match &self.slot {
                // The slot's exported snapshot lives as long as the replication connection that
                // made it: the CLI holds that connection, so the CLI copies.
                Some(_) if self.mode.direct => return Err(crate::commands::Usage(
                    "--slot runs in client mode (the CLI holds the replication connection whose \
                     snapshot the copy uses): leave out --direct"
                        .into(),
                )
                .into()),
                Some(_) => Mode::Client,
                None => resolve_mode(ctx, &mut c, &self.mode)?,
            };
        match mode {
            Mode::Direct => {
                let spec = format!("{}:{}", compression.name(), compression.level);
                let with_schema = !self.no_schema;
                let sel = self.selection();
                let current: bool = c
                    .query_one(
                        "SELECT to_regprocedure('steep_repl.start_snapshot(text,text,integer,boolean,text[],text[],text[],text[])') IS NOT NULL",
                        &[],
                    )
                    .map_err(db_error)?
                    .get(0);
                if !current && !sel.is_empty() {
                    bail!(
                        "the server's steep_repl is older than 0.4.0 and cannot choose tables \
                         (-t, -T, -n, -N): upgrade it with `steep init`"
                    );
                }
                let row = if current {
                    c.query_one(
                        "SELECT snapshot_id, storage_path
                         FROM steep_repl.start_snapshot($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            &self.output,
                            &spec,
                            &self.parallel,
                            &with_schema,
                            &sel.tables,
                            &sel.exclude_tables,
                            &sel.schemas,
                            &sel.exclude_schemas,
                        ],
                    )
                } else {
                    c.query_one(
                        "SELECT snapshot_id, storage_path FROM steep_repl.start_snapshot($1, $2, $3, $4)",
                        &[&self.output, &spec, &self.parallel, &with_schema],
                    )
                }
                .map_err(db_error)?;
                let (id, path): (String, String) = (row.get(0), row.get(1));
                ctx.out.status(
                    "Queued",
                    format!("snapshot {id} into {path} (on the server)"),
                );
                if self.detach {
                    return ctx
                        .out
                        .json(&json!({ "snapshot_id": id, "storage_path": path }));
                }
                follow_snapshot(ctx, &mut c, &id)
            }
            Mode::Client => {
                let id = new_snapshot_id();
                let output = PathBuf::from(&self.output);
                let info = steep::engine::catalog::server_info(&mut c)?;
                let pg_dump = if self.no_schema {
                    None
                } else {
                    let need = (info.server_version_num / 10000) as u32;
                    let d = find_pg_tool("pg_dump", "STEEP_PG_DUMP", need);
                    if d.is_none() {
                        ctx.out.warn(format!(
                            "no pg_dump {} or newer found (PATH, STEEP_PG_DUMP): the snapshot has no \
                             schema DDL, so apply it with --schema verify",
                            info.server_version_num / 10000
                        ));
                    }
                    d
                };
                drop(c);
                let opts = GenerateOptions {
                    output: output.clone(),
                    snapshot_id: id.clone(),
                    mode: "client".into(),
                    run: format!("client pid {}", std::process::id()),
                    compression,
                    parallel: self.parallel as usize,
                    pg_dump,
                    chunk_bytes: self.chunk_size_mb.max(1) << 20,
                    selection: self.selection(),
                    slot: None,
                };
                // The slot first: its snapshot is the copy's, valid while `created` is open.
                let created = match &self.slot {
                    Some(name) => {
                        let created =
                            steep::engine::replication::slot::create(&params, name, true)?;
                        ctx.out.status(
                            "Created",
                            format!(
                                "slot {name} (pgoutput) at {}: the snapshot ends exactly there",
                                created.consistent_point
                            ),
                        );
                        Some(created)
                    }
                    None => None,
                };
                let mut opts = opts;
                if let Some(c) = &created {
                    opts.slot = Some(steep::engine::generate::SlotSnapshot {
                        slot: c.name.clone(),
                        consistent_point: c.consistent_point.clone(),
                        snapshot: c.snapshot.clone().unwrap_or_default(),
                    });
                }
                let abs = std::fs::canonicalize(
                    output
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new(".")),
                )
                .map(|p| p.join(output.file_name().unwrap_or_default()))
                .unwrap_or_else(|_| output.clone());
                let mut rec = Recorder::start(
                    ctx,
                    &params,
                    &id,
                    "generate",
                    &abs.to_string_lossy(),
                    compression.name(),
                    self.parallel,
                );
                ctx.out.status(
                    "Generating",
                    format!("snapshot {id} into {} (client mode)", output.display()),
                );
                let progress = Arc::new(Counters::default());
                let src = CliConnect(params.clone());
                let started = Instant::now();
                let (result, _) = run_local(ctx, "generate", &progress, &mut rec, || {
                    generate::generate(&src, &opts, &progress)
                });
                drop(created);
                if let (Err(_), Some(name)) = (&result, &self.slot) {
                    // A slot without its snapshot would only retain WAL.
                    if let Ok(mut c) = steep::cli::client::connect(&params) {
                        if steep::engine::replication::slot::drop_one(&mut c, name).is_ok() {
                            ctx.out
                                .note(format!("removed slot {name}: the snapshot failed"));
                        }
                    }
                }
                let (status, err) = outcome_of(&result);
                if let Some(r) = rec {
                    r.finish(
                        status,
                        err.as_deref(),
                        result.as_ref().ok().map(Totals::of_generate),
                    );
                }
                let m = result?;
                report_generated(ctx, &m, &output.to_string_lossy(), started.elapsed())
            }
        }
    }
}

pub(super) fn report_generated(ctx: &Ctx, m: &Manifest, path: &str, took: Duration) -> Result<()> {
    let (raw, stored) = (m.raw_bytes(), m.stored_bytes());
    let mut summary = m.summary();
    summary["path"] = json!(path);
    summary["seconds"] = json!(took.as_secs_f64());
    ctx.out.json(&summary)?;
    ctx.out.status(
        "Generated",
        format!(
            "snapshot {} in {}: {} tables, {} rows, {} raw -> {} stored ({}), {:.1} s",
            m.snapshot_id,
            path,
            m.tables.len(),
            m.rows(),
            human_bytes(raw as i64),
            human_bytes(stored as i64),
            m.compression.name(),
            took.as_secs_f64()
        ),
    );
    Ok(())
}
