//! Follow an operation to its end: poll its progress until this connection's LISTEN on
//! `steep_repl_progress` delivers events for it, then follow the notifications (filtered by
//! operation id), and poll again whenever they stop for 2 s. A live bar on a terminal, plain
//! lines otherwise. Ctrl-C asks whether to cancel the operation or only stop watching.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use postgres::fallible_iterator::FallibleIterator;
use serde::Serialize;

use crate::cli::output::Output;
use crate::progress_record::{now_ms, ProgressEvent, ProgressSignal, CHANNEL};

/// Poll this often until notifications for the operation arrive.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Fall back to polling when notifications stop this long.
const SILENCE: Duration = Duration::from_secs(2);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

/// How a follow ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The operation reached a terminal status.
    Finished,
    /// The operator stopped watching; the operation goes on.
    Detached,
}

/// What following observed, for reports and latency measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Followed {
    pub ending: Ending,
    pub last: ProgressEvent,
    /// Notifications received for this operation.
    pub notifications: usize,
    /// Delay from the worker's send to our receipt, per notification (ms).
    pub latencies_ms: Vec<i64>,
    /// From the start of following to the first event saying the operation runs (ms).
    pub start_latency_ms: Option<i64>,
    /// Whether the fallback polling had to fill a notification gap.
    pub polled_after_silence: bool,
}

/// Draws progress: a bar on a terminal, plain lines (at most one a second, and on every change of
/// status, phase or table) otherwise.
pub struct Renderer<'a> {
    out: &'a Output,
    label: String,
    interactive: bool,
    bar: Option<ProgressBar>,
    last_line: Option<(String, Instant)>,
}

impl<'a> Renderer<'a> {
    pub fn new(out: &'a Output, label: impl Into<String>) -> Self {
        let interactive = std::io::stderr().is_terminal() && !out.quiet && !out.json;
        Self {
            out,
            label: label.into(),
            interactive,
            bar: None,
            last_line: None,
        }
    }

    pub fn render(&mut self, e: &ProgressEvent) {
        let detail = describe(e);
        if self.interactive {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::new(1000);
                b.set_style(
                    ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {percent:>3}% {msg}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                b.set_prefix(self.label.clone());
                b.enable_steady_tick(Duration::from_millis(200));
                b
            });
            bar.set_position((e.percent * 10.0).round().clamp(0.0, 1000.0) as u64);
            bar.set_message(detail);
            return;
        }
        let key = format!("{}|{:?}|{:?}", e.status, e.phase, e.table);
        let due = match &self.last_line {
            Some((k, at)) => *k != key || at.elapsed() >= Duration::from_secs(1),
            None => true,
        };
        if due || e.is_terminal() {
            self.out.status(
                "Progress",
                format!("{} {:>5.1}% {detail}", self.label, e.percent),
            );
            self.last_line = Some((key, Instant::now()));
        }
    }

    /// Run `f` with the bar out of the way (for prompts).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Catch Ctrl-C from now on (`interrupted` says when it came): called before work that must
/// clean up after itself starts, so an early Ctrl-C cannot end the process half way.
pub fn catch_interrupts() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

/// Whether Ctrl-C was pressed since the last call (installs the handler on first use).
pub fn interrupted() -> bool {
    catch_interrupts();
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Follows one server-side operation.
pub struct Follower<'a> {
    out: &'a Output,
    r: Renderer<'a>,
}

impl<'a> Follower<'a> {
    pub fn new(out: &'a Output, label: impl Into<String>) -> Self {
        Self {
            out,
            r: Renderer::new(out, label),
        }
    }

    /// Follow operation `id` until it ends or the operator detaches. `client` is used for LISTEN
    /// and polling and must not be inside a transaction.
    pub fn follow(&mut self, client: &mut postgres::Client, id: i64) -> Result<Followed> {
        self.follow_until(client, id, &|_| false)
    }

    /// Follow until the operation ends or `until` holds for its progress (a job waiting for the
    /// operator: a merge's `awaiting_decisions`).
    pub fn follow_until(
        &mut self,
        client: &mut postgres::Client,
        id: i64,
        until: &dyn Fn(&ProgressEvent) -> bool,
    ) -> Result<Followed> {
        interrupted(); // installs the handler and forgets an old Ctrl-C
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .context("listening for progress notifications")?;
        let started = Instant::now();
        let mut f = Followed {
            ending: Ending::Finished,
            last: ProgressEvent::default(),
            notifications: 0,
            latencies_ms: Vec::new(),
            start_latency_ms: None,
            polled_after_silence: false,
        };
        let mut last_event_at = Instant::now();
        let mut last_poll = Instant::now() - POLL_EVERY;
        loop {
            if interrupted() && self.on_interrupt(client, id)? {
                f.ending = Ending::Detached;
                break;
            }
            let flowing = f.notifications > 0;
            let poll_due = if flowing {
                last_event_at.elapsed() >= SILENCE && last_poll.elapsed() >= SILENCE
            } else {
                last_poll.elapsed() >= POLL_EVERY
            };
            if poll_due {
                if flowing {
                    f.polled_after_silence = true;
                }
                last_poll = Instant::now();
                if let Some(e) = poll(client, id)? {
                    self.observe(&mut f, e, started);
                    if f.last.is_terminal() || until(&f.last) {
                        break;
                    }
                }
            }
            let wait = if flowing {
                Duration::from_millis(250)
            } else {
                POLL_EVERY
            };
            // The next signal of this operation (other operations' are passed over).
            let signal = wait_signals(client, wait, Some(id))?
                .into_iter()
                .find(|s| s.id == id);
            if let Some(s) = signal {
                if s.sent_at_ms > 0 {
                    f.latencies_ms.push(now_ms() - s.sent_at_ms);
                }
                // The signal only says that it moved: read where it is, as this role may.
                if let Some(e) = poll(client, id)? {
                    f.notifications += 1;
                    last_event_at = Instant::now();
                    self.observe(&mut f, e, started);
                    if f.last.is_terminal() || until(&f.last) {
                        break;
                    }
                }
            }
        }
        self.r.finish();
        let _ = client.batch_execute(&format!("UNLISTEN {CHANNEL}"));
        Ok(f)
    }

