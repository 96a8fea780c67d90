//! The database worker: one per database with steep_repl while the database has work. On start
//! and every few seconds it fails jobs left `running` by a worker that is gone; whenever woken (a
//! job was queued) it starts a job worker per pending job, up to steep_repl.max_jobs. With no job
//! pending or running for IDLE_EXIT it leaves (the launcher starts it again when a job is queued),
//! so an idle database has no steep process connected.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use steep::progress_record::{CHANNEL, SIGNAL_SQL};

use crate::gucs;
use crate::shmem::{now_ms, DbState, MAX_SLOTS, STATE};
use crate::worker::{db_oid_arg, reload_config, start_job_worker, tx};

const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long a database worker stays with nothing to do (DROP DATABASE waits 5 s for sessions).
const IDLE_EXIT: Duration = Duration::from_secs(1);

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn steep_repl_database_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = db_oid_arg(arg);
    crate::worker::connect(Some(db));
    // steep_repl at a version with a work queue (0.1.0 has none: nothing to do there).
    if !has_work_queue() {
        set_state(db, DbState::Absent, 0);
        return;
    }
    // SAFETY: reading our own pid.
    let me = unsafe { pg_sys::MyProcPid };
    set_state(db, DbState::Running, me);
    // SAFETY: registers a plain callback run when this process exits.
    unsafe { pg_sys::before_shmem_exit(Some(unregister), pg_sys::Datum::from(db.to_u32())) };

    let mut jobs: Vec<DynamicBackgroundWorker> = Vec::new();
    let mut last_sweep = Instant::now() - SWEEP_EVERY;
    let mut idle_since: Option<Instant> = None;
    loop {
        if BackgroundWorker::sighup_received() {
            reload_config();
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            match tx(|| fail_orphans(db)) {
                Ok(n) if n > 0 => log!("steep_repl: failed {n} job(s) whose worker stopped"),
                Ok(_) => {}
                Err(_) if extension_gone() => {
                    set_state(db, DbState::Absent, 0);
                    break;
                }
                Err(e) => warning!("steep_repl worker: checking for orphaned jobs: {e}"),
            }
            last_sweep = Instant::now();
        }
        // Forget job workers that have exited.
        jobs.retain(|h| {
            !matches!(
                h.pid(),
                Err(BackgroundWorkerStatus::Stopped) | Err(BackgroundWorkerStatus::PostmasterDied)
            )
        });
        let (pending, running) = match tx(count_jobs) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                warning!("steep_repl worker: counting pending jobs: {e}");
                (0, 1)
            }
            Err(_) if extension_gone() => {
                set_state(db, DbState::Absent, 0);
                break;
            }
            Err(e) => {
                warning!("steep_repl worker: counting pending jobs: {e}");
                (0, 1)
            }
        };
        let ours: Vec<i32> = jobs.iter().filter_map(|h| h.pid().ok()).collect();
        let (others, free_slots) = {
            let s = STATE.share();
            let others = s
                .slots
                .iter()
                .filter(|sl| sl.db_oid == db.to_u32() && sl.in_use() && !ours.contains(&sl.pid))
                .count();
            // Slots are shared by every database's jobs; a job worker started without one
            // would only find the job still pending.
            let free = s.slots.iter().filter(|sl| !sl.in_use()).count();
            (
                others,
                free.saturating_sub(jobs.len().saturating_sub(ours.len())),
            )
        };
        let max_jobs = gucs::max_jobs();
        let free = max_jobs.saturating_sub(jobs.len() + others).min(free_slots);
        let mut started = 0;
        let mut waiting = None;
        for _ in 0..pending.min(free) {
            match start_job_worker(db) {
                Some(h) => {
                    jobs.push(h);
                    started += 1;
                }
                None => {
                    waiting = Some(format!(
                        "waiting for a background worker process: all max_worker_processes \
                         ({}) are in use; raise it (server restart) or stop other workers",
                        // SAFETY: a plain integer setting, read-only.
                        unsafe { pg_sys::max_worker_processes }
                    ));
                    break;
                }
            }
        }
        if waiting.is_none() && pending > started {
            waiting = Some(if jobs.len() + others >= max_jobs {
                format!(
                    "waiting for one of the {} running jobs of this database to end \
                     (steep_repl.max_jobs = {max_jobs})",
                    jobs.len() + others
                )
            } else {
                format!(
                    "waiting for a job slot: all {MAX_SLOTS} of this server are used by \
                     steep_repl jobs of other databases"
                )
            });
        }
        if let Some(reason) = waiting {
            if let Err(e) = tx(|| show_waiting(&reason)).and_then(|r| r.map_err(|e| e.to_string()))
            {
                warning!("steep_repl worker: recording why jobs wait: {e}");
            }
        }
        // Nothing pending, running or starting here: after IDLE_EXIT, leave.
        let busy = pending > 0 || running > 0 || !jobs.is_empty() || others > 0;
        if busy {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_EXIT {
            if leave_if_idle(db, me) {
                break;
            }
            idle_since = None;
        }
        let tick = if idle_since.is_some() {
            IDLE_EXIT
        } else {
            Duration::from_secs(1)
        };
        if !BackgroundWorker::wait_latch(Some(tick)) {
            break;
        }
    }
}

