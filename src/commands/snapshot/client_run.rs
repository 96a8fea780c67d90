//! Client mode's run of the engine: its connections, the driver loop drawing the bar and
//! recording the snapshots row, and finding pg_dump/pg_restore here.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::context::Ctx;
use steep::cli::follow::Renderer;
use steep::conn::ConnParams;
use steep::engine::counters::Counters;
use steep::engine::driver::drive;
use steep::engine::error::ErrorKind;
use steep::engine::schema_archive::tool_version;
use steep::engine::snapshot_row::{self, Totals};
use steep::engine::Connect;
use steep::progress_record::ProgressEvent;

/// The engine's connections in client mode: the CLI's own connection parameters.
pub(crate) struct CliConnect(pub(crate) ConnParams);

impl Connect for CliConnect {
    fn connect(&self) -> Result<postgres::Client> {
        steep::cli::client::connect(&self.0)
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
pub(crate) fn run_local<T: Send>(
    ctx: &Ctx,
    label: &str,
    progress: &Arc<Counters>,
    record: &mut Option<Recorder>,
    work: impl FnOnce() -> Result<T> + Send,
) -> (Result<T>, ProgressEvent) {
    steep::cli::follow::catch_interrupts();
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
            if steep::cli::follow::interrupted() {
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
pub(crate) struct Recorder {
    client: postgres::Client,
    id: String,
}

impl Recorder {
    pub(super) fn start(
        ctx: &Ctx,
        params: &ConnParams,
        id: &str,
        kind: &str,
        path: &str,
        compression: &str,
        parallel: i32,
    ) -> Option<Self> {
        let mut client = steep::cli::client::connect(params).ok()?;
        let has = client
            .query_one(&format!("SELECT {}", snapshot_row::AVAILABLE), &[])
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

    pub(super) fn finish(mut self, status: &str, error: Option<&str>, totals: Option<Totals>) {
        let totals = totals.map(|t| t.to_json());
        let _ = self
            .client
            .execute(snapshot_row::END, &[&self.id, &status, &error, &totals]);
    }
}

pub(super) fn outcome_of<T>(r: &Result<T>) -> (&'static str, Option<String>) {
    match r {
        Ok(_) => ("complete", None),
        Err(e) if ErrorKind::of(e) == Some(ErrorKind::Cancelled) => {
            ("cancelled", Some(format!("{e:#}")))
        }
        Err(e) => ("failed", Some(format!("{e:#}"))),
    }
}

/// A pg_dump or pg_restore (`name`) of major version `need` or newer: `env` (STEEP_PG_DUMP,
/// STEEP_PG_RESTORE), then PATH, then the PostgreSQL steep installed.
pub(crate) fn find_pg_tool(name: &str, env: &str, need: u32) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(env) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    if let Ok(i) = steep::cli::sandbox::PgInstall::locate(None) {
        candidates.push(i.bin(name));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file() && tool_version(p).is_some_and(|(_, major)| major >= need))
}