    fn observe(&mut self, f: &mut Followed, e: ProgressEvent, started: Instant) {
        if f.start_latency_ms.is_none() && e.status != "pending" {
            f.start_latency_ms = Some(started.elapsed().as_millis() as i64);
        }
        self.r.render(&e);
        f.last = e;
    }

    /// Ctrl-C: ask (on a terminal) whether to cancel or detach. Returns true to detach.
    fn on_interrupt(&mut self, client: &mut postgres::Client, id: i64) -> Result<bool> {
        let cancel = std::io::stdin().is_terminal()
            && std::io::stderr().is_terminal()
            && self.r.suspend(|| {
                matches!(
                    dialoguer::Select::new()
                        .with_prompt("Interrupted")
                        .items(&[
                            "Stop watching (the operation keeps running)",
                            "Cancel the operation",
                        ])
                        .default(0)
                        .interact(),
                    Ok(1)
                )
            });
        if cancel {
            let ok: bool = client
                .query_one("SELECT steep_repl.cancel_operation($1)", &[&id])
                .context("cancelling the operation")?
                .get(0);
            self.out.status(
                "Cancelling",
                if ok {
                    format!("operation {id}")
                } else {
                    format!("operation {id}: it already ended")
                },
            );
            return Ok(false);
        }
        self.out.note(format!(
            "stopped watching; operation {id} keeps running (follow it again with `steep ops \
             watch {id}`)"
        ));
        Ok(true)
    }
}

/// One line of detail: phase, table, counts, bytes, ETA, error.
pub fn describe(e: &ProgressEvent) -> String {
    let mut parts = vec![e.status.clone()];
    if let Some(p) = &e.phase {
        parts.push(p.clone());
    }
    if let Some(t) = &e.table {
        parts.push(t.clone());
    }
    if e.tables_total > 0 {
        parts.push(format!("tables {}/{}", e.tables_completed, e.tables_total));
    }
    if e.bytes > 0 {
        parts.push(human_bytes(e.bytes));
    }
    if e.rows > 0 {
        parts.push(format!("{} rows", e.rows));
    }
    if let Some(eta) = e.eta_seconds.filter(|_| !e.is_terminal()) {
        parts.push(format!("eta {eta}s"));
    }
    if let Some(err) = &e.error {
        parts.push(err.clone());
    }
    parts.join(" | ")
}

pub fn human_bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The progress signals that arrive within `wait`, returning early at one for operation `stop_at`.
/// The deadline is fixed: a stream of other operations' (or forged) signals cannot stretch it.
pub fn wait_signals(
    client: &mut postgres::Client,
    wait: Duration,
    stop_at: Option<i64>,
) -> Result<Vec<ProgressSignal>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut notifications = client.notifications();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(out);
        }
        let Some(n) = notifications
            .timeout_iter(left)
            .next()
            .context("reading notifications")?
        else {
            return Ok(out);
        };
        if let Some(s) = ProgressSignal::from_payload(n.payload()) {
            let stop = stop_at == Some(s.id);
            out.push(s);
            if stop {
                return Ok(out);
            }
        }
    }
}

/// The operation's progress from steep_repl.operation_progress (None if it is not visible).
pub fn poll(client: &mut postgres::Client, id: i64) -> Result<Option<ProgressEvent>> {
    let row = client
        .query_opt(
            "SELECT operation, status, phase, percent, current_table, tables_completed,
                    tables_total, bytes_processed, rows_processed, eta_seconds, error, snapshot_id
             FROM steep_repl.operation_progress($1)",
            &[&id],
        )
        .context("polling the operation's progress")?;
    Ok(row.map(|r| ProgressEvent {
        op: r.get(0),
        id,
        status: r.get(1),
        phase: r.get(2),
        percent: r.get(3),
        table: r.get(4),
        tables_completed: r.get(5),
        tables_total: r.get(6),
        bytes: r.get(7),
        rows: r.get(8),
        eta_seconds: r.get(9),
        error: r.get(10),
        snapshot_id: r.get(11),
        sent_at_ms: 0,
    }))
}

/// After a cancel request: poll until the operation ends (a running job stops within a second) or
/// 10 s pass. Its last status, "unknown" when it is not visible.
pub fn wait_for_end(client: &mut postgres::Client, id: i64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = poll(client, id)?;
    while last.as_ref().is_some_and(|e| !e.is_terminal()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        last = poll(client, id)?;
    }
    Ok(last.map(|e| e.status).unwrap_or_else(|| "unknown".into()))
}

/// p-th percentile (0..=100) of `v`, nearest rank.
pub fn percentile(v: &[i64], p: f64) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    Some(s[rank.min(s.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v = [5, 1, 3, 2, 4];
        assert_eq!(percentile(&v, 50.0), Some(3));
        assert_eq!(percentile(&v, 95.0), Some(5));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn describe_and_bytes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        let e = ProgressEvent {
            status: "running".into(),
            phase: Some("copy".into()),
            table: Some("public.t".into()),
            tables_completed: 1,
            tables_total: 3,
            bytes: 2048,
            eta_seconds: Some(4),
            ..Default::default()
        };
        assert_eq!(
            describe(&e),
            "running | copy | public.t | tables 1/3 | 2.0 KiB | eta 4s"
        );
    }
}