/// Whether this database has steep_repl at a version with a work queue (0.1.0 has none).
fn has_work_queue() -> bool {
    let present =
        tx(|| Spi::get_one::<bool>("SELECT to_regclass('steep_repl.work_queue') IS NOT NULL"));
    matches!(present, Ok(Ok(Some(true))))
}

/// After a failed statement: was it DROP EXTENSION while we run? Asked of the catalog, not read
/// from the error's text (which depends on lc_messages and on object names).
fn extension_gone() -> bool {
    !has_work_queue()
}

fn set_state(db: pg_sys::Oid, state: DbState, pid: i32) {
    let mut s = STATE.exclusive();
    if let Some(e) = s.dbs.iter_mut().find(|e| e.db_oid == db.to_u32()) {
        e.state = state;
        e.pid = pid;
        e.checked_ms = now_ms();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn unregister(_code: i32, arg: pg_sys::Datum) {
    let db = arg.value() as u32;
    // SAFETY: reading our own pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut s = STATE.exclusive();
    // Still registered as running: it did not leave on purpose (a signal, an error); the
    // launcher starts it again.
    if let Some(e) = s.dbs.iter_mut().find(|e| e.db_oid == db && e.pid == me) {
        e.pid = 0;
        e.state = DbState::Empty;
    }
}

/// Pending and running jobs of this database.
fn count_jobs() -> Result<(usize, usize), pgrx::spi::Error> {
    let (pending, running) = Spi::get_two::<i64, i64>(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'running')
         FROM steep_repl.work_queue WHERE status IN ('pending', 'running')",
    )?;
    Ok((pending.unwrap_or(0) as usize, running.unwrap_or(0) as usize))
}

/// Leave when the database still has nothing to do. Marked idle first, checked second: a job
/// committed before the mark finds this worker registered and is seen by the check; one
/// committed after finds the database idle and has the launcher start a worker.
fn leave_if_idle(db: pg_sys::Oid, me: i32) -> bool {
    set_state(db, DbState::Idle, 0);
    let still_idle = matches!(tx(count_jobs), Ok(Ok((0, 0))));
    if !still_idle {
        set_state(db, DbState::Running, me);
    }
    still_idle
}

/// Fail the jobs marked running whose worker is gone. Candidates are read first (rows already
/// committed as running, skipping rows a worker has locked), then the slots: a job worker
/// registers its slot before its claim commits, so a live job is always found.
fn fail_orphans(db: pg_sys::Oid) -> i64 {
    Spi::connect_mut(|c| {
        let candidates: Vec<i64> = c
            .update(
                "SELECT id FROM steep_repl.work_queue WHERE status = 'running'
                 FOR UPDATE SKIP LOCKED",
                None,
                &[],
            )?
            .filter_map(|r| r.get::<i64>(1).ok().flatten())
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        let live: Vec<i64> = {
            let s = STATE.share();
            s.slots
                .iter()
                .filter(|sl| sl.db_oid == db.to_u32() && sl.in_use())
                .map(|sl| sl.job_id)
                .collect()
        };
        let orphans: Vec<i64> = candidates
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        // A generate that died leaves a partial snapshot behind: remove it (only a directory its
        // marker says holds this snapshot's unfinished output), and say so in the job's error.
        let mut notes: Vec<String> = Vec::new();
        for r in c.select(
            "SELECT w.id, w.params ->> 'path', w.snapshot_id, w.created_by::text
             FROM steep_repl.work_queue w
             WHERE w.id = ANY($1) AND w.operation = 'snapshot_generate'",
            None,
            &[orphans.clone().into()],
        )? {
            let (id, path, snapshot, owner) = (
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
            );
            notes.push(format!(
                "{id}\t{}",
                remove_partial(&path, &snapshot, &format!("job {id}"), &owner)
            ));
        }
        let n = c
            .update(
                &format!(
                    "WITH failed AS (
                    UPDATE steep_repl.work_queue w
                    SET status = 'failed', completed_at = clock_timestamp(),
                        error_message = CASE
                            WHEN pg_postmaster_start_time() > w.started_at
                            THEN 'PostgreSQL restarted while the job ran; see the server log'
                            ELSE format('the job''s worker process (pid %s) stopped before the job \
                                         finished; see the server log', w.worker_pid)
                        END || coalesce((SELECT '; ' || split_part(n, E'\t', 2)
                                         FROM unnest($3::text[]) n
                                         WHERE split_part(n, E'\t', 1) = w.id::text), '')
                    WHERE w.id = ANY($1) AND w.status = 'running'
                    RETURNING w.id, w.operation, w.snapshot_id, w.merge_id, w.error_message
                 ), snaps AS (
                    -- The columns snapshot_end sets (the function may predate the installed
                    -- version).
                    UPDATE steep_repl.snapshots s
                    SET status = 'failed', completed_at = clock_timestamp(),
                        error_message = f.error_message, phase = 'failed',
                        eta_seconds = NULL, current_table = NULL
                    FROM failed f
                    WHERE s.snapshot_id = f.snapshot_id AND s.status IN ('pending', 'running')
                 ), merges AS (
                    UPDATE steep_repl.merges m
                    SET status = 'failed', completed_at = clock_timestamp(),
                        error_message = f.error_message
                    FROM failed f
                    WHERE m.merge_id = f.merge_id
                      AND m.status IN ('pending', 'running', 'awaiting_decisions')
                 )
                 SELECT pg_catalog.count(pg_catalog.pg_notify($2, {SIGNAL_SQL}))
                 FROM failed f"
                ),
                None,
                &[orphans.into(), CHANNEL.into(), notes.into()],
            )?
            .first()
            .get::<i64>(1)?
            .unwrap_or(0);
        Ok::<_, pgrx::spi::Error>(n)
    })
    .unwrap_or_else(|e| error!("failing orphaned jobs: {e}"))
}

