//! The one loop that drives an engine run, for the CLI (client mode) and the background worker
//! (direct mode) alike: the work runs on a thread of its own while the caller's `tick` publishes
//! the progress record (a bar and the snapshots row; a shared-memory slot, NOTIFY and the rows)
//! and says when to stop. A stop sets the run's cancel flag; the run then cleans up after itself
//! and ends with `Cancelled`.

use std::ops::ControlFlow;

use anyhow::{anyhow, Result};

use crate::engine::counters::Counters;
use crate::engine::error::Cancelled;
use crate::progress_record::ProgressEvent;

/// What a driven run ended with.
pub struct Driven<T> {
    pub result: Result<T>,
    /// The progress record as it stood at the end (on top of the caller's `base`).
    pub last: ProgressEvent,
}

/// Run `work` on a thread and call `tick` with the progress record (`base` with the run's
/// progress filled in) until it ends. `tick` paces the loop (it sleeps or waits on a latch, about
/// 100 ms) and returns `Break` to cancel the run. The work's thread blocks every signal, so
/// signals reach the caller's thread (PostgreSQL's handlers in a worker, Ctrl-C in the CLI);
/// programs it starts inherit that mask, so whoever starts one resets it (see
/// `schema_archive::spawn`).
pub fn drive<T: Send>(
    progress: &Counters,
    base: &ProgressEvent,
    mut tick: impl FnMut(&ProgressEvent) -> ControlFlow<()>,
    work: impl FnOnce() -> Result<T> + Send,
) -> Driven<T> {
    let mut event = base.clone();
    let mut stopped = false;
    let result = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            block_signals();
            work()
        });
        while !handle.is_finished() {
            progress.fill(&mut event);
            if tick(&event).is_break() && !stopped {
                stopped = true;
                progress.request_cancel();
            }
        }
        handle
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the engine's thread panicked")))
    });
    progress.fill(&mut event);
    // A statement the stop cancelled fails with the server's query_canceled: that is the stop.
    // Any other error stays what it is.
    let result = match result {
        Err(e) if stopped && crate::db_error::sqlstate(&e) == Some("57014") => Err(e.context(
            Cancelled("cancelled; partial work was removed or rolled back".into()),
        )),
        r => r,
    };
    Driven {
        result,
        last: event,
    }
}

fn block_signals() {
    // SAFETY: changes the signal mask of the calling thread only (and threads it starts).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stop_cancels_the_run_and_the_last_record_is_returned() {
        let progress = Counters::default();
        let base = ProgressEvent {
            op: "test".into(),
            id: 3,
            status: "running".into(),
            ..Default::default()
        };
        let mut ticks = 0;
        let d: Driven<()> = drive(
            &progress,
            &base,
            |e| {
                assert_eq!(e.id, 3);
                ticks += 1;
                std::thread::sleep(Duration::from_millis(5));
                if ticks == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            || {
                progress.set_phase("working");
                while !progress.cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(crate::engine::error::cancelled("nothing kept"))
            },
        );
        assert!(progress.cancelled());
        assert_eq!(d.last.phase.as_deref(), Some("working"));
        assert_eq!(
            crate::engine::error::ErrorKind::of(&d.result.unwrap_err()),
            Some(crate::engine::error::ErrorKind::Cancelled)
        );
    }
}
