//! Configuration settings (GUCs). Defined in _PG_init whether or not the library is preloaded,
//! so `SHOW steep_repl.*` works everywhere.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Concurrent jobs per database, each in its own background worker.
pub static MAX_JOBS: GucSetting<i32> = GucSetting::<i32>::new(4);

/// The database the launcher connects to in order to list databases.
pub static LAUNCHER_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// How workers reach their own server for client-protocol work (COPY through the shared engine).
pub static WORKER_CONNINFO: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Where direct-mode snapshots may be read and written on the server.
pub static SNAPSHOT_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn register(preloaded: bool) {
    GucRegistry::define_int_guc(
        c"steep_repl.max_jobs",
        c"Concurrent steep_repl jobs per database",
        c"Each job runs in its own background worker; jobs beyond this wait in the queue.",
        &MAX_JOBS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"steep_repl.worker_conninfo",
        c"Connection string steep_repl workers use to reach this server",
        c"Empty: the first unix_socket_directories entry, this port, the bootstrap superuser. \
          It must log in as a superuser: each session is put at once under security-restricted \
          operation as the job's owner and keeps exactly that role's rights. Use a passfile, \
          not a password here.",
        &WORKER_CONNINFO,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"steep_repl.snapshot_dir",
        c"Directory direct-mode snapshots are confined to",
        c"Empty: steep_snapshots inside the data directory.",
        &SNAPSHOT_DIR,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    if preloaded {
        GucRegistry::define_string_guc(
            c"steep_repl.database",
            c"Database the steep_repl launcher connects to",
            c"Only used to list the databases; jobs run in the database that queued them.",
            &LAUNCHER_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
}

pub fn launcher_database() -> String {
    LAUNCHER_DATABASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres".into())
}

pub fn max_jobs() -> usize {
    MAX_JOBS.get().clamp(1, 64) as usize
}
