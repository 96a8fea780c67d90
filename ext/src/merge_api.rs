//! Overlap analysis on the server: peers a superuser defines, which peer a role may reach from
//! here, and `analyze_overlap`, which runs the shared engine in the calling backend and keeps its
//! result. The job form (`start_merge_analysis`) is in ../sql/merge_analysis.sql and runs in
//! worker::merge_jobs; both store results with the engine's statements (`merge::stored`).
//!
//! A connection to the peer from the server uses the server's own credentials (its OS user's
//! passfile, peer authentication, certificates). So a role that is not superuser reaches only a
//! peer a superuser defined for it; a connection string is for superusers. Either never holds a
//! password, and no message here repeats a connection string (it might).

use std::ops::ControlFlow;
use std::time::Duration;

use pgrx::prelude::*;
use steep::conn::{ConnParams, Environment};
use steep::engine::counters::Counters;
use steep::engine::merge::{self, stored, Analysis, AnalyzeOptions};
use steep::engine::{Connect, Tool, ToolAccess};

pgrx::extension_sql_file!(
    "../sql/merge_analysis.sql",
    name = "merge_analysis",
    requires = ["security", "dump", authorize_peer, new_merge_id]
);
pgrx::extension_sql_file!(
    "../sql/merge_analysis_api.sql",
    name = "merge_analysis_api",
    requires = ["merge_analysis", run_analysis]
);

#[pg_extern(volatile, name = "_new_merge_id")]
fn new_merge_id() -> String {
    steep::engine::new_snapshot_id().replacen("snap-", "merge-", 1)
}

/// Why a connection string cannot be a peer's, or None. Never repeats the string.
fn unusable(conninfo: &str) -> Option<String> {
    let p = match ConnParams::parse(conninfo) {
        Ok(p) => p,
        Err(_) => return Some("it is not a connection string".into()),
    };
    if p.get("password").is_some() {
        return Some(
            "the connection string holds a password, which would be stored and shown: give the \
             server's OS user a passfile (~/.pgpass) or a service file, or use certificates"
                .into(),
        );
    }
    if matches!(
        p.get("sslmode"),
        Some("require" | "verify-ca" | "verify-full")
    ) {
        return Some(
            "the worker's connections to a peer cannot use TLS yet: run the analysis in client \
             mode (steep merge analyze --client), which does"
                .into(),
        );
    }
    None
}

/// A peer name as messages show it: only what looks like a name (a string that is neither a name
/// nor a valid connection string might still hold a password).
fn shown_name(peer: &str) -> String {
    let name_like = !peer.is_empty()
        && peer.len() <= 63
        && peer
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name_like {
        format!("{peer:?}")
    } else {
        "(that)".into()
    }
}

/// The connection parameters of `peer` for `role`, and how to name it in the merges row: a peer
/// a superuser defined (a trigger stamps who wrote each row) that lists a role `role` may act as,
/// or — when `role` is a superuser — a connection string.
pub(crate) fn resolve_peer(role: &str, peer: &str) -> Result<(ConnParams, String), String> {
    let (conninfo, defined, superuser) = Spi::get_three_with_args::<String, bool, bool>(
        "SELECT (SELECT p.conninfo FROM steep_repl.peers p
                  WHERE p.peer_name = $2
                    AND coalesce((SELECT w.rolsuper FROM pg_catalog.pg_roles w
                                   WHERE w.rolname = p.created_by), false)
                    AND (r.rolsuper OR EXISTS (
                          SELECT FROM pg_catalog.unnest(p.allowed_roles) AS a(role)
                           WHERE pg_catalog.pg_has_role(r.oid,
                                     (SELECT o.oid FROM pg_catalog.pg_roles o
                                       WHERE o.rolname = a.role), 'USAGE')))),
                EXISTS (SELECT FROM steep_repl.peers p WHERE p.peer_name = $2),
                r.rolsuper
           FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
        &[role.into(), peer.into()],
    )
    .map_err(|e| format!("reading the peers: {e}"))?;
    let superuser = superuser.unwrap_or(false);
    let (conninfo, display) = match (conninfo, defined.unwrap_or(false)) {
        (Some(c), _) => (c, peer.to_string()),
        (None, true) => {
            return Err(format!(
                "role {role:?} may not use peer {}: only a peer a superuser defined, for roles \
                 it lists (steep_repl.define_peer)",
                shown_name(peer)
            ))
        }
        (None, false) if superuser => {
            if let Some(why) = unusable(peer) {
                return Err(format!(
                    "no peer named {} is defined, and as a connection string it cannot be used: \
                     {why}",
                    shown_name(peer)
                ));
            }
            let display = ConnParams::parse(peer)
                .map(|p| p.redacted())
                .unwrap_or_default();
            (peer.to_string(), display)
        }
        (None, false) => {
            return Err(if ConnParams::parse(peer).is_ok() {
                "only a superuser may give a peer's connection string: the server would connect \
                 with its own credentials on the role's behalf. Use a peer a superuser defined \
                 for the role (steep_repl.define_peer), or run the analysis in client mode \
                 (steep merge analyze --client), which connects with the role's own credentials"
                    .to_string()
            } else {
                format!(
                    "no peer named {} that role {role:?} may use: a superuser defines peers with \
                     steep_repl.define_peer",
                    shown_name(peer)
                )
            })
        }
    };
    if let Some(why) = unusable(&conninfo) {
        return Err(format!("peer {display:?} cannot be used: {why}"));
    }
    let params = ConnParams::parse(&conninfo)
        .and_then(|p| p.resolve(&server_environment()))
        .map_err(|e| format!("peer {display:?}: {e:#}"))?;
    Ok((params, display))
}

