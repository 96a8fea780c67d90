//! The one worker pool: run numbered tasks on up to N threads, each thread with its own state (a
//! connection, opened when it takes its first task), a task starting only after the tasks it
//! depends on have finished, ready tasks in a given order of preference. The first error stops
//! new starts, and running tasks can see it (`Stop::stopping`) and end early. Generate (parts of
//! tables, largest first), apply (foreign-key units, parents first) and the file checks use it;
//! merge analysis (tables) too.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, Result};

/// What to run: `count` tasks; `after` pairs (task, task that must finish first); `rank` orders
/// the ready tasks (lower starts first; default: by number).
#[derive(Default)]
pub struct Tasks<'a> {
    pub count: usize,
    pub after: &'a [(usize, usize)],
    pub rank: Option<&'a [usize]>,
}

/// What running tasks can ask: whether the run is ending (a task failed, or it was cancelled).
pub struct Stop<'a> {
    failed: &'a AtomicBool,
    cancelled: &'a (dyn Fn() -> bool + Sync),
}

impl Stop<'_> {
    pub fn stopping(&self) -> bool {
        self.failed.load(Ordering::Relaxed) || (self.cancelled)()
    }
}

/// How a run ended: each finished task's result, how many finished, and the first error.
pub struct Ran<R> {
    pub results: Vec<Option<R>>,
    pub finished: usize,
    pub error: Option<anyhow::Error>,
}

struct State {
    ready: BTreeSet<(usize, usize)>,
    waiting_on: Vec<usize>,
    running: usize,
    finished: usize,
}

/// Run `tasks` on up to `workers` threads. `open` makes a thread's state before its first task;
/// `work` runs one task. A cancel (`cancelled` turning true) starts nothing new; the caller
/// decides what a cancelled run means.
pub fn run<S, R: Send>(
    tasks: Tasks,
    workers: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
    open: impl Fn() -> Result<S> + Sync,
    work: impl Fn(&mut S, usize, &Stop) -> Result<R> + Sync,
) -> Ran<R> {
    let n = tasks.count;
    let rank = |t: usize| tasks.rank.map_or(t, |r| r[t]);
    let mut dependents = vec![Vec::new(); n];
    let mut waiting_on = vec![0usize; n];
    for &(task, first) in tasks.after {
        if task != first && !dependents[first].contains(&task) {
            dependents[first].push(task);
            waiting_on[task] += 1;
        }
    }
    let state = Mutex::new(State {
        ready: (0..n)
            .filter(|t| waiting_on[*t] == 0)
            .map(|t| (rank(t), t))
            .collect(),
        waiting_on,
        running: 0,
        finished: 0,
    });
    let wake = Condvar::new();
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let results: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let fail = |e: anyhow::Error| {
        failed.store(true, Ordering::Relaxed);
        first_error.lock().expect("error slot").get_or_insert(e);
    };
    let stop = Stop {
        failed: &failed,
        cancelled,
    };
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, 64).min(n.max(1)) {
            s.spawn(|| {
                let mut own: Option<S> = None;
                loop {
                    let task = {
                        let mut st = state.lock().expect("scheduler");
                        loop {
                            if stop.stopping() || st.finished == n {
                                wake.notify_all();
                                return;
                            }
                            if let Some(&first) = st.ready.iter().next() {
                                st.ready.remove(&first);
                                st.running += 1;
                                break first.1;
                            }
                            if st.running == 0 {
                                // Nothing ready, nothing running, not all done: a cycle.
                                fail(anyhow!("internal error: the task order is stuck"));
                                continue;
                            }
                            // Woken when a task ends; a cancel is seen within 100 ms.
                            st = wake
                                .wait_timeout(st, std::time::Duration::from_millis(100))
                                .expect("scheduler")
                                .0;
                        }
                    };
                    // A panicking task is a failed task: the others must not wait for it.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            match own.as_mut() {
                                Some(s) => work(s, task, &stop),
                                None => open().and_then(|s| work(own.insert(s), task, &stop)),
                            }
                        }))
                        .unwrap_or_else(|_| Err(anyhow!("internal error: task {task} panicked")));
                    let mut st = state.lock().expect("scheduler");
                    st.running -= 1;
                    match result {
                        Ok(r) => {
                            *results[task].lock().expect("results") = Some(r);
                            st.finished += 1;
                            for &d in &dependents[task] {
                                st.waiting_on[d] -= 1;
                                if st.waiting_on[d] == 0 {
                                    st.ready.insert((rank(d), d));
                                }
                            }
                        }
                        Err(e) => {
                            // The thread's state may be unusable (a transaction rolled back
                            // with it): the next task, if any, gets a fresh one.
                            own = None;
                            fail(e);
                        }
                    }
                    wake.notify_all();
                }
            });
        }
    });
    let finished = state.into_inner().expect("scheduler").finished;
    Ran {
        results: results
            .into_iter()
            .map(|r| r.into_inner().expect("results"))
            .collect(),
        finished,
        error: first_error.into_inner().expect("error slot"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn dependencies_hold_and_every_task_runs_once() {
        // 0 <- 1 <- 3, 0 <- 2: a task starts only after what it depends on.
        let after = [(1, 0), (2, 0), (3, 1)];
        let done: Vec<AtomicBool> = (0..4).map(|_| AtomicBool::new(false)).collect();
        let opened = AtomicUsize::new(0);
        let ran = run(
            Tasks {
                count: 4,
                after: &after,
                rank: None,
            },
            3,
            &|| false,
            || {
                opened.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            |_, t, _| {
                for &(task, first) in &after {
                    if task == t {
                        assert!(done[first].load(Ordering::SeqCst), "{t} before {first}");
                    }
                }
                assert!(!done[t].swap(true, Ordering::SeqCst));
                Ok(t * 10)
            },
        );
        assert!(ran.error.is_none());
        assert_eq!(ran.finished, 4);
        assert_eq!(ran.results, [Some(0), Some(10), Some(20), Some(30)]);
        assert!(opened.load(Ordering::Relaxed) <= 3);
    }

    #[test]
    fn rank_orders_ready_tasks_and_the_first_error_stops_new_starts() {
        let order = Mutex::new(Vec::new());
        let rank = [2, 0, 1];
        let ran = run(
            Tasks {
                count: 3,
                after: &[],
                rank: Some(&rank),
            },
            1,
            &|| false,
            || Ok(()),
            |_, t, _| {
                order.lock().unwrap().push(t);
                if t == 2 {
                    anyhow::bail!("task 2 failed");
                }
                Ok(())
            },
        );
        assert_eq!(*order.lock().unwrap(), [1, 2]);
        assert_eq!(ran.finished, 1);
        assert_eq!(ran.error.unwrap().to_string(), "task 2 failed");
    }

    #[test]
    fn a_panicking_task_fails_the_run_instead_of_hanging_it() {
        let ran = run(
            Tasks {
                count: 4,
                after: &[(1, 0), (2, 0), (3, 0)],
                rank: None,
            },
            2,
            &|| false,
            || Ok(()),
            |_, t, _| -> Result<()> {
                if t == 0 {
                    panic!("boom");
                }
                Ok(())
            },
        );
        assert!(ran.error.unwrap().to_string().contains("panicked"));
        assert_eq!(ran.finished, 0);
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let ran = run(
            Tasks {
                count: 2,
                after: &[(0, 1), (1, 0)],
                rank: None,
            },
            2,
            &|| false,
            || Ok(()),
            |_, _, _| Ok(()),
        );
        assert!(ran.error.is_some());
    }
}
