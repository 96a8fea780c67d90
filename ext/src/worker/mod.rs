//! Background workers: a launcher (one per cluster) starts a database worker for every database
//! that has steep_repl; a database worker starts a job worker for each pending job, up to
//! steep_repl.max_jobs. See docs/ARCHITECTURE.md.

use std::panic::{RefUnwindSafe, UnwindSafe};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

pub mod database;
pub mod job;
pub mod launcher;
mod merge_jobs;
mod replication_jobs;
mod selftest;
pub(crate) mod snapshot_jobs;

/// Run `f` in a transaction of its own. An ERROR or panic inside aborts the transaction and
/// comes back as the error's message, so a worker can record it instead of dying.
pub fn tx<R>(f: impl FnOnce() -> R + UnwindSafe + RefUnwindSafe) -> Result<R, String> {
    // SAFETY: called between transactions in a background worker connected to a database.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(|| Ok(f()))
        .catch_others(|e| Err(error_message(&e)))
        .execute();
    // SAFETY: ends the transaction started above, either way.
    unsafe {
        match &result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

/// The message of a caught error, with its detail and hint.
pub fn error_message(e: &CaughtError) -> String {
    let report = match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    steep::db_error::one_line(
        report.message(),
        report.detail().filter(|d| !d.is_empty()),
        report.hint().filter(|h| !h.is_empty()),
    )
}

/// Connect this worker to database `db` (by oid; None: the launcher's database by name) as the
/// bootstrap superuser, with search_path pinned for all the SQL it runs.
pub fn connect(db: Option<pg_sys::Oid>) {
    match db {
        Some(oid) => BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid), None),
        None => {
            BackgroundWorker::connect_worker_to_spi(Some(&crate::gucs::launcher_database()), None)
        }
    }
    crate::security::pin_session();
}

/// Register a dynamic worker whose main function takes a database OID.
fn start_worker(
    kind: &str,
    function: &str,
    db_oid: pg_sys::Oid,
) -> Option<DynamicBackgroundWorker> {
    let name = format!("steep_repl {kind} (database {})", db_oid.to_u32());
    // SAFETY: reading our own pid.
    let me = unsafe { pg_sys::MyProcPid };
    // SAFETY: the handle must outlive the current (transaction) memory context; nothing else is
    // allocated while switched.
    unsafe {
        PgMemoryContexts::TopMemoryContext.switch_to(|_| {
            BackgroundWorkerBuilder::new(&name)
                .set_type(&format!("steep_repl {kind}"))
                .set_library("steep_repl")
                .set_function(function)
                .enable_spi_access()
                .set_argument(Some(pg_sys::Datum::from(db_oid.to_u32())))
                .set_notify_pid(me)
                .load_dynamic()
                .ok()
        })
    }
}

pub fn start_database_worker(db_oid: pg_sys::Oid) -> Option<DynamicBackgroundWorker> {
    start_worker("worker", "steep_repl_database_worker_main", db_oid)
}

pub fn start_job_worker(db_oid: pg_sys::Oid) -> Option<DynamicBackgroundWorker> {
    start_worker("job", "steep_repl_job_worker_main", db_oid)
}

/// The database OID a worker was started for (its main argument).
pub fn db_oid_arg(arg: pg_sys::Datum) -> pg_sys::Oid {
    pg_sys::Oid::from(arg.value() as u32)
}

/// Apply configuration changes after SIGHUP.
pub fn reload_config() {
    // SAFETY: ProcessConfigFile is how background workers reload settings.
    unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
}
