//! health(): one row describing whether this extension can do its work here.

use pgrx::prelude::*;

use crate::preloaded;

/// `unhealthy` when the loaded library and the installed SQL disagree on the version (run
/// `ALTER EXTENSION steep_repl UPDATE`); `degraded` when not loaded through
/// shared_preload_libraries (background operations unavailable); `healthy` otherwise.
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
    let (installed, pg_version, active, last_error) = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'steep_repl'),
                        pg_catalog.current_setting('server_version'),
                        (SELECT count(*) FROM steep_repl.snapshots
                          WHERE status IN ('pending', 'running')),
                        (SELECT error_message FROM steep_repl.snapshots
                          WHERE status = 'failed' ORDER BY completed_at DESC NULLS LAST LIMIT 1)",
                Some(1),
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<String>(1)?,
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<i64>(3)?.unwrap_or(0),
            row.get::<String>(4)?,
        ))
    })
    .unwrap_or_else(|e| error!("steep_repl.health(): reading the catalog failed: {e}"));
    let status = if installed.as_deref() != Some(library.as_str()) {
        "unhealthy"
    } else if !preloaded() {
        "degraded"
    } else {
        "healthy"
    };
    TableIterator::once((
        status.to_string(),
        library,
        pg_version,
        false,
        preloaded(),
        active,
        last_error,
    ))
}
