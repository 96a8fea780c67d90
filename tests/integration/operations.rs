//! Background operations against real clusters: the work queue, job workers, progress, NOTIFY,
//! cancellation, crash and restart recovery, several databases, privileges, and the `steep ops`
//! commands.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use serde_json::Value;

use crate::common::*;
use steep::cli::sandbox::ClusterOptions;
use steep::progress_record::{ProgressEvent, ProgressSignal};

fn selftest(c: &mut postgres::Client, seconds: f64, steps: i32) -> i64 {
    c.query_one(
        "SELECT id FROM steep_repl.start_selftest($1, $2)",
        &[&seconds, &steps],
    )
    .unwrap()
    .get(0)
}

fn status(c: &mut postgres::Client, id: i64) -> (String, Option<String>) {
    let r = c
        .query_one(
            "SELECT status, error_message FROM steep_repl.work_queue WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Poll until the job's status is one of `want`; returns it. Panics after `limit`.
fn wait_for(conn: &str, id: i64, want: &[&str], limit: Duration) -> (String, Option<String>) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut c) = postgres::Client::connect(conn, postgres::NoTls) {
            loop {
                match c.query_one(
                    "SELECT status, error_message FROM steep_repl.work_queue WHERE id = $1",
                    &[&id],
                ) {
                    Ok(r) => {
                        let s: String = r.get(0);
                        if want.contains(&s.as_str()) {
                            return (s, r.get(1));
                        }
                    }
                    Err(_) => break, // the server restarted: reconnect
                }
                assert!(Instant::now() < deadline, "job {id} never reached {want:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(Instant::now() < deadline, "job {id} never reached {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A connection that waits out a crash restart.
fn connect_retry(conn: &str) -> postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = postgres::Client::connect(conn, postgres::NoTls) {
            if c.simple_query("SELECT 1").is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "the server did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn initialized() -> (tempfile::TempDir, steep::cli::sandbox::TempCluster, String) {
    let home = temp_home();
    let node = node();
    let conn = node.connection_string("postgres");
    init(home.path(), &conn, &[]);
    (home, node, conn)
}

#[test]
fn a_job_outlives_its_session_and_others_see_its_progress() {
    let (_home, _node, conn) = initialized();
    let id = {
        let mut a = connect(&conn);
        selftest(&mut a, 2.0, 20)
        // session A disconnects here
    };
    let mut b = connect(&conn);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_midway = None;
    loop {
        let r = b
            .query_one(
                "SELECT status, percent, phase, worker_pid FROM steep_repl.operation_progress($1)",
                &[&id],
            )
            .unwrap();
        let (s, pct): (String, f64) = (r.get(0), r.get(1));
        if s == "running" && pct > 0.0 && pct < 100.0 {
            seen_midway = Some((
                pct,
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<i32>>(3),
            ));
        }
        if s == "complete" {
            break;
        }
        assert!(Instant::now() < deadline, "job {id} did not complete: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (pct, phase, pid) = seen_midway.expect("never saw the job midway");
    assert!(pct > 0.0 && pct < 100.0);
    assert!(phase.unwrap().starts_with("step "));
    assert!(pid.unwrap() > 0);
    // The view shows operations in flight only; the final row tells the end.
    let r = b
        .query_one(
            "SELECT status, result, progress, completed_at IS NOT NULL, started_at >= created_at
             FROM steep_repl.work_queue WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "complete");
    let result: Value = r.get(1);
    assert_eq!(result["steps"], 20);
    assert!(result["elapsed_ms"].as_i64().unwrap() >= 1900, "{result}");
    let progress: Value = r.get(2);
    assert_eq!(progress["percent"], 100.0);
    assert!(r.get::<_, bool>(3) && r.get::<_, bool>(4));
    let in_flight: i64 = b
        .query_one(
            "SELECT count(*) FROM steep_repl.progress WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(in_flight, 0);
}

#[test]
fn notifications_arrive_every_500ms_per_job_and_the_cli_follows_only_its_own() {
    let (home, _node, conn) = initialized();
    let mut listener = connect(&conn);
    listener
        .batch_execute("LISTEN steep_repl_progress")
        .unwrap();
    let mut reader = connect(&conn);
    let mut signals = Vec::new();
    let mut q = connect(&conn);
    let a = selftest(&mut q, 2.0, 40);
    let b = selftest(&mut q, 2.0, 40);
    let mut arrivals: HashMap<i64, Vec<(Instant, ProgressEvent)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let done = |m: &HashMap<i64, Vec<(Instant, ProgressEvent)>>, id: i64| {
        m.get(&id)
            .is_some_and(|v| v.iter().any(|(_, e)| e.is_terminal()))
    };
    while !(done(&arrivals, a) && done(&arrivals, b)) {
        assert!(
            Instant::now() < deadline,
            "jobs did not finish: {arrivals:?}"
        );
        let mut n = listener.notifications();
        let mut it = n.timeout_iter(Duration::from_millis(100));
        while let Some(note) = it.next().unwrap() {
            // A signal says which job moved; where it stands is read under row security.
            let s = ProgressSignal::from_payload(note.payload()).expect("a valid payload");
            let keys: Vec<String> = json(note.payload())
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(keys, ["id", "sent_at_ms"], "{}", note.payload());
            signals.push(s);
        }
        for s in signals.drain(..) {
            let e = steep::cli::follow::poll(&mut reader, s.id)
                .unwrap()
                .unwrap();
            arrivals.entry(s.id).or_default().push((Instant::now(), e));
        }
    }
    assert_eq!(
        arrivals.len(),
        2,
        "events for other ids: {:?}",
        arrivals.keys()
    );
    for id in [a, b] {
        let events = &arrivals[&id];
        assert_eq!(events.last().unwrap().1.status, "complete", "job {id}");
        let running: Vec<&Instant> = events
            .iter()
            .filter(|(_, e)| e.status == "running")
            .map(|(t, _)| t)
            .collect();
        assert!(
            running.len() >= 4,
            "job {id}: only {} running events",
            running.len()
        );
        let worst = running.windows(2).map(|w| *w[1] - *w[0]).max().unwrap();
        // 500 ms is the contract; allow scheduling slack on a busy machine.
        assert!(
            worst <= Duration::from_millis(750),
            "job {id}: a {worst:?} gap"
        );
    }

    // The CLI follows its own operation among concurrent ones.
    let c = selftest(&mut q, 1.5, 15);
    let d = selftest(&mut q, 1.5, 15);
    let f = json(&ok(steep(home.path()).args([
        "ops",
        "watch",
        &c.to_string(),
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(f["last"]["id"], c);
    assert_eq!(f["last"]["status"], "complete");
    assert!(f["notifications"].as_u64().unwrap() >= 2, "{f}");
    wait_for(&conn, d, &["complete"], Duration::from_secs(10));
}

#[test]
fn cancel_stops_a_running_job_within_a_second() {
    let (home, _node, conn) = initialized();
    let mut c = connect(&conn);
    let id = selftest(&mut c, 60.0, 600);
    wait_for(&conn, id, &["running"], Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let ok_: bool = c
        .query_one("SELECT steep_repl.cancel_operation($1)", &[&id])
        .unwrap()
        .get(0);
    assert!(ok_);
    let (s, err) = wait_for(
        &conn,
        id,
        &["cancelled", "failed", "complete"],
        Duration::from_secs(10),
    );
    let took = t0.elapsed();
    assert_eq!(s, "cancelled");
    assert_eq!(err.as_deref(), Some("cancelled by request"));
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    let live: i64 = c
        .query_one(
            "SELECT count(*) FROM steep_repl.progress WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "the job's progress slot is still in use");

    // Through the CLI, and a pending job is cancelled before it starts.
    let id2 = selftest(&mut c, 60.0, 600);
    wait_for(&conn, id2, &["running"], Duration::from_secs(10));
    let out = json(&ok(steep(home.path()).args([
        "ops",
        "cancel",
        &id2.to_string(),
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(out["status"], "cancelled");
    let err = fails(
        steep(home.path()).args(["ops", "cancel", &id2.to_string(), "-c", &conn]),
        1,
    );
    assert!(err.contains("is not pending or running"), "{err}");
    let mut tx = c.transaction().unwrap();
    let id3: i64 = tx
        .query_one("SELECT id FROM steep_repl.start_selftest(1, 1)", &[])
        .unwrap()
        .get(0);
    let cancelled: bool = tx
        .query_one("SELECT steep_repl.cancel_operation($1)", &[&id3])
        .unwrap()
        .get(0);
    assert!(cancelled);
    tx.commit().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&mut c, id3).0, "cancelled");
}

#[test]
fn kill_9_of_a_job_worker_fails_the_job_and_workers_come_back() {
    let (_home, node, conn) = initialized();
    let _log = LogOnPanic(node.dir.clone());
    let mut c = connect(&conn);
    let id = selftest(&mut c, 60.0, 600);
    wait_for(&conn, id, &["running"], Duration::from_secs(10));
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM steep_repl.work_queue WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (s, err) = wait_for(&conn, id, &["failed"], Duration::from_secs(30));
    assert_eq!(s, "failed");
    let err = err.unwrap();
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("stopped before the job finished"),
        "{err}"
    );
    let mut c = connect_retry(&conn);
    let next = selftest(&mut c, 0.3, 3);
    assert_eq!(
        wait_for(&conn, next, &["complete"], Duration::from_secs(20)).0,
        "complete"
    );
}

/// The phase operation_progress shows for job `id`, once it contains `want` (or panics).
fn phase_becomes(c: &mut postgres::Client, id: i64, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .query_one(
                "SELECT status, phase FROM steep_repl.operation_progress($1)",
                &[&id],
            )
            .unwrap();
        let (status, phase): (String, Option<String>) = (r.get(0), r.get(1));
        if let Some(p) = phase.clone().filter(|p| p.contains(want)) {
            assert_eq!(status, "pending", "{p}");
            return p;
        }
        assert!(Instant::now() < deadline, "job {id}: {status} {phase:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_waiting_job_stays_pending_and_says_why() {
    let home = temp_home();
    let mut node = node();
    let conn = node.connection_string("postgres");
    init(home.path(), &conn, &[]);
    sql(&conn, "ALTER SYSTEM SET steep_repl.max_jobs = 1");
    sql(&conn, "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let mut c = connect(&conn);
    let first = selftest(&mut c, 60.0, 600);
    wait_for(&conn, first, &["running"], Duration::from_secs(10));
    let second = selftest(&mut c, 0.2, 2);
    let p = phase_becomes(&mut c, second, "steep_repl.max_jobs = 1");
    assert!(p.contains("waiting for one of the 1 running jobs"), "{p}");
    // The CLI shows the reason too.
    let out = ok(steep(home.path()).args(["ops", "list", "-c", &conn]));
    assert!(out.contains("max_jobs"), "{out}");
    c.execute("SELECT steep_repl.cancel_operation($1)", &[&first])
        .unwrap();
    assert_eq!(
        wait_for(&conn, second, &["complete"], Duration::from_secs(20)).0,
        "complete"
    );

    // No background worker process left for a job worker (the launcher, this database's worker
    // and the logical replication launcher take all three): pending, with the reason, no ERRORs.
    sql(&conn, "ALTER SYSTEM SET max_worker_processes = 3");
    node.cluster_mut().restart().unwrap();
    let mut c = connect_retry(&conn);
    let stuck = selftest(&mut c, 0.2, 2);
    let p = phase_becomes(&mut c, stuck, "max_worker_processes");
    assert!(p.contains("(3) are in use"), "{p}");
    std::thread::sleep(Duration::from_millis(1500));
    let (s, _) = status(&mut c, stuck);
    assert_eq!(s, "pending");
    // Not even the database's worker can start (the launchers take both): the launcher says so
    // on the pending job, and doctor applies the rule.
    sql(&conn, "ALTER SYSTEM SET max_worker_processes = 2");
    node.cluster_mut().restart().unwrap();
    let mut c = connect_retry(&conn);
    let blocked = selftest(&mut c, 0.2, 2);
    let p = phase_becomes(&mut c, blocked, "this database's steep_repl worker");
    assert!(p.contains("max_worker_processes (2)"), "{p}");
    let d = steep(home.path())
        .args(["doctor", "--json", "-c", &conn])
        .output()
        .unwrap();
    let report = json(&stdout(&d));
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "max_worker_processes")
        .unwrap()
        .clone();
    assert_eq!(check["level"], "warn", "{check}");
    sql(&conn, "ALTER SYSTEM RESET max_worker_processes");
    node.cluster_mut().restart().unwrap();
    assert_eq!(
        wait_for(&conn, stuck, &["complete"], Duration::from_secs(20)).0,
        "complete"
    );
    assert_eq!(
        wait_for(&conn, blocked, &["complete"], Duration::from_secs(20)).0,
        "complete"
    );
}

#[test]
fn an_idle_database_can_be_dropped_and_a_new_job_still_starts_at_once() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE DATABASE dropme");
    let conn = n.connection_string("dropme");
    init(home.path(), &conn, &[]);
    let mut c = connect(&conn);
    let id = selftest(&mut c, 0.1, 1);
    assert_eq!(
        wait_for(&conn, id, &["complete"], Duration::from_secs(20)).0,
        "complete"
    );
    // After a second with nothing to do the database's worker has left: a job still starts at
    // once (the launcher starts a worker for it).
    std::thread::sleep(Duration::from_millis(2500));
    let queued = Instant::now();
    let id = selftest(&mut c, 0.0, 1);
    wait_for(&conn, id, &["running", "complete"], Duration::from_secs(5));
    assert!(
        queued.elapsed() < Duration::from_secs(1),
        "started after {:?}",
        queued.elapsed()
    );
    wait_for(&conn, id, &["complete"], Duration::from_secs(20));
    drop(c);
    // DROP DATABASE waits up to 5 s for other sessions: the worker leaves within that.
    let started = Instant::now();
    sql(&admin, "DROP DATABASE dropme");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_job_ended_by_pg_terminate_backend_says_so() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_string("postgres");
    init(home.path(), &conn, &[]);
    let mut c = connect(&conn);
    let id = selftest(&mut c, 60.0, 600);
    wait_for(&conn, id, &["running"], Duration::from_secs(10));
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM steep_repl.work_queue WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let ended: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(ended);
    let (s, err) = wait_for(&conn, id, &["failed"], Duration::from_secs(10));
    assert_eq!(s, "failed");
    let err = err.unwrap();
    assert!(
        err.contains("terminated") && !err.contains("shutting down"),
        "{err}"
    );
}

#[test]
fn restart_mid_job_fails_the_job_and_the_next_job_runs() {
    let home = temp_home();
    let mut node = node();
    let conn = node.connection_string("postgres");
    init(home.path(), &conn, &[]);
    let mut c = connect(&conn);
    let id = selftest(&mut c, 60.0, 600);
    wait_for(&conn, id, &["running"], Duration::from_secs(10));
    drop(c);
    node.cluster_mut().restart().unwrap();
    let (s, err) = wait_for(&conn, id, &["failed"], Duration::from_secs(30));
    assert_eq!(s, "failed");
    let err = err.unwrap();
    assert!(
        err.contains("shutting down") || err.contains("restarted"),
        "{err}"
    );
    let mut c = connect_retry(&conn);
    let running: i64 = c
        .query_one(
            "SELECT count(*) FROM steep_repl.work_queue WHERE status = 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
    let next = selftest(&mut c, 0.3, 3);
    assert_eq!(
        wait_for(&conn, next, &["complete"], Duration::from_secs(20)).0,
        "complete"
    );
}

#[test]
fn jobs_in_two_databases_of_one_cluster_both_run() {
    let (home, node, conn) = initialized();
    sql(&conn, "CREATE DATABASE second");
    let conn2 = node.connection_string("second");
    init(home.path(), &conn2, &[]);
    let mut c1 = connect(&conn);
    let mut c2 = connect(&conn2);
    let a = selftest(&mut c1, 0.5, 5);
    let b = selftest(&mut c2, 0.5, 5);
    assert_eq!(
        wait_for(&conn, a, &["complete", "failed"], Duration::from_secs(20)).0,
        "complete"
    );
    assert_eq!(
        wait_for(&conn2, b, &["complete", "failed"], Duration::from_secs(20)).0,
        "complete"
    );
    let db: String = c2
        .query_one(
            "SELECT database::text FROM steep_repl.work_queue WHERE id = $1",
            &[&b],
        )
        .unwrap()
        .get(0);
    assert_eq!(db, "second");
    let workers: i64 = c1
        .query_one(
            "SELECT count(DISTINCT datname) FROM pg_stat_activity
             WHERE backend_type = 'steep_repl worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        workers, 2,
        "one database worker per database with steep_repl"
    );
}

#[test]
fn jobs_run_with_the_privileges_of_the_role_that_queued_them() {
    let (home, node, conn) = initialized();
    sql(
        &conn,
        "CREATE ROLE job_owner LOGIN; CREATE ROLE other LOGIN",
    );
    init(
        home.path(),
        &conn,
        &["--grant", "job_owner", "--grant", "other"],
    );
    let owner = format!(
        "host=127.0.0.1 port={} user=job_owner dbname=postgres",
        node.port()
    );
    let other = format!(
        "host=127.0.0.1 port={} user=other dbname=postgres",
        node.port()
    );
    let mut c = connect(&owner);
    let id = selftest(&mut c, 0.3, 3);
    assert_eq!(
        wait_for(&conn, id, &["complete", "failed"], Duration::from_secs(20)).0,
        "complete"
    );
    let result: Value = c
        .query_one(
            "SELECT result FROM steep_repl.work_queue WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        result["role"], "job_owner",
        "the job did not run as its owner: {result}"
    );
    assert_eq!(
        result["connection_role"], "job_owner",
        "the engine connection is not the owner's: {result}"
    );
    // Another role neither sees nor cancels it.
    let mut o = connect(&other);
    let n: i64 = o
        .query_one("SELECT count(*) FROM steep_repl.list_operations()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let err = fails(
        steep(home.path()).args(["ops", "cancel", &id.to_string(), "-c", &other]),
        1,
    );
    assert!(
        err.contains("not pending or running (or not yours)"),
        "{err}"
    );
}

#[test]
fn without_preload_the_extension_installs_and_start_fails_with_the_fix() {
    let home = temp_home();
    let server = node_with(ClusterOptions {
        preload: false,
        durable: false,
        ..ClusterOptions::default()
    });
    let conn = server.connection_string("postgres");
    init(home.path(), &conn, &["--no-preload"]);
    let mut c = connect(&conn);
    let avail: bool = c
        .query_one("SELECT steep_repl.bgworker_available()", &[])
        .unwrap()
        .get(0);
    assert!(!avail);
    let err = c
        .query_one("SELECT steep_repl.start_selftest()", &[])
        .unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(
        msg.contains("steep init --preload") && msg.contains("restart PostgreSQL"),
        "{msg}"
    );
    let err = fails(steep(home.path()).args(["ops", "selftest", "-c", &conn]), 1);
    assert!(err.contains("steep init --preload"), "{err}");
    let d = json(&stdout(
        &steep(home.path())
            .args(["doctor", "--json", "-c", &conn])
            .output()
            .unwrap(),
    ));
    let w = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "background workers")
        .unwrap();
    assert_eq!(w["level"], "warn", "{w}");
    // Everything else works without the workers.
    ok(steep(home.path()).args(["node", "list", "-c", &conn]));
    ok(steep(home.path()).args(["ops", "list", "-c", &conn]));
}

#[test]
fn init_upgrades_an_older_install_and_doctor_reports_it_first() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_string("postgres");
    let e = steep::cli::embedded::embedded();
    let old = e.versions.first().unwrap().clone();
    if old == e.default_version {
        return; // only one version embedded: nothing to upgrade from
    }
    sql(
        &conn,
        &format!("CREATE EXTENSION steep_repl VERSION '{old}'"),
    );
    let o = steep(home.path())
        .args(["doctor", "--json", "-c", &conn])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let d = json(&stdout(&o));
    let inst = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "extension installed")
        .unwrap();
    assert_eq!(
        inst["detail"],
        format!("{old} installed, {} available", e.default_version)
    );
    let r = init(home.path(), &conn, &[]);
    assert!(
        r["changes"].to_string().contains(&format!(
            "upgraded extension steep_repl {old} -> {}",
            e.default_version
        )),
        "{r}"
    );
    let d = json(&ok(steep(home.path()).args([
        "doctor",
        "--worker-selftest",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(d["ok"], true);
}

#[test]
fn start_and_progress_latency_come_from_wakeups_not_polling() {
    let (home, _node, conn) = initialized();
    let out = json(&ok(steep(home.path()).args([
        "ops",
        "selftest",
        "--seconds",
        "0.5",
        "--steps",
        "5",
        "--runs",
        "5",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(out["runs"], 5);
    let p50 = out["start_latency_ms"]["p50"].as_i64().unwrap();
    // A once-a-second poll would put the median near 500 ms.
    assert!(p50 < 300, "start latency p50 {p50} ms: {out}");
    let prog = out["progress_latency_ms"]["p95"].as_i64().unwrap();
    assert!(prog < 500, "progress latency p95 {prog} ms: {out}");
    for r in out["results"].as_array().unwrap() {
        assert_eq!(r["result"]["steps"], 5);
    }
}

#[test]
fn ops_list_and_bad_input() {
    let (home, _node, conn) = initialized();
    let mut c = connect(&conn);
    let id = selftest(&mut c, 0.2, 2);
    wait_for(&conn, id, &["complete"], Duration::from_secs(20));
    let list = json(&ok(
        steep(home.path()).args(["ops", "list", "--json", "-c", &conn])
    ));
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["status"], "complete");
    let done =
        json(&ok(steep(home.path()).args([
            "ops", "list", "--status", "pending", "--json", "-c", &conn,
        ])));
    assert_eq!(done, serde_json::json!([]));
    let err = fails(
        steep(home.path()).args(["ops", "list", "--status", "done", "-c", &conn]),
        1,
    );
    assert!(err.contains("invalid status 'done'"), "{err}");
    let err = fails(
        steep(home.path()).args(["ops", "watch", "999999", "-c", &conn]),
        1,
    );
    assert!(err.contains("no operation 999999"), "{err}");
    let err = fails(
        steep(home.path()).args(["ops", "cancel", "abc", "-c", &conn]),
        2,
    );
    assert!(err.contains("invalid value 'abc'"), "{err}");
    let err = fails(
        steep(home.path()).args(["ops", "selftest", "--steps", "0", "-c", &conn]),
        1,
    );
    assert!(err.contains("invalid steps 0"), "{err}");
}

/// Prints the server log when the test fails, to show what the server did.
struct LogOnPanic(std::path::PathBuf);
impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.0.join("server.log")).unwrap_or_default();
            eprintln!("---- server log ----\n{log}");
        }
    }
}

#[test]
fn ctrl_c_while_watching_without_a_terminal_detaches_and_the_job_goes_on() {
    let (home, _node, conn) = initialized();
    let mut c = connect(&conn);
    let id = selftest(&mut c, 30.0, 300);
    wait_for(&conn, id, &["running"], Duration::from_secs(10));
    let bin = assert_cmd::cargo::cargo_bin("steep");
    let child = std::process::Command::new(bin)
        .env("STEEP_HOME", home.path())
        .env("NO_COLOR", "1")
        .args(["ops", "watch", &id.to_string(), "-c", &conn])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "watch did not stop on Ctrl-C"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("stopped watching") && err.contains("keeps running"),
        "{err}"
    );
    assert_eq!(
        status(&mut c, id).0,
        "running",
        "Ctrl-C without a terminal must not cancel"
    );
    assert!(c
        .query_one("SELECT steep_repl.cancel_operation($1)", &[&id])
        .unwrap()
        .get::<_, bool>(0));
}
