//! A job worker: claims one pending job of its database (FOR UPDATE SKIP LOCKED), runs it with the
//! privileges of the role that queued it, publishes its progress (shared-memory slot, NOTIFY from
//! short transactions of its own, the work_queue row), and records how it ended.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use serde_json::Value;
use steep::engine::error::ErrorKind;
use steep::engine::snapshot_row::{self, Totals};
use steep::progress_record::{ProgressEvent, ProgressSignal, CHANNEL};

use crate::shmem::{now_ms, pid_alive, Slot, STATE};
use crate::worker::{db_oid_arg, selftest, tx};

/// NOTIFY at most this often while progress changes...
const NOTIFY_MIN: Duration = Duration::from_millis(200);
/// ...and at least this often while the job runs, changed or not.
const NOTIFY_MAX: Duration = Duration::from_millis(500);
/// The work_queue row (and the snapshot/merge row) is refreshed this often.
const ROW_EVERY: Duration = Duration::from_secs(1);

/// Why a job stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    Cancelled,
    Shutdown,
}

#[derive(Debug)]
pub enum JobError {
    Stopped(Stop),
    Failed(String),
    /// The engine failed with an error whose kind decides what callers do (recorded in the
    /// job's result as `error_kind`, so the CLI needs no message text to tell).
    Engine(String, Option<ErrorKind>),
}

impl JobError {
    pub fn engine(e: anyhow::Error) -> Self {
        JobError::Engine(format!("{e:#}"), ErrorKind::of(&e))
    }
}

impl From<Stop> for JobError {
    fn from(s: Stop) -> Self {
        JobError::Stopped(s)
    }
}

impl From<String> for JobError {
    fn from(s: String) -> Self {
        JobError::Failed(s)
    }
}

pub struct Claimed {
    pub id: i64,
    pub op: String,
    pub params: Value,
    pub created_by: String,
    /// created_by's oid (InvalidOid when the role no longer exists).
    pub owner: pg_sys::Oid,
    pub snapshot_id: Option<String>,
    pub merge_id: Option<String>,
    slot: usize,
}

/// A running job's view of itself: its parameters, progress and stop requests.
pub struct JobCtx {
    pub job: Claimed,
    pub event: ProgressEvent,
    /// What a snapshot job produced, for its snapshots row at the end.
    pub totals: Option<Totals>,
    /// What the engine said as it stopped for a cancel or shutdown (what it removed), added to
    /// the job's message.
    pub stop_detail: Option<String>,
    started: Instant,
    last_notify: Instant,
    notified: Option<ProgressEvent>,
    last_row: Instant,
    shutdown: bool,
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn steep_repl_job_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = db_oid_arg(arg);
    crate::worker::connect(Some(db));
    // A progress slot first: without one the job is not claimed and stays pending (the
    // database worker says why), rather than failing.
    let Some(slot) = reserve_slot(db) else {
        return;
    };
    // SAFETY: a plain callback that frees our slot when this process exits, however it exits.
    unsafe { pg_sys::before_shmem_exit(Some(release_slot), pg_sys::Datum::from(slot)) };
    let job = match tx(|| claim(db, slot)) {
        Ok(Some(job)) => job,
        Ok(None) => return, // another worker took it, or it was cancelled
        Err(e) => {
            warning!("steep_repl job worker: claiming a job failed: {e}");
            return;
        }
    };
    let mut ctx = JobCtx::new(job);
    ctx.publish(true);
    // An ERROR or panic anywhere in the job ends it as failed with that message, not as a dead
    // worker the sweep has to explain.
    let outcome = {
        let ctx = std::panic::AssertUnwindSafe(&mut ctx);
        PgTryBuilder::new(move || {
            let whole = ctx; // capture the wrapper, not its field
            dispatch(whole.0)
        })
        .catch_others(|e| Err(JobError::Failed(crate::worker::error_message(&e))))
        .execute()
    };
    ctx.finish(outcome);
}

