//! `steep snapshot generate|apply|progress|wait|cancel|list|verify`.
//!
//! Direct mode queues the work for a background worker on the server (files live on the server,
//! under steep_repl.snapshot_dir); client mode runs the same engine here over our own connections
//! (files live where steep runs). Auto picks direct when the workers are available.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::commands::{require_extension, Blocking};
use crate::context::Ctx;
use steep::conn::ConnParams;
use steep::db_error::db_error;
use steep::engine::apply::{self, ApplyOptions, SchemaMode};
use steep::engine::compress::Compression;
use steep::engine::driver::drive;
use steep::engine::error::ErrorKind;
use steep::engine::generate::{self, GenerateOptions};
use steep::engine::manifest::Manifest;
use steep::engine::progress::Progress;
use steep::engine::schema_archive::{tool_major, tool_version};
use steep::engine::snapshot_row::{self, Totals};
use steep::engine::{files, new_snapshot_id, Connect};
use steep::output::table;
use steep::progress::{human_bytes, wait_for_end, Ending, Follower, Renderer};
use steep::progress_event::ProgressEvent;

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Take a consistent snapshot of every table into a directory.
    Generate(GenerateArgs),
    /// Load a snapshot into this server.
    Apply(ApplyArgs),
    /// Progress of snapshots in flight (or of one).
    Progress(ProgressArgs),
    /// Follow a direct-mode snapshot until it ends.
    Wait(WaitArgs),
    /// Cancel a direct-mode snapshot.
    Cancel(CancelArgs),
    /// Snapshots recorded in this database.
    List(ListArgs),
    /// Check a snapshot directory offline: manifest, sizes, checksums, row counts.
    Verify(VerifyArgs),
}

impl SnapshotArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            SnapshotCommand::Generate(a) => a.execute(ctx),
            SnapshotCommand::Apply(a) => a.execute(ctx),
            SnapshotCommand::Progress(a) => a.execute(ctx),
            SnapshotCommand::Wait(a) => a.execute(ctx),
            SnapshotCommand::Cancel(a) => a.execute(ctx),
            SnapshotCommand::List(a) => a.execute(ctx),
            SnapshotCommand::Verify(a) => a.execute(ctx),
        }
    }
}

#[derive(Args)]
struct ModeArgs {
    /// Run in a background worker on the server (files on the server).
    #[arg(long, conflicts_with = "client")]
    direct: bool,
    /// Run here, over our own connections (files here; works without the extension).
    #[arg(long)]
    client: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    Client,
}

/// Which mode to use, and why not direct when it is not (for the one-line notice).
fn resolve_mode(ctx: &Ctx, c: &mut postgres::Client, m: &ModeArgs) -> Result<Mode> {
    if m.client {
        return Ok(Mode::Client);
    }
    let row = c.query_one(
        "SELECT to_regprocedure('steep_repl.start_snapshot(text,text,integer,boolean)') IS NOT NULL,
                to_regprocedure('steep_repl.bgworker_available()') IS NOT NULL",
        &[],
    )?;
    let (has_api, has_check): (bool, bool) = (row.get(0), row.get(1));
    let available = has_check
        && c.query_one("SELECT steep_repl.bgworker_available()", &[])?
            .get::<_, bool>(0);
    let why_not = if !has_api {
        "steep_repl 0.2.0 or newer is not installed in this database (run `steep init`)"
    } else if !available {
        "steep_repl's background workers are not running (run `steep init --preload` and restart PostgreSQL)"
    } else {
        ""
    };
    match (m.direct, why_not.is_empty()) {
        (_, true) => Ok(Mode::Direct),
        (true, false) => bail!("--direct is not possible: {why_not}"),
        (false, false) => {
            ctx.out.note(format!("client mode: {why_not}"));
            Ok(Mode::Client)
        }
    }
}

/// The engine's connections in client mode: the CLI's own connection parameters.
struct CliConnect(ConnParams);

impl Connect for CliConnect {
    fn connect(&self) -> Result<postgres::Client> {
        steep::client::connect(&self.0)
    }

    fn connect_wire(&self) -> Result<Option<steep::engine::wire::Wire>> {
        steep::engine::wire::Wire::connect(&self.0)
    }

    fn tool_access(&self, _: steep::engine::Tool) -> Result<steep::engine::ToolAccess> {
        Ok(steep::engine::ToolAccess::Params {
            params: self.0.clone(),
            role: None,
        })
    }
}