/// What libpq would read in the server's process: its environment and its OS user's home (for
/// the passfile and service file a superuser set up for peers).
fn server_environment() -> Environment<'static> {
    fn var(k: &str) -> Option<String> {
        std::env::var(k).ok()
    }
    // SAFETY: getpwuid for our own effective uid; both strings are copied before anything else
    // can call it again (this backend's main thread).
    let os_user = unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        (!pw.is_null()).then(|| {
            (
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned(),
                std::path::PathBuf::from(
                    std::ffi::CStr::from_ptr((*pw).pw_dir)
                        .to_string_lossy()
                        .into_owned(),
                ),
            )
        })
    };
    Environment { var: &var, os_user }
}

/// Raise with `code` and `message` (ereport! itself returns to the type checker).
fn raise(code: PgSqlErrorCode, message: String) -> ! {
    ereport!(PgLogLevel::ERROR, code, message);
    unreachable!("ereport(ERROR) does not return")
}

/// Raise unless the calling role may use `peer`; what the merges row names it by.
#[pg_extern(volatile, name = "_authorize_peer")]
fn authorize_peer(peer: &str) -> String {
    let role = Spi::get_one::<String>("SELECT current_user::text")
        .ok()
        .flatten()
        .unwrap_or_default();
    match resolve_peer(&role, peer) {
        Ok((_, display)) => display,
        Err(e) => raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, e),
    }
}

/// Define (or redefine) a peer jobs may connect to, and the roles that may use it. Superusers
/// only.
#[pg_extern(volatile)]
fn define_peer(peer_name: &str, conninfo: &str, allowed_roles: default!(Vec<String>, "'{}'")) {
    // SAFETY: reading the current user's superuser flag.
    if !unsafe { pg_sys::superuser() } {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "only a superuser may define peers: a job reaches a peer with the server's own \
             credentials"
                .into(),
        );
    }
    if let Some(why) = unusable(conninfo) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("peer {peer_name:?}: {why}"),
        );
    }
    let missing = Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r), ', ')
           FROM pg_catalog.unnest($1::text[]) r
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles o WHERE o.rolname = r)",
        &[allowed_roles.clone().into()],
    )
    .unwrap_or_else(|e| error!("allowed_roles: {e}"));
    if let Some(m) = missing {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("allowed_roles names roles that do not exist (names are exact): {m}"),
        );
    }
    Spi::run_with_args(
        "INSERT INTO steep_repl.peers (peer_name, conninfo, allowed_roles)
         VALUES ($1, $2, $3::name[])
         ON CONFLICT (peer_name) DO UPDATE
            SET conninfo = EXCLUDED.conninfo, allowed_roles = EXCLUDED.allowed_roles",
        &[peer_name.into(), conninfo.into(), allowed_roles.into()],
    )
    .unwrap_or_else(|e| error!("defining peer {peer_name:?}: {e}"));
}

/// Connections to a peer for a job or analyze_overlap (parameters already authorized).
pub(crate) struct PeerConnect(pub(crate) ConnParams);

impl Connect for PeerConnect {
    fn connect(&self) -> anyhow::Result<postgres::Client> {
        let mut config = self.0.to_config()?;
        // A peer that does not answer must not hold a backend or a worker forever (a cancel
        // cannot interrupt a connect).
        if self.0.get("connect_timeout").is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.connect(postgres::NoTls).map_err(|e| {
            anyhow::anyhow!("connecting to the peer: {}", steep::db_error::describe(&e))
        })
    }

