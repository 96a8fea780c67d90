//! The operations API of 0.2.0 that needs the library: whether workers are available, waking them
//! when work is queued, cancelling, and live progress from shared memory. The tables and the SQL
//! functions around these live in ../sql/operations*.sql.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::callbacks::{register_xact_callback, PgXactCallbackEvent};
use pgrx::prelude::*;
use steep::progress_record::{ProgressEvent, CHANNEL, SIGNAL_SQL};

use crate::preloaded;

pgrx::extension_sql_file!(
    "../sql/operations.sql",
    name = "operations",
    requires = ["tables"]
);
pgrx::extension_sql_file!(
    "../sql/operations_api.sql",
    name = "operations_api",
    requires = [
        "operations",
        wake_on_commit,
        require_workers,
        cancel_operation,
        operation_progress
    ]
);
use crate::shmem::{pid_alive, DbEntry, DbState, STATE};

/// Whether background operations can run here: the library is preloaded and its launcher runs.
#[pg_extern(volatile)]
fn bgworker_available() -> bool {
    preloaded() && pid_alive(STATE.share().launcher_pid)
}

/// Raise the error that says why background operations cannot run, and how to fix it.
#[pg_extern(volatile, name = "_require_workers")]
fn require_workers() {
    if !preloaded() {
        error!(
            "steep_repl is not in shared_preload_libraries, so it cannot run background \
             operations: run `steep init --preload` and restart PostgreSQL"
        );
    }
    if !pid_alive(STATE.share().launcher_pid) {
        error!(
            "the steep_repl launcher is not running (the server log says why): check \
             max_worker_processes and that database {} exists, then restart PostgreSQL",
            crate::gucs::launcher_database()
        );
    }
}

static WAKE_PENDING: AtomicBool = AtomicBool::new(false);

/// Wake this database's worker once the current transaction commits (new rows are visible to it
/// only then); wake the launcher instead when the database has no worker yet. Called by the
/// statement trigger on work_queue.
#[pg_extern(volatile, name = "_wake_on_commit")]
fn wake_on_commit() {
    if !preloaded() || WAKE_PENDING.swap(true, Ordering::Relaxed) {
        return;
    }
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        WAKE_PENDING.store(false, Ordering::Relaxed);
        // SAFETY: reading this backend's database.
        wake_database(unsafe { pg_sys::MyDatabaseId }.to_u32());
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || {
        WAKE_PENDING.store(false, Ordering::Relaxed);
    });
}

/// Runs inside a commit callback: must not raise.
fn wake_database(db: u32) {
    let target = {
        let mut s = STATE.exclusive();
        let launcher = s.launcher_pid;
        match s.dbs.iter_mut().find(|e| e.db_oid == db) {
            Some(e) if e.state == DbState::Running && pid_alive(e.pid) => e.pid,
            Some(e) => {
                e.wanted = true;
                launcher
            }
            None => {
                if let Some(e) = s.dbs.iter_mut().find(|e| e.db_oid == 0) {
                    *e = DbEntry {
                        db_oid: db,
                        wanted: true,
                        state: DbState::Absent,
                        ..DbEntry::EMPTY
                    };
                }
                launcher
            }
        }
    };
    crate::shmem::wake(target);
}

/// Cancel a pending or running operation of this database. Pending ones are cancelled at once;
/// running ones are asked to stop and do within a second. Returns false when the operation is
/// not pending or running (or not visible to the caller: row security hides others' jobs).
#[pg_extern(volatile)]
fn cancel_operation(id: i64) -> bool {
    let cancelled_pending = Spi::get_one_with_args::<i64>(
        &format!("WITH c AS (
            UPDATE steep_repl.work_queue
            SET status = 'cancelled', completed_at = pg_catalog.clock_timestamp(),
                error_message = 'cancelled before it started'
            WHERE id = $1 AND status = 'pending'
            RETURNING id, operation, snapshot_id, merge_id
         ), s AS (
            -- The columns snapshot_end sets (the function may predate the installed version).
            UPDATE steep_repl.snapshots sn
            SET status = 'cancelled', completed_at = pg_catalog.clock_timestamp(),
                phase = 'cancelled', error_message = 'cancelled before it started',
                eta_seconds = NULL, current_table = NULL
            FROM c WHERE sn.snapshot_id = c.snapshot_id AND sn.status = 'pending'
         ), m AS (
            UPDATE steep_repl.merges mg SET status = 'cancelled', completed_at = pg_catalog.clock_timestamp()
            FROM c WHERE mg.merge_id = c.merge_id AND mg.status = 'pending'
         )
         SELECT pg_catalog.count(pg_catalog.pg_notify($2, {SIGNAL_SQL})) FROM c"),
        &[id.into(), CHANNEL.into()],
    )
    .unwrap_or_else(|e| error!("cancelling operation {id}: {e}"))
    .unwrap_or(0);
    if cancelled_pending > 0 {
        return true;
    }
    let running = Spi::get_one_with_args::<bool>(
        "SELECT coalesce((SELECT status = 'running' FROM steep_repl.work_queue WHERE id = $1), false)",
        &[id.into()],
    )
    .unwrap_or_else(|e| error!("reading operation {id}: {e}"))
    .unwrap_or(false);
    if !running || !preloaded() {
        return false;
    }
    // SAFETY: reading this backend's database.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let pid = {
        let mut s = STATE.exclusive();
        match s
            .slots
            .iter_mut()
            .find(|sl| sl.job_id == id && sl.db_oid == db && sl.in_use())
        {
            Some(sl) => {
                sl.cancel_requested = true;
                sl.pid
            }
            None => return false,
        }
    };
    crate::shmem::wake(pid);
    true
}