/// Run an engine operation through the engine's driver, drawing its progress until it ends and
/// recording it (once a second) in its snapshots row; Ctrl-C cancels it (it cleans up after
/// itself). Returns the result and the last progress record.
fn run_local<T: Send>(
    ctx: &Ctx,
    label: &str,
    progress: &Arc<Progress>,
    record: &mut Option<Recorder>,
    work: impl FnOnce() -> Result<T> + Send,
) -> (Result<T>, ProgressEvent) {
    let mut r = Renderer::new(&ctx.out, label);
    let started = Instant::now();
    let base = ProgressEvent {
        op: label.into(),
        status: "running".into(),
        ..Default::default()
    };
    // The row gets the first progress at once, then once a second; a failure is said once.
    let mut last_record: Option<Instant> = None;
    let mut record_failed = false;
    let mut told = false;
    let driven = drive(
        progress,
        &base,
        |e| {
            r.render(e);
            if let Some(rec) = record.as_mut() {
                if last_record.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    if let Err(err) = rec.progress(e) {
                        if !record_failed {
                            ctx.out.warn(format!(
                                "not recording progress in steep_repl.snapshots: {}",
                                steep::db_error::describe(&err)
                            ));
                        }
                        record_failed = true;
                    }
                    last_record = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            if steep::progress::interrupted() {
                if !told {
                    ctx.out
                        .note("interrupted: cancelling (partial work is removed or rolled back)");
                    told = true;
                }
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
        work,
    );
    r.finish();
    ctx.out.verbose(format!(
        "{label} took {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    (driven.result, driven.last)
}

/// Keeps the snapshots row of a client-mode run through the SQL functions direct mode uses too
/// (when the server has steep_repl 0.4.0+ and the role may use them).
struct Recorder {
    client: postgres::Client,
    id: String,
}

impl Recorder {
    fn start(
        ctx: &Ctx,
        params: &ConnParams,
        id: &str,
        kind: &str,
        path: &str,
        compression: &str,
        parallel: i32,
    ) -> Option<Self> {
        let mut client = steep::client::connect(params).ok()?;
        let has = client
            .query_one(snapshot_row::AVAILABLE, &[])
            .ok()?
            .get::<_, bool>(0);
        if !has {
            return None;
        }
        match client.execute(
            snapshot_row::BEGIN,
            &[&id, &kind, &path, &compression, &parallel],
        ) {
            Ok(_) => Some(Self {
                client,
                id: id.to_string(),
            }),
            Err(e) => {
                ctx.out.warn(format!(
                    "not recording the snapshot in steep_repl.snapshots: {}",
                    steep::db_error::describe(&e)
                ));
                None
            }
        }
    }

    fn progress(&mut self, e: &ProgressEvent) -> Result<u64, postgres::Error> {
        self.client
            .execute(snapshot_row::RECORD, &[&self.id, &e.to_payload()])
    }

    fn finish(mut self, status: &str, error: Option<&str>, totals: Option<Totals>) {
        let totals = totals.map(|t| t.to_json());
        let _ = self
            .client
            .execute(snapshot_row::END, &[&self.id, &status, &error, &totals]);
    }
}

fn outcome_of<T>(r: &Result<T>) -> (&'static str, Option<String>) {
    match r {
        Ok(_) => ("complete", None),
        Err(e) if ErrorKind::of(e) == Some(ErrorKind::Cancelled) => {
            ("cancelled", Some(format!("{e:#}")))
        }
        Err(e) => ("failed", Some(format!("{e:#}"))),
    }
}

/// clap value parser for `--compression`: a known algorithm and a level in its range.
fn compression_arg(s: &str) -> Result<String, String> {
    Compression::parse(s, None)
        .map(|_| s.to_string())
        .map_err(|e| format!("{e:#}"))
}

/// A pg_dump or pg_restore (`name`) of major version `need` or newer: `env` (STEEP_PG_DUMP,
/// STEEP_PG_RESTORE), then PATH, then the PostgreSQL steep installed.
fn find_pg_tool(name: &str, env: &str, need: u32) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(env) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    if let Ok(i) = steep::sandbox::PgInstall::locate(None) {
        candidates.push(i.bin(name));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file() && tool_version(p).is_some_and(|(_, major)| major >= need))
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
    #[arg(long, short = 'j', default_value_t = 4, value_parser = super::parallel_arg)]
    parallel: i32,
    /// Leave out the schema (the pg_dump archive that `apply --schema create` restores).
    #[arg(long)]
    no_schema: bool,
    /// Client mode: tables larger than this are read in several pieces in parallel.
    #[arg(long, value_name = "MB", default_value_t = 256)]
    chunk_size_mb: u64,
    /// Direct mode: queue it and return at once.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    mode: ModeArgs,
}

impl GenerateArgs {
    fn execute(&self, ctx: &Ctx) -> Result<()> {
        if let (Some((_, in_spec)), Some(level)) = (self.compression.split_once(':'), self.level) {
            if in_spec.trim() != level.to_string() {
                return Err(super::Usage(format!(
                    "--compression {} and --level {level} contradict each other: give the level \
                     once",
                    self.compression
                ))
                .into());
            }
        }
        let compression = Compression::parse(&self.compression, self.level)
            .map_err(|e| super::Usage(format!("{e:#}")))?;
        // The server that answered: every connection of this run (and pg_dump/pg_restore) goes
        // to it, even when the connection names several hosts.
        let (mut c, params) = ctx.open()?;
        match resolve_mode(ctx, &mut c, &self.mode)? {
            Mode::Direct => {
                let spec = format!("{}:{}", compression.name(), compression.level);
                let row = c
                    .query_one(
                        "SELECT snapshot_id, storage_path FROM steep_repl.start_snapshot($1, $2, $3, $4)",
                        &[&self.output, &spec, &self.parallel, &!self.no_schema],
                    )
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
                    compression,
                    parallel: self.parallel as usize,
                    pg_dump,
                    chunk_bytes: self.chunk_size_mb.max(1) << 20,
                };
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
                let progress = Arc::new(Progress::default());
                let src = CliConnect(params.clone());
                let started = Instant::now();
                let (result, _) = run_local(ctx, "generate", &progress, &mut rec, || {
                    generate::generate(&src, &opts, &progress)
                });
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

fn report_generated(ctx: &Ctx, m: &Manifest, path: &str, took: Duration) -> Result<()> {
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

#[derive(Args)]
pub struct ApplyArgs {
    /// Snapshot directory (in direct mode a path on the server).
    #[arg(long, short = 'i', value_name = "DIR")]
    input: String,
    /// Connections loading in parallel.
    #[arg(long, short = 'j', default_value_t = 4, value_parser = super::parallel_arg)]
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
    fn execute(&self, ctx: &Ctx) -> Result<()> {
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
                let progress = Arc::new(Progress::default());
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

/// The work_queue operation that runs a direct-mode snapshot.
fn snapshot_operation(c: &mut postgres::Client, snapshot_id: &str) -> Result<i64> {
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
fn follow_snapshot(ctx: &Ctx, c: &mut postgres::Client, snapshot_id: &str) -> Result<()> {
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
    fn execute(&self, ctx: &Ctx) -> Result<()> {
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
    fn execute(&self, ctx: &Ctx) -> Result<()> {
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
    fn execute(&self, ctx: &Ctx) -> Result<()> {
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

#[derive(Args)]
pub struct ListArgs {}

impl ListArgs {
    fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let rows = c
            .query(
                "SELECT snapshot_id, kind, mode, status, storage_path, compression, table_count,
                        rows_processed, bytes_processed, created_at::text, error_message
                 FROM steep_repl.snapshots ORDER BY created_at, snapshot_id",
                &[],
            )
            .map_err(db_error)?;
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "snapshot_id": r.get::<_, String>(0),
                    "kind": r.get::<_, String>(1),
                    "mode": r.get::<_, String>(2),
                    "status": r.get::<_, String>(3),
                    "storage_path": r.get::<_, Option<String>>(4),
                    "compression": r.get::<_, String>(5),
                    "tables": r.get::<_, Option<i32>>(6),
                    "rows": r.get::<_, i64>(7),
                    "bytes": r.get::<_, i64>(8),
                    "created_at": r.get::<_, String>(9),
                    "error": r.get::<_, Option<String>>(10),
                })
            })
            .collect();
        ctx.out.json(&items)?;
        if items.is_empty() {
            ctx.out.note("no snapshots recorded here");
            return Ok(());
        }
        let body: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    i["snapshot_id"].as_str().unwrap_or("").into(),
                    format!(
                        "{} ({})",
                        i["kind"].as_str().unwrap_or(""),
                        i["mode"].as_str().unwrap_or("")
                    ),
                    i["status"].as_str().unwrap_or("").into(),
                    i["storage_path"].as_str().unwrap_or("-").into(),
                    human_bytes(i["bytes"].as_i64().unwrap_or(0)),
                    i["error"].as_str().unwrap_or("").into(),
                ]
            })
            .collect();
        ctx.out.line(table(
            &["snapshot", "kind", "status", "path", "bytes", "error"],
            &body,
        ));
        Ok(())
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Snapshot directory (here, where steep runs).
    dir: PathBuf,
    /// Files checked in parallel.
    #[arg(long, short = 'j', default_value_t = 4)]
    parallel: usize,
}

impl VerifyArgs {
    fn execute(&self, ctx: &Ctx) -> Result<()> {
        let m = Manifest::read(&self.dir)?;
        let progress = Arc::new(Progress::default());
        let mut rec = None;
        let problems = run_local(ctx, "verify", &progress, &mut rec, || {
            Ok(files::check(&self.dir, &m, true, self.parallel, &progress))
        })
        .0?;
        let nfiles: usize = m.tables.iter().map(|t| t.files.len()).sum::<usize>()
            + if m.schema.is_some() { 2 } else { 0 };
        ctx.out.json(&json!({
            "snapshot_id": m.snapshot_id,
            "ok": problems.is_empty(),
            "files": nfiles,
            "tables": m.tables.len(),
            "rows": m.rows(),
            "problems": problems,
        }))?;
        if let Some(p) = problems.first() {
            for p in &problems {
                ctx.out.line(format!("damaged: {p}"));
            }
            bail!(
                "snapshot {} is damaged: {p}{}",
                m.snapshot_id,
                if problems.len() > 1 {
                    format!(" (and {} more)", problems.len() - 1)
                } else {
                    String::new()
                }
            );
        }
        ctx.out.status(
            "Verified",
            format!(
                "snapshot {}: {nfiles} files, {} tables, {} rows: sizes, checksums and row counts match",
                m.snapshot_id,
                m.tables.len(),
                m.rows()
            ),
        );
        Ok(())
    }
}
