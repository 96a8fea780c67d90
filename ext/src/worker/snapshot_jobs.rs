//! The snapshot jobs: the shared engine, driven from a background worker. The engine runs on its
//! own thread (pure Rust and client connections, nothing of PostgreSQL's API) while this thread
//! publishes its progress, watches for cancel and shutdown, and records the outcome.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use pgrx::prelude::*;
use serde_json::Value;
use steep::conn::ConnParams;
use steep::engine::apply::{self, ApplyOptions, SchemaMode};
use steep::engine::compress::Compression;
use steep::engine::counters::Counters;
use steep::engine::generate::{self, GenerateOptions, Selection};
use steep::engine::snapshot_row::Totals;
use steep::engine::{Connect, Tool, ToolAccess};
use steep::sql::quote_literal;

use crate::snapshot_api::{may_read_snapshot, may_use_server_files, snapshot_dir};
use crate::worker::job::{JobCtx, JobError};
use crate::worker::tx;

/// Connections to this server for the engine: steep_repl.worker_conninfo (default: our socket,
/// port and bootstrap superuser), each put at once under security-restricted operation as the
/// job's owner (`steep_repl._restrict_session`), before it runs anything else.
pub(crate) struct WorkerConnect {
    params: ConnParams,
    role: String,
    /// The sessions' application_name ("steep_repl job 12").
    label: String,
}

impl Connect for WorkerConnect {
    fn connect(&self) -> anyhow::Result<postgres::Client> {
        let mut c = self
            .params
            .to_config()?
            .connect(postgres::NoTls)
            .map_err(|e| {
                anyhow::anyhow!(
                    "the worker could not connect to its own server ({}): allow it in \
                     pg_hba.conf (e.g. `local all all peer` for the server's OS user) or set \
                     steep_repl.worker_conninfo",
                    steep::db_error::describe(&e)
                )
            })?;
        let [settings, restrict] = self.setup();
        c.batch_execute(&settings)?;
        c.batch_execute(&restrict)
            .map_err(|e| restrict_failed(steep::db_error::db_error(e)))?;
        Ok(c)
    }

    fn connect_wire(&self) -> anyhow::Result<Option<steep::engine::wire::Wire>> {
        let Some(mut w) = steep::engine::wire::Wire::connect(&self.params)? else {
            return Ok(None);
        };
        let [settings, restrict] = self.setup();
        w.simple(&settings)?;
        let is_super = w.query_value(&restrict).map_err(restrict_failed)?;
        w.acts_as_superuser = is_super.as_deref() == Some("t");
        Ok(Some(w))
    }

    fn tool_access(&self, tool: Tool) -> anyhow::Result<ToolAccess> {
        Ok(match tool {
            // Only pg_dump's own catalog queries run there, reading as the owner.
            Tool::PgDump => ToolAccess::Params {
                params: self.params.clone(),
                role: Some(self.role.clone()),
            },
            // The archive's SQL: only in sessions restricted to the owner.
            Tool::PgRestore => ToolAccess::Proxy {
                dbname: self.params.get("dbname").unwrap_or_default().to_string(),
                user: self.role.clone(),
            },
        })
    }
}

impl WorkerConnect {
    /// What every engine session runs first, as the login role and before anything else: the
    /// settings (literals read as written whatever the database's default says; a `role` the
    /// database sets for every session dropped), then — in a query of its own, so the settings
    /// apply to how it is read — the restriction to the job's owner.
    fn setup(&self) -> [String; 2] {
        [
            format!(
                "SET standard_conforming_strings = on; SET ROLE NONE; \
                 SET application_name = {}",
                quote_literal(&self.label)
            ),
            format!(
                "SELECT steep_repl._restrict_session({})",
                quote_literal(&self.role)
            ),
        ]
    }
}

/// The restriction failed. Permission denied (for the function, which is not PUBLIC's) means
/// worker_conninfo does not log in as a superuser: say so.
fn restrict_failed(e: anyhow::Error) -> anyhow::Error {
    if steep::db_error::sqlstate(&e) == Some("42501") {
        e.context(
            "steep_repl.worker_conninfo must log in as a superuser (its sessions then act as the \
             job's owner)",
        )
    } else {
        e
    }
}