/// Live progress: with an id, that operation of this database (from shared memory while it runs,
/// else from its row); without, every operation in flight (running ones in every database, and
/// this database's pending ones).
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn operation_progress(
    id: default!(Option<i64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(operation, String),
        name!(status, String),
        name!(phase, Option<String>),
        name!(percent, f64),
        name!(current_table, Option<String>),
        name!(tables_completed, i64),
        name!(tables_total, i64),
        name!(bytes_processed, i64),
        name!(rows_processed, i64),
        name!(eta_seconds, Option<i64>),
        name!(error, Option<String>),
        name!(snapshot_id, Option<String>),
        name!(database, Option<String>),
        name!(worker_pid, Option<i32>),
    ),
> {
    // SAFETY: reading this backend's database.
    let this_db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    if preloaded() {
        let slots: Vec<_> = {
            let s = STATE.share();
            s.slots.iter().filter(|sl| sl.in_use()).copied().collect()
        };
        // A job records its end in its row before its slot: once the row says it ended, the row
        // is what is true.
        let ids: Vec<i64> = slots
            .iter()
            .filter(|sl| sl.db_oid == this_db)
            .map(|sl| sl.job_id)
            .collect();
        let ended: Vec<i64> = Spi::connect(|c| {
            let mut v = Vec::new();
            for r in c.select(
                "SELECT w.id FROM steep_repl.work_queue w
                 WHERE w.id = ANY($1) AND w.status IN ('complete', 'failed', 'cancelled')",
                None,
                &[ids.into()],
            )? {
                v.push(r.get::<i64>(1)?.unwrap_or(0));
            }
            Ok::<_, pgrx::spi::Error>(v)
        })
        .unwrap_or_else(|e| error!("reading operation progress: {e}"));
        // As in work_queue's row security: a role sees the jobs of roles whose privileges it
        // has, in any database.
        let mut visible: Vec<(u32, bool)> = Vec::new();
        for sl in slots {
            if sl.db_oid == this_db && ended.contains(&sl.job_id) {
                continue;
            }
            let may = match visible.iter().find(|(o, _)| *o == sl.owner_oid) {
                Some((_, v)) => *v,
                None => {
                    let v = acts_as(sl.owner_oid);
                    visible.push((sl.owner_oid, v));
                    v
                }
            };
            if !may {
                continue;
            }
            if id.is_some_and(|i| i != sl.job_id || sl.db_oid != this_db) {
                continue;
            }
            if sl.db_oid == this_db {
                seen.push(sl.job_id);
            }
            rows.push(progress_row(
                sl.progress(),
                database_name(sl.db_oid),
                Some(sl.pid),
            ));
        }
    }
    // Rows the caller may see (row security) that are not live in shared memory.
    // Their last published progress record, with the row's own status and error (a pending
    // job's record may only say why it waits; a job's end is written to the row first).
    let sql = "SELECT w.id, w.operation, w.status, w.progress::text, w.error_message,
                      w.snapshot_id, current_database()::text, w.worker_pid
               FROM steep_repl.work_queue w
               WHERE CASE WHEN $1 IS NULL THEN w.status = 'pending' ELSE w.id = $1 END
                 AND NOT (w.id = ANY($2))
               ORDER BY w.id";
    // Why this database's worker could not be started, if the launcher said so: what its pending
    // jobs wait for.
    let blocked = if preloaded() {
        let s = STATE.share();
        s.dbs
            .iter()
            .find(|e| e.db_oid == this_db)
            .and_then(|e| e.blocked.non_empty())
    } else {
        None
    };
    Spi::connect(|c| {
        for r in c.select(sql, None, &[id.into(), seen.into()])? {
            let mut e = r
                .get::<String>(4)?
                .and_then(|p| ProgressEvent::from_payload(&p))
                .unwrap_or_default();
            e.id = r.get(1)?.unwrap_or(0);
            e.op = r.get(2)?.unwrap_or_default();
            e.status = r.get(3)?.unwrap_or_default();
            e.error = r.get(5)?;
            e.snapshot_id = r.get(6)?;
            if e.status == "pending" && e.phase.is_none() {
                e.phase = blocked.clone();
            }
            rows.push(progress_row(e, r.get(7)?, r.get(8)?));
        }
        Ok::<_, pgrx::spi::Error>(())
    })
    .unwrap_or_else(|e| error!("reading operation progress: {e}"));
    TableIterator::new(rows)
}

type ProgressRow = (
    i64,
    String,
    String,
    Option<String>,
    f64,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
);

/// The progress record as operation_progress's row (the one conversion to SQL).
fn progress_row(e: ProgressEvent, database: Option<String>, pid: Option<i32>) -> ProgressRow {
    (
        e.id,
        e.op,
        e.status,
        e.phase,
        e.percent,
        e.table,
        e.tables_completed,
        e.tables_total,
        e.bytes,
        e.rows,
        e.eta_seconds,
        e.error,
        e.snapshot_id,
        database,
        pid,
    )
}

/// Whether the current role has the privileges of role `oid` (a member, or a superuser).
fn acts_as(oid: u32) -> bool {
    oid != 0
        && Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_has_role(current_user, $1, 'USAGE')",
            &[pg_sys::Oid::from(oid).into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn database_name(oid: u32) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT datname::text FROM pg_catalog.pg_database WHERE oid = $1",
        &[pg_sys::Oid::from(oid).into()],
    )
    .ok()
    .flatten()
}
