//! health(): one row describing whether this extension can do its work here. The same library
//! serves every installed version, so it only reads tables the installed version has.

use pgrx::prelude::*;

use crate::preloaded;
use crate::shmem::{pid_alive, STATE};

/// `unhealthy` when the loaded library and the installed SQL disagree on the version (run
/// `ALTER EXTENSION steep_repl UPDATE`, or restart after installing a new library);
/// `degraded` when background operations cannot run (not preloaded, or the launcher is down);
/// `healthy` otherwise.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn health() -> TableIterator<
    'static,
    (
        name!(status, String),
        name!(extension_version, String),
        name!(pg_version, String),
        name!(background_worker_running, bool),
        name!(shared_memory_available, bool),
        name!(active_operations, i64),
        name!(last_error, Option<String>),
    ),
> {
    let library = env!("CARGO_PKG_VERSION").to_string();
    let (installed, pg_version, has_queue) = Spi::get_three::<String, String, bool>(
        "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'steep_repl'),
                pg_catalog.current_setting('server_version'),
                pg_catalog.to_regclass('steep_repl.work_queue') IS NOT NULL",
    )
    .unwrap_or_else(|e| error!("steep_repl.health(): reading the catalog failed: {e}"));
    let (active, last_failed) = if has_queue == Some(true) {
        Spi::get_two::<i64, String>(
            "SELECT (SELECT count(*) FROM steep_repl.work_queue
                      WHERE status IN ('pending', 'running')),
                    (SELECT error_message FROM steep_repl.work_queue
                      WHERE status = 'failed' ORDER BY completed_at DESC NULLS LAST LIMIT 1)",
        )
    } else {
        Spi::get_two::<i64, String>(
            "SELECT (SELECT count(*) FROM steep_repl.snapshots
                      WHERE status IN ('pending', 'running')),
                    (SELECT error_message FROM steep_repl.snapshots
                      WHERE status = 'failed' ORDER BY completed_at DESC NULLS LAST LIMIT 1)",
        )
    }
    .unwrap_or_else(|e| error!("steep_repl.health(): reading operations failed: {e}"));
    let (workers, shm_error) = if preloaded() {
        let s = STATE.share();
        (pid_alive(s.launcher_pid), s.last_error.non_empty())
    } else {
        (false, None)
    };
    let status = if installed.as_deref() != Some(library.as_str()) {
        "unhealthy"
    } else if !workers {
        "degraded"
    } else {
        "healthy"
    };
    TableIterator::once((
        status.to_string(),
        library,
        pg_version.unwrap_or_default(),
        workers,
        preloaded(),
        active.unwrap_or(0),
        shm_error.or(last_failed),
    ))
}
