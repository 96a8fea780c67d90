//! steep_repl: the extension half of steep. It installs with `CREATE EXTENSION` with or without
//! `shared_preload_libraries`; the background-worker features need the preload.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;

mod apply_markers;
mod dump;
mod fingerprints;
mod gucs;
mod health;
mod merge_api;
mod nodes;
mod operations;
mod replication;
mod schema_shapes;
mod security;
mod shmem;
mod snapshot_api;
mod tables;
mod worker;

::pgrx::pg_module_magic!(name, version);

/// Set when the library was loaded through shared_preload_libraries.
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Whether this library was loaded at server start (shared_preload_libraries).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a plain global PostgreSQL sets before loading preload libraries.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    gucs::register(preloading);
    if preloading {
        PRELOADED.store(true, Ordering::Relaxed);
        shmem::init();
        worker::launcher::register();
    }
}

/// Version of the loaded shared library (compare with `pg_extension.extversion`).
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The oldest PostgreSQL this extension supports, as a server_version_num (150000 = 15.0).
#[pg_extern(immutable, parallel_safe)]
fn min_pg_version() -> i32 {
    150000
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'steep_repl'"]
    }
}
