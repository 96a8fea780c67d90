//! The launcher: registered at server start when preloaded. At its start it runs a database
//! worker once in every database (the sweep of jobs a restart interrupted; databases without
//! steep_repl are noted); afterwards it starts a database's worker only when a backend queues work
//! there. A database worker leaves when its database has nothing to do, so no steep process stays
//! connected to an idle database (DROP DATABASE works as without steep).

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::shmem::{now_ms, pid_alive, DbEntry, DbState, STATE};
use crate::worker::{reload_config, start_database_worker, tx};

/// A worker that has not registered this long after being started is started again.
const STARTING_TIMEOUT_MS: i64 = 10_000;

pub fn register() {
    BackgroundWorkerBuilder::new("steep_repl launcher")
        .set_type("steep_repl launcher")
        .set_library("steep_repl")
        .set_function("steep_repl_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn steep_repl_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    crate::worker::connect(None);
    // SAFETY: reading our own pid.
    STATE.exclusive().launcher_pid = unsafe { pg_sys::MyProcPid };
    log!("steep_repl launcher started");
    loop {
        if BackgroundWorker::sighup_received() {
            reload_config();
        }
        match tx(list_databases) {
            Ok(dbs) => ensure_workers(&dbs),
            Err(e) => warning!("steep_repl launcher: listing databases failed: {e}"),
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(2))) {
            break;
        }
    }
    STATE.exclusive().launcher_pid = 0;
}

fn list_databases() -> Vec<pg_sys::Oid> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT oid FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate",
            None,
            &[],
        )?;
        let mut v = Vec::new();
        for r in rows {
            if let Some(oid) = r.get::<pg_sys::Oid>(1)? {
                v.push(oid);
            }
        }
        Ok::<_, pgrx::spi::Error>(v)
    })
    .unwrap_or_else(|e| error!("reading pg_database: {e}"))
}

/// Start a database worker wherever one should run and does not.
fn ensure_workers(dbs: &[pg_sys::Oid]) {
    let now = now_ms();
    let mut to_start = Vec::new();
    {
        let mut s = STATE.exclusive();
        for e in s.dbs.iter_mut() {
            if e.db_oid != 0 && !dbs.iter().any(|d| d.to_u32() == e.db_oid) {
                *e = DbEntry::EMPTY;
            }
        }
        for db in dbs {
            let oid = db.to_u32();
            let idx = match s.dbs.iter().position(|e| e.db_oid == oid) {
                Some(i) => i,
                None => match s.dbs.iter().position(|e| e.db_oid == 0) {
                    Some(i) => {
                        s.dbs[i] = DbEntry {
                            db_oid: oid,
                            ..DbEntry::EMPTY
                        };
                        i
                    }
                    None => continue, // more databases than registry entries
                },
            };
            let e = &mut s.dbs[idx];
            let start = match e.state {
                DbState::Empty => true,
                DbState::Running => !pid_alive(e.pid),
                DbState::Starting => now - e.checked_ms > STARTING_TIMEOUT_MS,
                DbState::Absent | DbState::Idle => e.wanted,
            };
            if start {
                e.state = DbState::Starting;
                e.pid = 0;
                e.wanted = false;
                e.checked_ms = now;
                to_start.push(*db);
            }
        }
    }
    for db in to_start {
        let started = start_database_worker(db).is_some();
        let mut s = STATE.exclusive();
        let Some(e) = s.dbs.iter_mut().find(|e| e.db_oid == db.to_u32()) else {
            continue;
        };
        if started {
            e.blocked.set("");
            continue;
        }
        // Tried again on the next round (every 2 s); its pending jobs show the reason.
        let reason = format!(
            "waiting for a background worker process to run this database's steep_repl worker: \
             all max_worker_processes ({}) are in use; raise it (server restart) or stop other \
             workers",
            // SAFETY: a plain integer setting, read-only.
            unsafe { pg_sys::max_worker_processes }
        );
        let first = e.blocked.as_str() != reason;
        e.blocked.set(&reason);
        e.state = DbState::Empty;
        e.wanted = true;
        drop(s);
        if first {
            warning!("steep_repl launcher: database {}: {reason}", db.to_u32());
            crate::shmem::record_error(&format!("database {}: {reason}", db.to_u32()));
        }
    }
}