fn dispatch(ctx: &mut JobCtx) -> Result<Value, JobError> {
    if ctx.job.owner == pg_sys::InvalidOid {
        return Err(JobError::Failed(format!(
            "role {:?}, which queued the job, no longer exists",
            ctx.job.created_by
        )));
    }
    match ctx.job.op.as_str() {
        "selftest" => selftest::run(ctx),
        "snapshot_generate" => super::snapshot_jobs::generate(ctx),
        "snapshot_apply" => super::snapshot_jobs::apply(ctx),
        "merge_analysis" => super::merge_jobs::analyze(ctx),
        "merge" => super::merge_jobs::merge(ctx),
        "replication_init" => super::replication_jobs::init(ctx),
        "replication_drop" => super::replication_jobs::drop(ctx),
        other => Err(JobError::Failed(format!(
            "{other} is not implemented yet in steep_repl {}",
            env!("CARGO_PKG_VERSION")
        ))),
    }
}

/// Reserve a free progress slot for this process (job id -1, no owner: nobody sees it), or None
/// when every slot of the server is taken.
fn reserve_slot(db: pg_sys::Oid) -> Option<usize> {
    // SAFETY: reading our own pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut s = STATE.exclusive();
    let i = s
        .slots
        .iter()
        .position(|sl| sl.job_id == 0 || !pid_alive(sl.pid))?;
    s.slots[i] = Slot {
        job_id: -1,
        db_oid: db.to_u32(),
        pid: me,
        ..Slot::EMPTY
    };
    Some(i)
}