impl WorkerConnect {
    /// The login parameters (the worker's own): for a replication connection, which cannot be
    /// restricted to a role, so only superusers' jobs use it.
    pub(crate) fn params(&self) -> &ConnParams {
        &self.params
    }

    /// Connections for work a backend does itself on behalf of its current user (in a
    /// transaction already, unlike a worker).
    pub(crate) fn for_role(role: &str, label: &str) -> Result<Self, String> {
        Ok(Self {
            params: worker_params()?,
            role: role.to_string(),
            label: label.to_string(),
        })
    }
}

fn worker_params() -> Result<ConnParams, String> {
    // The server's own settings, whoever the current user is (unix_socket_directories is for
    // pg_read_all_settings in SQL; a backend working for a plain role reads it here).
    let setting = |name: &str| -> Option<String> {
        let c = std::ffi::CString::new(name).ok()?;
        // SAFETY: GetConfigOption returns a pointer into the GUC's own storage (or NULL when
        // missing_ok); copied at once, on this backend's main thread.
        unsafe {
            let v = pg_sys::GetConfigOption(c.as_ptr(), true, false);
            (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
        }
    };
    let (sockets, port) = (setting("unix_socket_directories"), setting("port"));
    let (superuser, db) = Spi::connect(|c| {
        let r = c
            .select(
                "SELECT (SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10),
                        pg_catalog.current_database()::text",
                Some(1),
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((r.get::<String>(1)?, r.get::<String>(2)?))
    })
    .map_err(|e| e.to_string())?;
    let configured = crate::gucs::WORKER_CONNINFO
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.trim().is_empty());
    let mut p = match configured {
        Some(s) => {
            ConnParams::parse(&s).map_err(|e| format!("steep_repl.worker_conninfo: {e:#}"))?
        }
        None => ConnParams::default(),
    };
    let socket = sockets
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "localhost".into());
    for (k, v) in [
        ("host", socket),
        ("port", port.unwrap_or_else(|| "5432".into())),
        ("user", superuser.unwrap_or_else(|| "postgres".into())),
        ("dbname", db.unwrap_or_default()),
    ] {
        if p.get(k).is_none() {
            p.set(k, v).map_err(|e| e.to_string())?;
        }
    }
    Ok(p)
}

/// A program (pg_dump, pg_restore) next to this server's postgres binary.
pub(crate) fn server_program(name: &str) -> Option<PathBuf> {
    // SAFETY: my_exec_path is set once at backend start.
    let exec = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::my_exec_path).cast()) };
    let p = PathBuf::from(exec.to_string_lossy().into_owned())
        .parent()?
        .join(name);
    p.is_file().then_some(p)
}

pub(crate) fn param_str(p: &Value, key: &str) -> Result<String, JobError> {
    p[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| JobError::Failed(format!("the job has no {key} parameter")))
}

/// The path again, checked with the privileges of the job's owner.
fn checked_path(ctx: &JobCtx, for_write: bool) -> Result<PathBuf, JobError> {
    let path = param_str(&ctx.job.params, "path")?;
    let owner = ctx.job.created_by.clone();
    let privileged = tx(move || may_use_server_files(&owner, for_write))?;
    let path = steep::engine::paths::confine(&path, snapshot_dir().as_deref(), privileged)
        .map_err(JobError::Failed)?;
    if for_write {
        steep::engine::paths::refuse_nested(&path, snapshot_dir().as_deref())
            .map_err(JobError::Failed)?;
    } else {
        // A snapshot on the server is its maker's: checked again here, as the owner.
        let owner = ctx.job.created_by.clone();
        let p = path.clone();
        tx(move || may_read_snapshot(&owner, &p).map(|_| ()))?.map_err(JobError::Failed)?;
    }
    Ok(path)
}