/// Say on every pending job why it waits (its `progress` phase, which `operation_progress` and
/// the CLI show), and signal followers of the rows that changed. A job worker overwrites it with
/// real progress when it claims the job.
fn show_waiting(reason: &str) -> Result<(), pgrx::spi::Error> {
    Spi::connect_mut(|c| {
        c.update(
            &format!(
                "WITH w AS (
                     UPDATE steep_repl.work_queue
                     SET progress = pg_catalog.jsonb_build_object(
                             'op', operation, 'id', id, 'status', 'pending', 'phase', $1::text)
                     WHERE id IN (SELECT id FROM steep_repl.work_queue
                                  WHERE status = 'pending'
                                    AND (progress ->> 'phase') IS DISTINCT FROM $1::text
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING id)
                 SELECT pg_catalog.pg_notify('{CHANNEL}', {SIGNAL_SQL}) FROM w"
            ),
            None,
            &[reason.into()],
        )?;
        Ok(())
    })
}

/// Remove the partial output the dead generate job `run` left at `path` (checked again as its
/// owner would be confined; only a directory whose marker names this snapshot and this very job,
/// so a row forged with another job's path and snapshot removes nothing), and say what became of
/// it.
fn remove_partial(path: &str, snapshot_id: &str, run: &str, owner: &str) -> String {
    let privileged = crate::snapshot_api::may_use_server_files(owner, true);
    let dir = match steep::engine::paths::confine(
        path,
        crate::snapshot_api::snapshot_dir().as_deref(),
        privileged,
    ) {
        Ok(d) => d,
        Err(_) => return format!("its partial output (if any) at {path} was left alone"),
    };
    match steep::engine::partial_output::remove(&dir, snapshot_id, run) {
        Ok(true) => format!("its partial output at {} was removed", dir.display()),
        Ok(false) => "it left no partial output".to_string(),
        Err(e) => format!(
            "its partial output at {} could not be removed ({e:#}): remove it with `rm -r -- {}`",
            dir.display(),
            steep::sql::quote_literal(&dir.to_string_lossy())
        ),
    }
}
