//! The counters an engine run keeps while it works (phase, table, bytes, rows) and its cancel flag
//! with the connections a stop cancels: read by whoever drives it (the driver fills the progress
//! record from them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::progress_record::ProgressEvent;

pub struct Counters {
    pub phase: Mutex<String>,
    pub current_table: Mutex<Option<String>>,
    pub tables_total: AtomicU64,
    pub tables_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub rows_done: AtomicU64,
    /// Set to stop the run; it cleans up after itself and returns an error.
    pub cancel: AtomicBool,
    /// How to cancel the statement of each connection the run opened (see `watch`).
    cancellers: Mutex<Vec<std::sync::Arc<dyn Fn() + Send + Sync>>>,
    started: Instant,
}

/// Sends a cancel request for one connection's running statement.
pub type Canceller = Box<dyn Fn() + Send + Sync>;

/// The canceller of a `postgres` crate connection.
pub fn pg_canceller(c: &postgres::Client) -> Canceller {
    let token = c.cancel_token();
    Box::new(move || {
        let _ = token.cancel_query(postgres::NoTls);
    })
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            phase: Mutex::new("starting".into()),
            current_table: Mutex::new(None),
            tables_total: AtomicU64::new(0),
            tables_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            rows_done: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            cancellers: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }
}

impl Counters {
    pub fn set_phase(&self, p: &str) {
        *self.phase.lock().expect("phase lock") = p.to_string();
    }

    pub fn set_table(&self, t: Option<String>) {
        *self.current_table.lock().expect("table lock") = t;
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Remember how to cancel a connection's statement: a stop cancels what every connection of
    /// the run is doing (a long DELETE, COPY or index build), as pg_restore does, instead of
    /// waiting for the statement to end. Connections that ended meanwhile ignore the request.
    pub fn watch(&self, canceller: Canceller) {
        let canceller: std::sync::Arc<dyn Fn() + Send + Sync> = canceller.into();
        self.cancellers
            .lock()
            .expect("cancellers")
            .push(canceller.clone());
        // Registered first, checked second: a stop in between still reaches this connection.
        if self.cancelled() {
            std::thread::spawn(move || canceller());
        }
    }

    /// Watch a `postgres` crate connection.
    pub fn watch_client(&self, c: &postgres::Client) {
        self.watch(pg_canceller(c));
    }

    /// Stop the run: set the flag, then cancel every watched connection's statement, each on a
    /// thread of its own (a server that does not answer must not hold up the caller).
    pub fn request_cancel(&self) {
        if self.cancel.swap(true, Ordering::Relaxed) {
            return;
        }
        let all = self.cancellers.lock().expect("cancellers").clone();
        for c in all {
            std::thread::spawn(move || c());
        }
    }

    /// Fill an event's progress fields (percent by bytes, ETA by rate so far).
    pub fn fill(&self, e: &mut ProgressEvent) {
        let total = self.bytes_total.load(Ordering::Relaxed);
        let done = self.bytes_done.load(Ordering::Relaxed).min(total.max(1));
        e.phase = Some(self.phase.lock().expect("phase lock").clone());
        e.table = self.current_table.lock().expect("table lock").clone();
        e.tables_total = self.tables_total.load(Ordering::Relaxed) as i64;
        e.tables_completed = self.tables_done.load(Ordering::Relaxed) as i64;
        e.bytes = self.bytes_done.load(Ordering::Relaxed) as i64;
        e.rows = self.rows_done.load(Ordering::Relaxed) as i64;
        e.percent = if total == 0 {
            0.0
        } else {
            (done as f64 * 100.0 / total as f64).min(99.9)
        };
        let secs = self.started.elapsed().as_secs_f64();
        e.eta_seconds = (done > 0 && total > done && secs > 0.5)
            .then(|| ((total - done) as f64 * secs / done as f64).ceil() as i64);
    }
}