/// Take the oldest pending job into the reserved `slot`. The slot is filled before the claim
/// commits, so anyone who sees the job running also finds its slot.
fn claim(db: pg_sys::Oid, slot: usize) -> Option<Claimed> {
    let row = Spi::connect_mut(|c| {
        let t = c.update(
            "UPDATE steep_repl.work_queue w
             SET status = 'running', started_at = clock_timestamp(), worker_pid = pg_backend_pid()
             WHERE w.id = (SELECT id FROM steep_repl.work_queue WHERE status = 'pending'
                           ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING w.id, w.operation, w.params::text, w.created_by::text, w.snapshot_id,
                       (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = w.created_by),
                       w.merge_id",
            None,
            &[],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let t = t.first();
        Ok::<_, pgrx::spi::Error>(Some((
            t.get::<i64>(1)?.unwrap_or(0),
            t.get::<String>(2)?.unwrap_or_default(),
            t.get::<String>(3)?.unwrap_or_default(),
            t.get::<String>(4)?.unwrap_or_default(),
            t.get::<String>(5)?,
            t.get::<pg_sys::Oid>(6)?,
            t.get::<String>(7)?,
        )))
    })
    .unwrap_or_else(|e| error!("claiming a job: {e}"))?;
    let (id, op, params, created_by, snapshot_id, owner, merge_id) = row;
    // A role dropped after queueing: its job cannot run as anyone else.
    let owner = owner.unwrap_or(pg_sys::InvalidOid);
    // SAFETY: reading our own pid.
    let me = unsafe { pg_sys::MyProcPid };
    {
        let mut s = STATE.exclusive();
        let sl = &mut s.slots[slot];
        *sl = Slot {
            job_id: id,
            db_oid: db.to_u32(),
            owner_oid: owner.to_u32(),
            pid: me,
            ..Slot::EMPTY
        };
        sl.op.set(&op);
        sl.status.set("running");
        sl.snapshot_id.set_opt(snapshot_id.as_deref());
        sl.started_ms = now_ms();
        sl.updated_ms = sl.started_ms;
    }
    Some(Claimed {
        id,
        op,
        params: serde_json::from_str(&params).unwrap_or(Value::Null),
        created_by,
        owner,
        snapshot_id,
        merge_id,
        slot,
    })
}

#[pg_guard]
unsafe extern "C-unwind" fn release_slot(_code: i32, arg: pg_sys::Datum) {
    let i = arg.value();
    // SAFETY: reading our own pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut s = STATE.exclusive();
    if i < s.slots.len() && s.slots[i].pid == me {
        s.slots[i] = Slot::EMPTY;
    }
}

impl JobCtx {
    fn new(job: Claimed) -> Self {
        let event = ProgressEvent {
            op: job.op.clone(),
            id: job.id,
            status: "running".into(),
            snapshot_id: job.snapshot_id.clone(),
            ..Default::default()
        };
        let now = Instant::now();
        Self {
            job,
            event,
            totals: None,
            stop_detail: None,
            started: now,
            last_notify: now - NOTIFY_MAX,
            notified: None,
            last_row: now,
            shutdown: false,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Publish the current progress (slot always; NOTIFY and row when due) and report whether the
    /// job has to stop. Call it often (at least every 100 ms) and never inside a transaction.
    pub fn tick(&mut self) -> Result<(), Stop> {
        self.publish(false);
        self.should_stop()
    }

    /// Sleep up to `d` (woken early by a cancel request), then tick.
    pub fn sleep(&mut self, d: Duration) -> Result<(), Stop> {
        if !BackgroundWorker::wait_latch(Some(d)) {
            self.shutdown = true;
        }
        self.tick()
    }

    pub fn should_stop(&mut self) -> Result<(), Stop> {
        if BackgroundWorker::sigterm_received() {
            self.shutdown = true;
        }
        if self.shutdown {
            return Err(Stop::Shutdown);
        }
        let cancelled = STATE.share().slots[self.job.slot].cancel_requested;
        if cancelled {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    fn write_slot(&self) {
        let mut s = STATE.exclusive();
        let sl = &mut s.slots[self.job.slot];
        if sl.job_id == self.job.id {
            sl.set_progress(&self.event);
        }
    }

    /// Slot always; NOTIFY when due (or `force`); the row every ROW_EVERY.
    pub fn publish(&mut self, force: bool) {
        self.write_slot();
        let since = self.last_notify.elapsed();
        let changed = self.notified.as_ref() != Some(&self.event);
        if !(force || since >= NOTIFY_MAX || (changed && since >= NOTIFY_MIN)) {
            return;
        }
        let refresh_row = force || self.last_row.elapsed() >= ROW_EVERY;
        let mut event = self.event.clone();
        event.sent_at_ms = now_ms();
        let payload = event.to_payload();
        let (id, sent) = (self.job.id, event.sent_at_ms);
        let rows = refresh_row.then_some(Rows {
            snapshot_id: self.job.snapshot_id.as_deref(),
            owner: &self.job.created_by,
            payload: payload.as_str(),
        });
        if let Err(e) = record_progress(id, sent, rows, None) {
            warning!("steep_repl job {id}: publishing progress failed: {e}");
        }
        self.last_notify = Instant::now();
        if refresh_row {
            self.last_row = self.last_notify;
        }
        self.notified = Some(self.event.clone());
    }

    /// Record the outcome in the row and tell listeners, then free the slot.
    fn finish(mut self, outcome: Result<Value, JobError>) {
        let detail = self.stop_detail.take();
        let (status, error, result) = match outcome {
            Ok(v) => ("complete", None, Some(v)),
            Err(JobError::Stopped(Stop::Cancelled)) => (
                "cancelled",
                Some(with_detail("cancelled by request".to_string(), &detail)),
                None,
            ),
            Err(JobError::Stopped(Stop::Shutdown)) => (
                "failed",
                Some(with_detail(
                    if server_stopping() {
                        "PostgreSQL is shutting down; the job was interrupted".to_string()
                    } else {
                        format!(
                            "the job's worker (pid {}) was terminated (pg_terminate_backend or \
                             SIGTERM) while the server kept running; the job was interrupted",
                            std::process::id()
                        )
                    },
                    &detail,
                )),
                None,
            ),
            // A failure while the server shuts down (a connection refused or terminated) is
            // the shutdown's doing: say so first.
            Err(JobError::Failed(m)) | Err(JobError::Engine(m, None)) if server_stopping() => (
                "failed",
                Some(format!(
                    "PostgreSQL is shutting down; the job was interrupted ({m})"
                )),
                None,
            ),
            Err(JobError::Failed(m)) | Err(JobError::Engine(m, None)) => ("failed", Some(m), None),
            Err(JobError::Engine(m, Some(kind))) => (
                if kind == ErrorKind::Cancelled {
                    "cancelled"
                } else {
                    "failed"
                },
                Some(m),
                Some(serde_json::json!({ "error_kind": kind.name() })),
            ),
        };
        if status == "complete" {
            self.event.percent = 100.0;
            self.event.eta_seconds = Some(0);
        }
        self.event.status = status.into();
        self.event.error = error.clone();
        // The row first, the slot after: whoever reads "complete" (a follower woken by the
        // final signal reads the slot while it lives) then also finds the row complete.
        let mut event = self.event.clone();
        event.sent_at_ms = now_ms();
        let (id, sent) = (self.job.id, event.sent_at_ms);
        let payload = event.to_payload();
        let totals = self.totals.as_ref().map(Totals::to_json);
        let end = FinalState {
            status,
            error: error.as_deref(),
            result: result.as_ref(),
            totals: totals.as_deref(),
        };
        let rows = Some(Rows {
            snapshot_id: self.job.snapshot_id.as_deref(),
            owner: &self.job.created_by,
            payload: payload.as_str(),
        });
        if let Err(e) = record_progress(id, sent, rows, Some(&end)) {
            // The database worker's sweep fails the job once this process is gone.
            warning!(
                "steep_repl job {}: recording its end failed: {e}",
                self.job.id
            );
        }
        self.write_slot();
        let mut s = STATE.exclusive();
        s.slots[self.job.slot] = Slot::EMPTY;
    }
}

struct FinalState<'a> {
    status: &'a str,
    error: Option<&'a str>,
    result: Option<&'a Value>,
    /// A snapshot job's `Totals` JSON.
    totals: Option<&'a str>,
}

/// What goes into the rows: the job's progress record, and the snapshot it works on.
struct Rows<'a> {
    snapshot_id: Option<&'a str>,
    /// The job's owner (created_by).
    owner: &'a str,
    payload: &'a str,
}

/// A signal on CHANNEL (sent at `sent_at_ms`), and with `rows` the progress and end state: first
/// its snapshot's row, in a transaction of its own (so a failure there never loses the job's
/// end, and whoever reads the job ended finds the snapshot ended too), then the job's row with
/// the signal. Parameterised: nothing here is SQL text built from values.
fn record_progress(
    id: i64,
    sent_at_ms: i64,
    rows: Option<Rows>,
    end: Option<&FinalState>,
) -> Result<(), String> {
    if let Some(sid) = rows.as_ref().and_then(|r| r.snapshot_id) {
        let (owner, payload) = rows
            .as_ref()
            .map(|r| (r.owner, r.payload))
            .unwrap_or_default();
        if let Err(e) = tx(|| record_snapshot(sid, owner, payload, end))
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            warning!("steep_repl job {id}: recording its snapshot {sid}: {e}");
        }
    }
    let write = || {
        if let Some(r) = &rows {
            let (status, error, result) = match end {
                Some(e) => (
                    Some(e.status.to_string()),
                    e.error.map(str::to_string),
                    e.result.map(|r| r.to_string()),
                ),
                None => (None, None, None),
            };
            Spi::run_with_args(
                "UPDATE steep_repl.work_queue
                 SET progress = $2::jsonb,
                     status = coalesce($3, status),
                     completed_at = CASE WHEN $3 IS NULL THEN completed_at
                                         ELSE pg_catalog.clock_timestamp() END,
                     error_message = CASE WHEN $3 IS NULL THEN error_message ELSE $4 END,
                     result = CASE WHEN $3 IS NULL THEN result ELSE $5::jsonb END
                 WHERE id = $1",
                &[
                    id.into(),
                    r.payload.into(),
                    status.into(),
                    error.into(),
                    result.into(),
                ],
            )?;
        }
        // A merge job's row ends with its job (a job row names only its owner's merge).
        if let (Some(e), Some(_)) = (end, &rows) {
            Spi::run_with_args(
                "UPDATE steep_repl.merges m
                    SET status = $2, error_message = $3,
                        completed_at = pg_catalog.clock_timestamp()
                   FROM steep_repl.work_queue w
                  WHERE w.id = $1 AND m.merge_id = w.merge_id AND m.created_by = w.created_by
                    -- A merge that completed with conflicts undecided stays awaiting them; one
                    -- whose job failed or was cancelled while it waited ends with its job.
                    AND (m.status IN ('pending', 'running')
                         OR (m.status = 'awaiting_decisions' AND $2 <> 'complete'))",
                &[id.into(), e.status.into(), e.error.into()],
            )?;
        }
        // Listeners learn only that this job moved; its progress stays behind row security.
        let signal = ProgressSignal { id, sent_at_ms };
        Spi::run_with_args(
            "SELECT pg_catalog.pg_notify($1, $2)",
            &[CHANNEL.into(), signal.to_payload().into()],
        )
    };
    tx(write).and_then(|r| r.map_err(|e| e.to_string()))
}

/// The job's snapshot row, through the functions client mode calls too (0.4.0+; an older
/// installed version gets the same columns from one statement). Only the job owner's own snapshot
/// (a job row may name no other), and as the worker: the owner's grants or a dropped owner must
/// not leave the row behind.
fn record_snapshot(
    snapshot_id: &str,
    owner: &str,
    payload: &str,
    end: Option<&FinalState>,
) -> Result<(), pgrx::spi::Error> {
    // Asked once per job (a job worker runs one job): whose row it is does not change, and the
    // older statements still fit a version updated meanwhile.
    static CHECKED: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    let (mine, current) = match CHECKED.get() {
        Some(c) => *c,
        None => {
            let (mine, current) = Spi::get_two_with_args::<bool, bool>(
                &format!(
                    "SELECT coalesce((SELECT s.created_by = $2 FROM steep_repl.snapshots s
                                      WHERE s.snapshot_id = $1), false),
                            ({})",
                    snapshot_row::AVAILABLE
                ),
                &[snapshot_id.into(), owner.into()],
            )?;
            *CHECKED.get_or_init(|| (mine.unwrap_or(false), current.unwrap_or(false)))
        }
    };
    if !mine {
        return Ok(());
    }
    match (end, current) {
        (None, true) => {
            Spi::run_with_args(snapshot_row::RECORD, &[snapshot_id.into(), payload.into()])
        }
        (Some(e), true) => Spi::run_with_args(
            snapshot_row::END,
            &[
                snapshot_id.into(),
                e.status.into(),
                e.error.into(),
                e.totals.into(),
            ],
        ),
        (None, false) => Spi::run_with_args(
            snapshot_row::RECORD_BEFORE_0_4,
            &[snapshot_id.into(), payload.into()],
        ),
        (Some(e), false) => Spi::run_with_args(
            snapshot_row::END_BEFORE_0_4,
            &[
                snapshot_id.into(),
                e.status.into(),
                e.error.into(),
                e.totals.into(),
            ],
        ),
    }
}

/// Whether the postmaster is shutting down: it marks its lock file "stopping" before it signals
/// anyone (as pg_ctl reads it), which tells a shutdown from a pg_terminate_backend — both arrive
/// as the same SIGTERM.
fn server_stopping() -> bool {
    // SAFETY: DataDir is set for the life of every backend; read-only.
    let dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    let pid_file = std::path::Path::new(&*dir.to_string_lossy()).join("postmaster.pid");
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.lines().nth(7).map(|l| l.trim() == "stopping"))
        .unwrap_or(true)
}

/// A stopped job's message with what the engine said as it stopped.
fn with_detail(message: String, detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!("{message}: {d}"),
        None => message,
    }
}