    fn tool_access(&self, _: Tool) -> anyhow::Result<ToolAccess> {
        anyhow::bail!("no program runs against the peer")
    }
}

/// Keep an analysis under `merge_id` (SPI, as whoever runs this: the owner in a backend, the
/// worker for a job it claimed).
pub(crate) fn store(merge_id: &str, a: &Analysis) -> Result<(), pgrx::spi::Error> {
    for t in &a.tables {
        let [m, c, lo, ro, lr, rr] = stored::counts(t);
        Spi::run_with_args(
            stored::INSERT_TABLE,
            &[
                merge_id.into(),
                t.schema.clone().into(),
                t.table.clone().into(),
                m.into(),
                c.into(),
                lo.into(),
                ro.into(),
                lr.into(),
                rr.into(),
                t.suspect_serial_keys.into(),
                serde_json::to_string(&t.unique_collisions)
                    .unwrap_or_else(|_| "[]".into())
                    .into(),
                serde_json::to_string(&t.cost)
                    .unwrap_or_else(|_| "{}".into())
                    .into(),
            ],
        )?;
        for (category, keys) in stored::key_lists(t) {
            if !keys.is_empty() {
                Spi::run_with_args(
                    stored::INSERT_KEYS,
                    &[
                        merge_id.into(),
                        t.schema.clone().into(),
                        t.table.clone().into(),
                        category.into(),
                        keys.clone().into(),
                    ],
                )?;
            }
        }
    }
    Ok(())
}

/// Whether a cancel or termination is pending for this backend (not the other interrupts that
/// set InterruptPending: a connection check, a barrier, a memory-context dump).
fn interrupt_pending() -> bool {
    // SAFETY: flags signal handlers set; read without taking any lock.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
    }
}

/// analyze_overlap's work: run the analysis here (this backend waits; a statement cancel stops
/// the engine, which polls for it every 100 ms), keep it as a complete `analysis` merges row of
/// the caller's, and return its id.
#[pg_extern(volatile, name = "_run_analysis")]
fn run_analysis(peer: &str, tables: Option<Vec<String>>) -> String {
    let role = Spi::get_one::<String>("SELECT current_user::text")
        .ok()
        .flatten()
        .unwrap_or_default();
    let (params, display) = resolve_peer(&role, peer)
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, e));
    let local =
        crate::worker::snapshot_jobs::WorkerConnect::for_role(&role, "steep_repl analyze_overlap")
            .unwrap_or_else(|e| error!("{e}"));
    let peer_c = PeerConnect(params);
    let opts = AnalyzeOptions {
        tables: tables.clone().unwrap_or_default(),
        parallel: 2,
    };
    let progress = Counters::default();
    let driven = steep::engine::driver::drive(
        &progress,
        &Default::default(),
        |_| {
            std::thread::sleep(Duration::from_millis(100));
            if interrupt_pending() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        || merge::analyze(&local, &peer_c, &opts, &progress),
    );
    let analysis = match driven.result {
        Ok(a) => a,
        Err(e) => {
            // A cancel or termination: the server's own error for it.
            pg_sys::check_for_interrupts!();
            let code = if e.downcast_ref::<merge::Refused>().is_some() {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            } else {
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR
            };
            raise(code, format!("{e:#}"))
        }
    };
    let merge_id = new_merge_id();
    Spi::run_with_args(
        "INSERT INTO steep_repl.merges (merge_id, peer, tables, kind, dry_run, status,
                                        tables_total, tables_completed, conflict_count,
                                        started_at, completed_at)
         VALUES ($1, $2, $3, 'analysis', true, 'complete', $4, $4, $5,
                 pg_catalog.statement_timestamp(), pg_catalog.clock_timestamp())",
        &[
            merge_id.clone().into(),
            display.into(),
            tables.unwrap_or_default().into(),
            (analysis.tables.len() as i32).into(),
            (analysis.tables.iter().map(|t| t.conflict).sum::<u64>() as i64).into(),
        ],
    )
    .unwrap_or_else(|e| error!("recording the analysis: {e}"));
    store(&merge_id, &analysis).unwrap_or_else(|e| error!("recording the analysis: {e}"));
    merge_id
}

pgrx::extension_sql_file!(
    "../sql/merge_apply.sql",
    name = "merge_apply",
    requires = ["merge_analysis_api", "snapshots"]
);