/// Run `work` through the engine's driver (the loop client mode uses too), publishing its
/// progress from this thread until it ends; a cancel request or shutdown stops it.
pub(crate) fn drive<T: Send>(
    ctx: &mut JobCtx,
    progress: &Counters,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> Result<T, JobError> {
    let mut stop = None;
    let base = ctx.event.clone();
    let driven = steep::engine::driver::drive(
        progress,
        &base,
        |e| {
            ctx.event = e.clone();
            match ctx.sleep(Duration::from_millis(100)) {
                Ok(()) => ControlFlow::Continue(()),
                Err(s) => {
                    stop.get_or_insert(s);
                    ControlFlow::Break(())
                }
            }
        },
        work,
    );
    ctx.event = driven.last;
    if let Some(s) = stop {
        if let Err(e) = &driven.result {
            ctx.stop_detail = Some(format!("{e:#}"));
        }
        return Err(JobError::Stopped(s));
    }
    driven.result.map_err(JobError::engine)
}

pub(crate) fn worker_connect(ctx: &JobCtx) -> Result<WorkerConnect, JobError> {
    Ok(WorkerConnect {
        params: tx(worker_params)?.map_err(JobError::Failed)?,
        role: ctx.job.created_by.clone(),
        label: format!("steep_repl job {}", ctx.job.id),
    })
}

pub fn generate(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let path = checked_path(ctx, true)?;
    let p = ctx.job.params.clone();
    let compression = Compression::parse(p["compression"].as_str().unwrap_or("none"), None)
        .map_err(|e| JobError::Failed(format!("{e:#}")))?;
    let connect = worker_connect(ctx)?;
    let pg_dump = if p["schema"].as_bool().unwrap_or(true) {
        let program = server_program("pg_dump");
        if program.is_none() {
            warning!(
                "steep_repl job {}: no pg_dump next to postgres; the snapshot has no schema DDL",
                ctx.job.id
            );
        }
        program
    } else {
        None
    };
    let opts = GenerateOptions {
        output: path,
        snapshot_id: ctx.job.snapshot_id.clone().unwrap_or_default(),
        mode: "direct".into(),
        run: format!("job {}", ctx.job.id),
        compression,
        parallel: p["parallel"].as_u64().unwrap_or(4) as usize,
        pg_dump,
        chunk_bytes: GenerateOptions::DEFAULT_CHUNK_BYTES,
        selection: Selection {
            tables: strings(&p["tables"]),
            exclude_tables: strings(&p["exclude_tables"]),
            schemas: strings(&p["schemas"]),
            exclude_schemas: strings(&p["exclude_schemas"]),
        },
        slot: None,
    };
    let progress = Counters::default();
    let m = drive(ctx, &progress, || {
        generate::generate(&connect, &opts, &progress)
    })?;
    ctx.totals = Some(Totals::of_generate(&m));
    Ok(m.summary())
}

pub fn apply(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let path = checked_path(ctx, false)?;
    let p = ctx.job.params.clone();
    let schema: SchemaMode = p["schema"]
        .as_str()
        .unwrap_or("verify")
        .parse()
        .map_err(|e| JobError::Failed(format!("{e:#}")))?;
    let connect = worker_connect(ctx)?;
    let opts = ApplyOptions {
        input: path,
        parallel: p["parallel"].as_u64().unwrap_or(4) as usize,
        verify_checksums: p["verify"].as_bool().unwrap_or(true),
        schema,
        resume: p["resume"].as_bool().unwrap_or(false),
        pg_restore: server_program("pg_restore"),
        fire_triggers: p["fire_triggers"].as_bool().unwrap_or(false),
        no_owner: p["no_owner"].as_bool().unwrap_or(false),
        no_privileges: p["no_privileges"].as_bool().unwrap_or(false),
    };
    let progress = Counters::default();
    let s = drive(ctx, &progress, || apply::apply(&connect, &opts, &progress))?;
    ctx.totals = Some(Totals::of_apply(&s, ctx.event.bytes));
    Ok(serde_json::to_value(&s).unwrap_or(Value::Null))
}

/// A job parameter that is a list of strings (absent: none).
pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
