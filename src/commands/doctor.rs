//! `steep doctor`: every check of a server's readiness for steep, each ok / warn / fail with the
//! fix. Exit 0 when nothing fails, 1 otherwise.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::context::Ctx;
use steep::cli::embedded::{self, EXTENSION};
use steep::cli::lifecycle::{self, version_cmp, ServerState};
use steep::cli::output::CheckLevel;

#[derive(Args)]
pub struct DoctorArgs {
    /// Also run a short job through the background workers and time it.
    #[arg(long)]
    worker_selftest: bool,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: CheckLevel,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        level: CheckLevel::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        level: CheckLevel::Warn,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        level: CheckLevel::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

#[derive(Serialize)]
struct DoctorReport {
    ok: bool,
    checks: Vec<Check>,
}

impl DoctorArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut checks = run_checks(ctx);
        if self.worker_selftest {
            checks.push(worker_selftest(ctx));
        }
        // Also said on stderr, so a failing doctor in a script explains itself in one line.
        let failing: Vec<String> = checks
            .iter()
            .filter(|c| c.level == CheckLevel::Fail)
            .map(|c| format!("{} failed: {}", c.name, c.detail))
            .collect();
        for c in &checks {
            ctx.out.check(c.level, c.name, &c.detail);
            if let Some(fix) = &c.fix {
                ctx.out.line(format!("       fix: {fix}"));
            }
        }
        ctx.out.json(&DoctorReport {
            ok: failing.is_empty(),
            checks,
        })?;
        if !failing.is_empty() {
            anyhow::bail!("steep doctor: {}", failing.join("; "));
        }
        Ok(())
    }
}

fn run_checks(ctx: &Ctx) -> Vec<Check> {
    let mut checks = Vec::new();
    // A setting that cannot be used is a different fix from a server that cannot be reached.
    if let Err(e) = ctx.conn_params() {
        checks.push(fail(
            "connection",
            format!("{e:#}"),
            "fix the connection settings (-c, STEEP_CONNECTION, PG* variables, service file)",
        ));
        return checks;
    }
    let (mut client, params) = match ctx.open() {
        Ok(c) => c,
        Err(e) => {
            checks.push(fail(
                "connection",
                format!("{e:#}"),
                "check the connection string, that PostgreSQL runs, and pg_hba.conf",
            ));
            return checks;
        }
    };
    let state = match lifecycle::inspect(&mut client) {
        Ok(s) => s,
        Err(e) => {
            checks.push(fail(
                "connection",
                format!("{e:#}"),
                "check the role's privileges",
            ));
            return checks;
        }
    };
    checks.push(ok(
        "connection",
        format!(
            "{} as {}{}, database {}",
            params.endpoint(),
            state.user,
            if state.superuser { " (superuser)" } else { "" },
            state.database
        ),
    ));
    checks.push(
        if state.server_version_num >= lifecycle::MIN_SERVER_VERSION_NUM {
            ok(
                "server version",
                format!("PostgreSQL {}", state.server_version),
            )
        } else {
            fail(
                "server version",
                format!("PostgreSQL {} is older than 15", state.server_version),
                "upgrade PostgreSQL to 15 or newer",
            )
        },
    );
    extension_checks(&mut client, &state, &mut checks);
    settings_checks(&mut client, &state, &mut checks);
    worker_checks(&mut client, &state, &mut checks);
    snapshot_dir_check(&mut client, &params, &mut checks);
    privilege_checks(&mut client, &state, &mut checks);
    table_checks(&mut client, &mut checks);
    replication_checks(&mut client, &params, &mut checks);
    checks
}

