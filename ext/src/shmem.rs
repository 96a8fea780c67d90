//! Shared memory: one fixed-size progress slot per running job, the per-database worker registry
//! and the launcher's pid, behind one PostgreSQL LWLock. Only present when preloaded.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use steep::progress_record::ProgressEvent;

pub const MAX_DATABASES: usize = 64;
pub const MAX_SLOTS: usize = 64;

/// A string stored inline (shared memory holds no pointers).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FixedStr<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> FixedStr<N> {
    pub const EMPTY: Self = Self {
        len: 0,
        bytes: [0; N],
    };

    pub fn set(&mut self, s: &str) {
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        self.len = end as u16;
    }

    pub fn set_opt(&mut self, s: Option<&str>) {
        self.set(s.unwrap_or(""));
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub fn non_empty(&self) -> Option<String> {
        (self.len > 0).then(|| self.as_str().to_string())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum DbState {
    Empty = 0,
    /// The launcher started a worker that has not registered yet.
    Starting = 1,
    Running = 2,
    /// The database has no steep_repl (checked at `checked_ms`).
    Absent = 3,
    /// The database has steep_repl and nothing to do: no worker is connected (so DROP DATABASE
    /// works as without steep); one is started when a job is queued.
    Idle = 4,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct DbEntry {
    pub db_oid: u32,
    pub pid: i32,
    pub state: DbState,
    /// A backend queued work here and found no worker: start one now.
    pub wanted: bool,
    pub checked_ms: i64,
    /// Why the launcher could not start this database's worker (shown on its pending jobs).
    pub blocked: FixedStr<160>,
}

impl DbEntry {
    pub const EMPTY: Self = Self {
        db_oid: 0,
        pid: 0,
        state: DbState::Empty,
        wanted: false,
        checked_ms: 0,
        blocked: FixedStr::EMPTY,
    };
}

/// Live progress of one running job.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slot {
    /// work_queue id; 0 when the slot is free.
    pub job_id: i64,
    pub db_oid: u32,
    /// The role the job runs as: who may see this slot (as in work_queue's row security).
    pub owner_oid: u32,
    pub pid: i32,
    pub cancel_requested: bool,
    pub op: FixedStr<32>,
    pub status: FixedStr<16>,
    pub phase: FixedStr<64>,
    pub table: FixedStr<200>,
    pub snapshot_id: FixedStr<64>,
    pub error: FixedStr<400>,
    pub percent: f64,
    pub tables_completed: i64,
    pub tables_total: i64,
    pub bytes: i64,
    pub bytes_total: i64,
    pub rows: i64,
    /// -1 when unknown.
    pub eta_seconds: i64,
    pub started_ms: i64,
    pub updated_ms: i64,
}

impl Slot {
    pub const EMPTY: Self = Self {
        job_id: 0,
        db_oid: 0,
        owner_oid: 0,
        pid: 0,
        cancel_requested: false,
        op: FixedStr::EMPTY,
        status: FixedStr::EMPTY,
        phase: FixedStr::EMPTY,
        table: FixedStr::EMPTY,
        snapshot_id: FixedStr::EMPTY,
        error: FixedStr::EMPTY,
        percent: 0.0,
        tables_completed: 0,
        tables_total: 0,
        bytes: 0,
        bytes_total: 0,
        rows: 0,
        eta_seconds: -1,
        started_ms: 0,
        updated_ms: 0,
    };

    pub fn in_use(&self) -> bool {
        self.job_id != 0 && pid_alive(self.pid)
    }

    /// The progress record into the slot (the one conversion in; the rest of the slot is the
    /// job's identity).
    pub fn set_progress(&mut self, e: &ProgressEvent) {
        self.status.set(&e.status);
        self.phase.set_opt(e.phase.as_deref());
        self.table.set_opt(e.table.as_deref());
        self.error.set_opt(e.error.as_deref());
        self.percent = e.percent;
        self.tables_completed = e.tables_completed;
        self.tables_total = e.tables_total;
        self.bytes = e.bytes;
        self.rows = e.rows;
        self.eta_seconds = e.eta_seconds.unwrap_or(-1);
        self.updated_ms = now_ms();
    }

    /// The progress record out of the slot (the one conversion out).
    pub fn progress(&self) -> ProgressEvent {
        ProgressEvent {
            op: self.op.as_str().to_string(),
            id: self.job_id,
            status: self.status.as_str().to_string(),
            phase: self.phase.non_empty(),
            percent: self.percent,
            table: self.table.non_empty(),
            tables_completed: self.tables_completed,
            tables_total: self.tables_total,
            bytes: self.bytes,
            rows: self.rows,
            eta_seconds: (self.eta_seconds >= 0).then_some(self.eta_seconds),
            error: self.error.non_empty(),
            snapshot_id: self.snapshot_id.non_empty(),
            sent_at_ms: self.updated_ms,
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Shared {
    pub launcher_pid: i32,
    pub dbs: [DbEntry; MAX_DATABASES],
    pub slots: [Slot; MAX_SLOTS],
    pub last_error: FixedStr<400>,
    pub last_error_ms: i64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            launcher_pid: 0,
            dbs: [DbEntry::EMPTY; MAX_DATABASES],
            slots: [Slot::EMPTY; MAX_SLOTS],
            last_error: FixedStr::EMPTY,
            last_error_ms: 0,
        }
    }
}

// SAFETY: plain data with no pointers, valid at any bit pattern PostgreSQL zero-fills or we write.
unsafe impl PGRXSharedMemory for Shared {}

pub static STATE: PgLwLock<Shared> = unsafe { PgLwLock::new(c"steep_repl_state") };

/// Request the shared memory; only from _PG_init while preloading.
pub fn init() {
    pg_shmem_init!(STATE = Shared::default());
}

pub use steep::progress_record::now_ms;

/// Whether a process exists (EPERM means it exists but is not ours to signal).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Wake the PostgreSQL process `pid` by setting its latch.
pub fn wake(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: BackendPidGetProc returns a PGPROC in shared memory or null; SetLatch is safe to
    // call on another process's latch.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

/// Record an error of the workers themselves (not of a job: those stay in their rows, under row
/// security) for health(). It holds no row data or role's work, so every caller may see it.
pub fn record_error(message: &str) {
    if !crate::preloaded() {
        return;
    }
    let mut s = STATE.exclusive();
    s.last_error.set(message);
    s.last_error_ms = now_ms();
}