/// What `steep replication init` needs here (as publisher and subscriber), whether this host
/// may open a replication connection, and steep slots nothing uses (each retains WAL).
fn replication_checks(
    client: &mut postgres::Client,
    params: &steep::conn::ConnParams,
    checks: &mut Vec<Check>,
) {
    use steep::engine::replication::{names::NodeIdentity, preflight, slot};
    let findings = NodeIdentity::read(client).and_then(|node| {
        preflight::check(
            client,
            &node,
            preflight::Role {
                publishes: true,
                subscribes: true,
            },
        )
    });
    match findings {
        Ok(f) if f.is_empty() => checks.push(ok(
            "replication",
            "ready to publish and subscribe (wal_level logical, free slots, WAL senders, workers \
             and origins; the role may)",
        )),
        Ok(f) => {
            for f in f {
                checks.push(warn("replication", f.problem, f.fix));
            }
        }
        Err(e) => checks.push(warn(
            "replication",
            format!("cannot check: {e:#}"),
            "check the role's privileges",
        )),
    }
    checks.push(match slot::replication_connection(params) {
        Ok(_) => ok(
            "replication connection",
            "this host may open a logical replication connection to the database",
        ),
        Err(e) => warn(
            "replication connection",
            format!("{e:#}"),
            "needed by steep replication init and by subscribers on other servers",
        ),
    });
    match preflight::idle_steep_slots(client) {
        Ok(idle) if idle.is_empty() => {}
        Ok(idle) => checks.push(warn(
            "steep slots",
            format!(
                "{} inactive, each keeping WAL: {}",
                idle.len(),
                idle.iter()
                    .map(|(n, size)| format!("{n} ({size} retained)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "a slot is inactive while its subscriber is down or disconnected, or when an init \
             did not finish: check the subscriber (steep replication status on both nodes); \
             `steep replication init` again completes an unfinished setup, `steep replication \
             drop [--name NAME]` removes one, SELECT pg_drop_replication_slot('NAME') one slot",
        )),
        Err(_) => {}
    }
}

fn extension_checks(client: &mut postgres::Client, state: &ServerState, checks: &mut Vec<Check>) {
    let target = embedded::embedded().default_version;
    if state.available_versions.is_empty() {
        checks.push(fail(
            "extension available",
            format!("{EXTENSION} is not installed on the server"),
            "run `steep init` (it installs the files on a server on this machine), or install the \
             steep_repl package into the server's pg_config --pkglibdir and --sharedir",
        ));
        return;
    }
    checks.push(if state.available(&target) {
        ok(
            "extension available",
            format!("versions {}", state.available_versions.join(", ")),
        )
    } else {
        warn(
            "extension available",
            format!(
                "the server's files offer {} but not {target}, the version this steep embeds",
                state.available_versions.join(", ")
            ),
            "run `steep init` to install the newer files",
        )
    });
    let Some(installed) = &state.installed else {
        checks.push(fail(
            "extension installed",
            format!("{EXTENSION} is not created in database {}", state.database),
            "run `steep init`",
        ));
        return;
    };
    checks.push(match version_cmp(installed, &target) {
        std::cmp::Ordering::Equal => ok("extension installed", format!("{EXTENSION} {installed}")),
        std::cmp::Ordering::Less => fail(
            "extension installed",
            format!("{installed} installed, {target} available"),
            "run `steep init` to upgrade (ALTER EXTENSION steep_repl UPDATE)",
        ),
        std::cmp::Ordering::Greater => warn(
            "extension installed",
            format!("{installed} installed, newer than this steep ({target})"),
            "upgrade steep",
        ),
    });
    checks.push(match &state.library {
        Some(lib) if lib == installed && lib == &target => ok(
            "library version",
            format!("steep_repl.so {lib} = extversion = steep's {target}"),
        ),
        Some(lib) if lib != installed => fail(
            "library version",
            format!("the loaded steep_repl.so is {lib} but the installed SQL is {installed}"),
            if state.preload_active() {
                "restart PostgreSQL so it loads the installed library, then run `steep init`"
            } else {
                "run `steep init` (it installs matching files and updates the extension)"
            },
        ),
        Some(lib) => warn(
            "library version",
            format!("steep_repl.so {lib} = extversion, but this steep embeds {target}"),
            "run `steep init`",
        ),
        None => fail(
            "library version",
            "steep_repl.version() cannot be called".to_string(),
            "run `steep init --repair` to recreate the extension's objects",
        ),
    });
    let expected = lifecycle::embedded_signature(installed);
    checks.push(match (expected, lifecycle::catalog_signature(client)) {
        (None, _) => warn(
            "catalog",
            format!("this steep has no catalog signature for {EXTENSION} {installed}"),
            "use the steep release that matches the installed extension",
        ),
        (_, Err(e)) => fail("catalog", format!("{e:#}"), "check the role's privileges"),
        (Some(exp), Ok(actual)) => {
            let diff = lifecycle::diff_signatures(&exp, &actual);
            if diff.is_empty() {
                ok(
                    "catalog",
                    format!("{} objects match {EXTENSION} {installed}", actual.len()),
                )
            } else {
                fail(
                    "catalog",
                    format!(
                        "the extension's objects differ from {EXTENSION} {installed}: {}",
                        diff.summary()
                    ),
                    "run `steep init --repair` (recreates the extension's objects and keeps the \
                     rows of its tables)",
                )
            }
        }
    });
}

fn setting(client: &mut postgres::Client, name: &str) -> Option<String> {
    client
        .query_one("SELECT current_setting($1)", &[&name])
        .ok()
        .map(|r| r.get(0))
}

fn settings_checks(client: &mut postgres::Client, state: &ServerState, checks: &mut Vec<Check>) {
    checks.push(if state.preload_active() {
        ok("preload", "steep_repl is in shared_preload_libraries")
    } else if state.preloaded.is_none() {
        warn(
            "preload",
            format!(
                "cannot tell: {} may not read shared_preload_libraries and steep_repl is not \
                 created here",
                state.user
            ),
            "run steep doctor as a superuser, or run `steep init` first",
        )
    } else if state.preload_pending() {
        warn(
            "preload",
            "steep_repl is configured in shared_preload_libraries but not loaded yet",
            "restart PostgreSQL",
        )
    } else {
        warn(
            "preload",
            "steep_repl is not in shared_preload_libraries: background operations are unavailable",
            "run `steep init --preload` and restart PostgreSQL",
        )
    });
    let int = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let workers = int(setting(client, "max_worker_processes"));
    // The rule: steep's launcher and PostgreSQL's logical replication launcher, then per database
    // running jobs at the same time its worker and up to max_jobs job workers (a database without
    // work has no worker). Checked for one such database; parallel queries need their own.
    // (Unknown before the library is loaded: its default.)
    let max_jobs = setting(client, "steep_repl.max_jobs")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(4)
        .max(1);
    let needed = 2 + 1 + max_jobs;
    checks.push(if workers >= needed {
        ok(
            "max_worker_processes",
            format!("{workers} (steep needs {needed} for one database running jobs)"),
        )
    } else {
        warn(
            "max_worker_processes",
            format!(
                "{workers}: steep needs 2 + (1 + steep_repl.max_jobs = {max_jobs}) per database \
                 running jobs at once = {needed} for one, plus what parallel queries use"
            ),
            format!(
                "ALTER SYSTEM SET max_worker_processes = {}; then restart PostgreSQL",
                (needed + 8).max(16)
            ),
        )
    });
    let wal = setting(client, "wal_level").unwrap_or_default();
    checks.push(if wal == "logical" {
        ok("wal_level", wal)
    } else {
        warn(
            "wal_level",
            format!("{wal}: replication slots for snapshots and replication need logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    });
    let slots = int(setting(client, "max_replication_slots"));
    checks.push(if slots >= 2 {
        ok("max_replication_slots", slots.to_string())
    } else {
        warn(
            "max_replication_slots",
            format!("{slots}: snapshots at a slot and replication need free slots"),
            "ALTER SYSTEM SET max_replication_slots = 10; then restart PostgreSQL",
        )
    });
    let ts = setting(client, "track_commit_timestamp").unwrap_or_default();
    checks.push(if ts == "on" {
        ok("track_commit_timestamp", ts)
    } else {
        warn(
            "track_commit_timestamp",
            "off: the last-modified merge strategy needs a timestamp column instead".to_string(),
            "ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL",
        )
    });
}

/// Whether the workers run, and whether jobs are stuck.
fn worker_checks(client: &mut postgres::Client, state: &ServerState, checks: &mut Vec<Check>) {
    let has_queue = client
        .query_one(
            "SELECT to_regclass('steep_repl.work_queue') IS NOT NULL",
            &[],
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    if state.installed.is_none() || !has_queue {
        return; // nothing to run jobs for (reported above)
    }
    let available = client
        .query_one("SELECT steep_repl.bgworker_available()", &[])
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    checks.push(if available {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'steep_repl%'",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        ok(
            "background workers",
            format!("launcher running ({n} steep_repl processes)"),
        )
    } else if state.preload_active() {
        fail(
            "background workers",
            "steep_repl is preloaded but its launcher is not running",
            "see the server log for why; check max_worker_processes and that the database named \
             by steep_repl.database (default postgres) exists, then restart PostgreSQL",
        )
    } else {
        warn(
            "background workers",
            "unavailable: steep_repl is not preloaded",
            "run `steep init --preload` and restart PostgreSQL",
        )
    });
    let stuck = client.query_one(
        "SELECT count(*) FILTER (WHERE status = 'pending' AND created_at < now() - interval '1 minute'),
                count(*) FILTER (WHERE status = 'running' AND NOT EXISTS
                                 (SELECT FROM pg_stat_activity a WHERE a.pid = w.worker_pid))
         FROM steep_repl.work_queue w",
        &[],
    );
    checks.push(match stuck {
        Ok(r) if r.get::<_, i64>(0) == 0 && r.get::<_, i64>(1) == 0 => ok("stuck jobs", "none"),
        Ok(r) => warn(
            "stuck jobs",
            format!(
                "{} pending for over a minute, {} running without a worker",
                r.get::<_, i64>(0),
                r.get::<_, i64>(1)
            ),
            "check `steep ops list`, the server log and max_worker_processes; running jobs \
             without a worker are failed by the database worker within seconds once it runs",
        ),
        Err(e) => warn(
            "stuck jobs",
            format!("cannot read the work queue: {e}"),
            "check privileges",
        ),
    });
}

/// steep_repl.snapshot_dir: set, present, and with room (checked when the server is local).
fn snapshot_dir_check(
    client: &mut postgres::Client,
    params: &steep::conn::ConnParams,
    checks: &mut Vec<Check>,
) {
    let has_api = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.proname = 'start_snapshot' AND p.pronamespace = to_regnamespace('steep_repl'))",
            &[],
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    if !has_api {
        return;
    }
    // Superuser-only to read; CASE keeps others from an error.
    let dir: Option<Option<String>> = client
        .query_one(
            "SELECT CASE WHEN pg_has_role('pg_read_all_settings', 'MEMBER')
                         THEN coalesce(current_setting('steep_repl.snapshot_dir', true), '') END",
            &[],
        )
        .ok()
        .map(|r| r.get(0));
    let fix = "ALTER SYSTEM SET steep_repl.snapshot_dir = '/path/owned/by/the/server'; SELECT pg_reload_conf()";
    checks.push(match dir {
        None | Some(None) => ok("snapshot dir", "not readable by this role (superuser-only setting)"),
        Some(Some(d)) if d.is_empty() => warn(
            "snapshot dir",
            "steep_repl.snapshot_dir is not set: only superusers and pg_write_server_files members can take direct-mode snapshots",
            fix,
        ),
        Some(Some(d)) if !lifecycle::is_local(params.get("host")) => {
            ok("snapshot dir", format!("{d} (on the server; free space not checked from here)"))
        }
        Some(Some(d)) => match nix::sys::statvfs::statvfs(std::path::Path::new(&d)) {
            Err(e) => fail("snapshot dir", format!("{d}: {e}"), "create it, owned by the server's OS user, or fix the setting"),
            Ok(v) => {
                let free = v.blocks_available() * v.fragment_size();
                let gib = free as f64 / (1u64 << 30) as f64;
                if free < (1 << 30) {
                    warn("snapshot dir", format!("{d}: only {gib:.2} GiB free"), "free space there or point steep_repl.snapshot_dir elsewhere")
                } else {
                    ok("snapshot dir", format!("{d}: {gib:.1} GiB free"))
                }
            }
        },
    });
}

/// Run a short selftest job and report how fast it started and finished.
fn worker_selftest(ctx: &Ctx) -> Check {
    let run = || -> anyhow::Result<String> {
        let mut client = ctx.connect()?;
        let id: i64 = client
            .query_one("SELECT id FROM steep_repl.start_selftest(0.5, 5)", &[])
            .map_err(steep::db_error::db_error)?
            .get(0);
        let quiet = steep::cli::output::Output {
            quiet: true,
            ..ctx.out
        };
        let f = steep::cli::follow::Follower::new(&quiet, "selftest").follow(&mut client, id)?;
        if f.last.status != "complete" {
            anyhow::bail!(
                "the job ended {}: {}",
                f.last.status,
                f.last.error.unwrap_or_default()
            );
        }
        let result: Option<serde_json::Value> = client
            .query_one(
                "SELECT result FROM steep_repl.work_queue WHERE id = $1",
                &[&id],
            )?
            .get(0);
        let role = result
            .as_ref()
            .and_then(|r| r["connection_role"].as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        Ok(format!(
            "job {id} started in {} ms and completed ({} progress notifications); its engine \
             connection reached the server as {role}",
            f.start_latency_ms.unwrap_or(-1),
            f.notifications
        ))
    };
    match run() {
        Ok(detail) => ok("worker selftest", detail),
        Err(e) => fail(
            "worker selftest",
            format!("{e:#}"),
            "see the background workers check and the server log; workers connect through \
             steep_repl.worker_conninfo (default: the Unix socket as the bootstrap superuser, which \
             needs a `local all all peer` or `trust` line in pg_hba.conf; each session then acts as \
             the job's owner under security-restricted operation)",
        ),
    }
}

fn privilege_checks(client: &mut postgres::Client, state: &ServerState, checks: &mut Vec<Check>) {
    if state.superuser {
        checks.push(ok("privileges", format!("{} is a superuser", state.user)));
        return;
    }
    let mut missing = Vec::new();
    if state.installed.is_some() && !lifecycle::has_grants(client, &state.user).unwrap_or(false) {
        missing.push("use of schema steep_repl and its tables");
    }
    let replication: bool = client
        .query_one(
            "SELECT rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(false);
    if missing.is_empty() {
        checks.push(if replication {
            ok(
                "privileges",
                format!("{} may use steep_repl and replicate", state.user),
            )
        } else {
            warn(
                "privileges",
                format!(
                    "{} may use steep_repl but lacks REPLICATION (needed for snapshots at a slot)",
                    state.user
                ),
                format!("ALTER ROLE \"{}\" REPLICATION (as a superuser)", state.user),
            )
        });
    } else {
        checks.push(fail(
            "privileges",
            format!("{} lacks {}", state.user, missing.join(", ")),
            format!("as a superuser: steep init --grant \"{}\"", state.user),
        ));
    }
}

fn table_checks(client: &mut postgres::Client, checks: &mut Vec<Check>) {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {}
           AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')
         ORDER BY 1",
        steep::engine::catalog::USER_RELATION
    );
    let rows = client.query(&sql, &[]);
    checks.push(match rows {
        Err(e) => fail(
            "primary keys",
            format!("{e}"),
            "check the role's privileges",
        ),
        Ok(rows) if rows.is_empty() => ok("primary keys", "every user table has a primary key"),
        Ok(rows) => {
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            let more = if names.len() > 5 {
                format!(" and {} more", names.len() - 5)
            } else {
                String::new()
            };
            warn(
                "primary keys",
                format!(
                    "{} tables without a primary key: {shown}{more}",
                    names.len()
                ),
                "add primary keys (ALTER TABLE ... ADD PRIMARY KEY): merge and conflict \
                 detection need them",
            )
        }
    });
}
