//! Jobs act as their owner: attempts to become superuser through a job, and to read or change
//! another role's jobs, snapshots, progress and errors. Each test here reproduces an attack that
//! worked against the superuser-plus-`SET ROLE` design.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use steep::cli::sandbox::TempCluster;

/// A connection string for `role` (trust authentication on the test clusters).
fn as_role(node: &TempCluster, role: &str, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={role} dbname={db}",
        node.port()
    )
}

/// `statement` fails on `conn` with an error whose message contains `want`.
fn refused(conn: &str, statement: &str, want: &str) {
    let e = connect(conn).batch_execute(statement).expect_err(statement);
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or(e.to_string());
    assert!(msg.contains(want), "{statement}: {msg}");
}

fn is_superuser(conn: &str, role: &str) -> bool {
    connect(conn)
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

/// Wait for a snapshot job; (status, error).
fn wait_snapshot(conn: &str, id: &str) -> (String, Option<String>) {
    let row = connect(conn)
        .query_one(
            "SELECT status, error_message FROM steep_repl.wait_snapshot($1, 120)",
            &[&id],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn start(conn: &str, sql: &str) -> String {
    connect(conn)
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", steep::db_error::describe(&e)))
        .get(0)
}

/// A cluster with role bob and database `db` that bob owns (steep_repl installed, bob granted):
/// the cluster, the superuser's connection string and bob's.
fn with_bob(home: &Path, db: &str) -> (TempCluster, String, String) {
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE ROLE bob LOGIN");
    database(home, &n, db, "bob", &["bob"]);
    let bob = as_role(&n, "bob", db);
    (n, admin, bob)
}

/// `steep snapshot generate --client -o DIR -c CONN`, which must succeed.
fn client_generate(home: &Path, dir: &Path, conn: &str) {
    ok(steep(home).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        dir.to_str().unwrap(),
        "-c",
        conn,
    ]));
}

/// The server log written since `from` (a byte offset).
fn log_since(node: &TempCluster, from: u64) -> String {
    let text = std::fs::read(node.log_file()).unwrap_or_default();
    String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned()
}

fn log_len(node: &TempCluster) -> u64 {
    std::fs::metadata(node.log_file())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A database owned by `owner`, with steep_repl and `grant` granted.
fn database(home: &Path, node: &TempCluster, name: &str, owner: &str, grant: &[&str]) -> String {
    let admin = node.connection_string("postgres");
    sql(&admin, &format!("CREATE DATABASE {name} OWNER {owner}"));
    let conn = node.connection_string(name);
    init(home, &conn, &[]);
    for g in grant {
        init(home, &conn, &["--grant", g]);
    }
    conn
}

/// User code that tries to climb back to the session user and records what it saw and got in
/// the server log (a WARNING works in read-only and failing transactions alike).
const PROBE: &str = r#"
CREATE FUNCTION public.probe(kind text) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE r1 text; r2 text; r3 text; r4 text;
BEGIN
  BEGIN EXECUTE 'RESET ROLE'; r1 := 'ok ' || current_user;
  EXCEPTION WHEN OTHERS THEN r1 := 'refused: ' || SQLERRM; END;
  BEGIN EXECUTE 'SET ROLE postgres'; r2 := 'ok ' || current_user;
  EXCEPTION WHEN OTHERS THEN r2 := 'refused: ' || SQLERRM; END;
  BEGIN EXECUTE 'SET SESSION AUTHORIZATION postgres'; r3 := 'ok ' || current_user;
  EXCEPTION WHEN OTHERS THEN r3 := 'refused: ' || SQLERRM; END;
  BEGIN EXECUTE 'CREATE ROLE probe_escalated SUPERUSER'; r4 := 'ok';
  EXCEPTION WHEN OTHERS THEN r4 := 'refused: ' || SQLERRM; END;
  RAISE WARNING 'steep-probe|%|%|%|%|%|%|%|%', kind, session_user,
    (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user), current_user, r1, r2, r3, r4;
  RETURN true;
END $f$;
CREATE FUNCTION public.probe_int(kind text, v int) RETURNS boolean IMMUTABLE LANGUAGE plpgsql
  AS $f$ BEGIN RETURN public.probe(kind); END $f$;
CREATE FUNCTION public.probe_trigger() RETURNS trigger LANGUAGE plpgsql
  AS $f$ BEGIN PERFORM public.probe(TG_ARGV[0]); RETURN CASE WHEN TG_LEVEL = 'ROW' THEN NEW END; END $f$;
CREATE TABLE public.t_trig (id int PRIMARY KEY, v text);
CREATE TRIGGER b_row BEFORE INSERT ON public.t_trig FOR EACH ROW EXECUTE FUNCTION public.probe_trigger('before-row');
CREATE TRIGGER a_row AFTER INSERT ON public.t_trig FOR EACH ROW EXECUTE FUNCTION public.probe_trigger('after-row');
CREATE TRIGGER b_stmt BEFORE INSERT ON public.t_trig FOR EACH STATEMENT EXECUTE FUNCTION public.probe_trigger('statement');
CREATE TABLE public.t_check (id int PRIMARY KEY, v int CHECK (public.probe_int('check', v)));
CREATE DOMAIN public.probed AS int CHECK (public.probe_int('domain', VALUE));
CREATE TABLE public.t_domain (id int PRIMARY KEY, v public.probed);
CREATE TABLE public.t_gen (id int PRIMARY KEY, v int,
  g boolean GENERATED ALWAYS AS (public.probe_int('generated', v)) STORED);
CREATE TABLE public.t_default (id int PRIMARY KEY, v boolean DEFAULT public.probe('default'));
CREATE TABLE public.t_index (id int PRIMARY KEY, v int);
-- Pre-data DDL that calls user code when it runs: CREATE AGGREGATE checks its INITCOND with the
-- state type's input function, and a domain's input runs the domain's CHECK.
CREATE DOMAIN public.probed_state AS int CHECK (public.probe_int('pre-data', VALUE));
CREATE FUNCTION public.probe_sfunc(public.probed_state, int) RETURNS public.probed_state
  LANGUAGE sql AS 'SELECT $1';
CREATE AGGREGATE public.probe_agg(int) (SFUNC = public.probe_sfunc, STYPE = public.probed_state,
  INITCOND = '0');
CREATE INDEX t_index_probe ON public.t_index ((public.probe_int('index', v)));
INSERT INTO public.t_trig VALUES (1, 'a'), (2, 'b');
INSERT INTO public.t_check VALUES (1, 1), (2, 2);
INSERT INTO public.t_domain VALUES (1, 1);
INSERT INTO public.t_gen (id, v) VALUES (1, 1);
INSERT INTO public.t_default VALUES (1, true);
INSERT INTO public.t_index VALUES (1, 1), (2, 2);
-- A database owner's search_path in front of pg_catalog, with a function shadowing a built-in
-- the workers' own SQL uses.
CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
  AS $f$ BEGIN PERFORM public.probe('search_path'); RETURN pg_catalog.now(); END $f$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql
  AS $f$ BEGIN PERFORM public.probe('search_path'); RETURN pg_catalog.transaction_timestamp(); END $f$;
"#;

struct ProbeLine {
    kind: String,
    session_user: String,
    session_is_super: bool,
    attempts: Vec<String>,
}

fn probe_lines(log: &str) -> Vec<ProbeLine> {
    log.lines()
        .filter_map(|l| l.split_once("steep-probe|").map(|(_, rest)| rest))
        .map(|rest| {
            let f: Vec<&str> = rest.split('|').collect();
            ProbeLine {
                kind: f[0].to_string(),
                session_user: f[1].to_string(),
                session_is_super: f[2] == "t",
                attempts: f[4..].iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect()
}

/// Every probe either ran in a session that is not a superuser's, or under security-restricted
/// operation where every attempt was refused; nothing it tried made anyone superuser.
fn assert_contained(lines: &[ProbeLine], admin: &str, role: &str) {
    for p in lines {
        if p.session_is_super {
            for a in &p.attempts {
                assert!(
                    a.starts_with("refused:"),
                    "{} in a superuser session ({}) got through: {a}",
                    p.kind,
                    p.session_user
                );
            }
            assert!(
                p.attempts[0].contains("security-restricted operation"),
                "{}: not refused by security-restricted operation: {}",
                p.kind,
                p.attempts[0]
            );
        } else {
            assert!(
                p.attempts[3].starts_with("refused:"),
                "{}: created a superuser role",
                p.kind
            );
        }
    }
    assert!(!is_superuser(admin, role), "{role} became superuser");
    let escalated: i64 = connect(admin)
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'probe_escalated'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        escalated, 0,
        "the probe created a role with rights it lacks"
    );
}

fn kinds(lines: &[ProbeLine]) -> Vec<String> {
    let mut k: Vec<String> = lines.iter().map(|p| p.kind.clone()).collect();
    k.sort();
    k.dedup();
    k
}

#[test]
fn user_code_run_by_jobs_never_gains_rights_in_direct_or_client_mode() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE ROLE bob LOGIN");
    let src = database(home.path(), &n, "probe_src", "bob", &["bob"]);
    let bob_src = as_role(&n, "bob", "probe_src");
    sql(&bob_src, PROBE);
    sql(
        &admin,
        "ALTER DATABASE probe_src SET search_path = public, pg_catalog",
    );
    let _ = src;

    // Direct mode: generate, then apply (schema create, then into the existing tables).
    let from = log_len(&n);
    let id = start(
        &bob_src,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('probe-snap')",
    );
    let (status, err) = wait_snapshot(&bob_src, &id);
    assert_eq!(status, "complete", "{err:?}");
    let sel = start(
        &bob_src,
        "SELECT (steep_repl.start_selftest(0.2, 2)).id::text",
    );
    let _ = sel;
    database(home.path(), &n, "probe_dst", "bob", &["bob"]);
    let bob_dst = as_role(&n, "bob", "probe_dst");
    // (The triggers are asked to fire: by default a load fires none.)
    for mode in ["create", "verify"] {
        let id = start(
            &bob_dst,
            &format!(
                "SELECT snapshot_id FROM steep_repl.start_apply('probe-snap', schema_mode => '{mode}',
                                                                fire_triggers => true)"
            ),
        );
        let (status, err) = wait_snapshot(&bob_dst, &id);
        assert_eq!(status, "complete", "apply --schema {mode}: {err:?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let direct = probe_lines(&log_since(&n, from));
    let seen = kinds(&direct);
    for k in [
        "before-row",
        "after-row",
        "statement",
        "check",
        "domain",
        "generated",
        "index",
        "pre-data",
    ] {
        assert!(seen.contains(&k.to_string()), "{k} never ran: {seen:?}");
    }
    assert_contained(&direct, &admin, "bob");
    // The loaded rows are the source's.
    let v: String = connect(&bob_dst)
        .query_one("SELECT string_agg(v, ',' ORDER BY id) FROM t_trig", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "a,b");

    // Client mode, run as bob: the sessions are bob's own.
    let dir = home.path().join("probe-client");
    let from = log_len(&n);
    client_generate(home.path(), &dir, &bob_src);
    sql(&admin, "CREATE DATABASE probe_dst2 OWNER bob");
    let bob_dst2 = as_role(&n, "bob", "probe_dst2");
    for mode in ["create", "verify"] {
        ok(steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "--fire-triggers",
            "--schema",
            mode,
            "-i",
            dir.to_str().unwrap(),
            "-c",
            &bob_dst2,
        ]));
    }
    std::thread::sleep(Duration::from_millis(300));
    let client = probe_lines(&log_since(&n, from));
    assert!(
        client.iter().all(|p| p.session_user == "bob"),
        "client mode ran user code in another session"
    );
    for k in ["before-row", "pre-data", "index"] {
        assert!(
            kinds(&client).contains(&k.to_string()),
            "{k} never ran in client mode"
        );
    }
    assert_contained(&client, &admin, "bob");
}

#[test]
fn a_trigger_that_resets_role_fails_the_apply_instead_of_escalating() {
    let home = temp_home();
    let (_n, admin, bob) = with_bob(home.path(), "bobdb");
    sql(
        &bob,
        "CREATE TABLE bob_t(id int primary key, v text);
         INSERT INTO bob_t SELECT g, 'r'||g FROM generate_series(1,3) g;",
    );
    let id = start(
        &bob,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('bob_snap1')",
    );
    assert_eq!(wait_snapshot(&bob, &id).0, "complete");
    sql(
        &bob,
        "CREATE FUNCTION bob_trig() RETURNS trigger LANGUAGE plpgsql AS
           $f$BEGIN EXECUTE 'RESET ROLE'; EXECUTE 'ALTER ROLE bob SUPERUSER'; RETURN NEW; END$f$;
         CREATE TRIGGER t BEFORE INSERT ON bob_t FOR EACH ROW EXECUTE FUNCTION bob_trig();",
    );
    let id = start(
        &bob,
        "SELECT snapshot_id FROM steep_repl.start_apply('bob_snap1', fire_triggers => true)",
    );
    let (status, err) = wait_snapshot(&bob, &id);
    assert_eq!(status, "failed");
    assert!(
        err.as_deref()
            .unwrap_or("")
            .contains("security-restricted operation"),
        "{err:?}"
    );
    assert!(!is_superuser(&admin, "bob"));
    // The table is whole: the failed load rolled back.
    let n_rows: i64 = connect(&bob)
        .query_one("SELECT count(*) FROM bob_t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n_rows, 3);
}

#[test]
fn comments_with_backslash_lines_are_carried_verbatim_and_never_run() {
    let home = temp_home();
    let (n, admin, bob) = with_bob(home.path(), "cmt");
    sql(
        &bob,
        r#"CREATE TABLE t1(id int primary key); CREATE TABLE t2(id int primary key);
           COMMENT ON TABLE t1 IS E'harmless\n\\x';
           COMMENT ON TABLE t2 IS '; RESET ROLE; ALTER ROLE bob SUPERUSER; --';
           CREATE FUNCTION body_with_backslashes() RETURNS text LANGUAGE sql AS $b$
SELECT '
\restrict abc
CREATE EXTENSION steep_repl;
\x'::text
$b$;"#,
    );
    let comments = |conn: &str| -> Vec<(String, String)> {
        connect(conn)
            .query(
                "SELECT c.relname::text, obj_description(c.oid, 'pg_class')
                 FROM pg_class c WHERE c.relname IN ('t1', 't2') ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let body = |conn: &str| -> String {
        connect(conn)
            .query_one(
                "SELECT prosrc FROM pg_proc WHERE proname = 'body_with_backslashes'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let id = start(
        &bob,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('cmt')",
    );
    assert_eq!(wait_snapshot(&bob, &id).0, "complete");
    // Direct mode as bob.
    database(home.path(), &n, "cmt_dst", "bob", &["bob"]);
    let dst = as_role(&n, "bob", "cmt_dst");
    let id = start(
        &dst,
        "SELECT snapshot_id FROM steep_repl.start_apply('cmt', schema_mode => 'create')",
    );
    let (status, err) = wait_snapshot(&dst, &id);
    assert_eq!(status, "complete", "{err:?}");
    assert_eq!(comments(&dst), comments(&bob));
    assert_eq!(body(&dst), body(&bob));
    // Client mode as a superuser (pg_restore's own position), from a client-mode snapshot.
    let dir = home.path().join("cmt-client");
    client_generate(home.path(), &dir, &bob);
    sql(&admin, "CREATE DATABASE cmt_dst2");
    let dst2 = n.connection_string("cmt_dst2");
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "--schema",
        "create",
        "-i",
        dir.to_str().unwrap(),
        "-c",
        &dst2,
    ]));
    assert_eq!(comments(&dst2), comments(&bob));
    assert_eq!(body(&dst2), body(&bob));
    assert!(!is_superuser(&admin, "bob"));
}

#[test]
fn a_database_owner_cannot_hijack_the_workers_own_queries() {
    let home = temp_home();
    let (_n, admin, bob) = with_bob(home.path(), "inj");
    sql(
        &admin,
        "ALTER DATABASE inj SET search_path = public, pg_catalog",
    );
    // A role the owner sets for every session of the database must not take over the workers.
    sql(&admin, "CREATE ROLE alice LOGIN");
    sql(&bob, "ALTER DATABASE inj SET role = 'alice'");
    sql(
        &bob,
        "CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
           $f$BEGIN IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
             EXECUTE 'ALTER ROLE bob SUPERUSER'; END IF; RETURN pg_catalog.now(); END$f$;
         CREATE FUNCTION public.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS
           $f$BEGIN IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
             EXECUTE 'ALTER ROLE bob SUPERUSER'; END IF; END$f$;
         CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let id: i64 = connect(&bob)
        .query_one("SELECT id FROM steep_repl.start_selftest(0.3, 3)", &[])
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st: String = connect(&bob)
            .query_one(
                "SELECT status FROM steep_repl.work_queue WHERE id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if st == "complete" {
            break;
        }
        assert!(st != "failed" && Instant::now() < deadline, "selftest {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let snap = start(
        &bob,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('inj')",
    );
    assert_eq!(wait_snapshot(&bob, &snap).0, "complete");
    assert!(!is_superuser(&admin, "bob"), "bob became superuser");
}

#[test]
fn roles_neither_see_nor_touch_each_others_jobs_snapshots_progress_or_errors() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN");
    database(home.path(), &n, "adb", "alice", &["alice", "bob"]);
    database(home.path(), &n, "bdb", "bob", &["bob"]);
    let alice = as_role(&n, "alice", "adb");
    let bob = as_role(&n, "bob", "bdb");
    let bob_in_a = as_role(&n, "bob", "adb");
    sql(
        &alice,
        "CREATE TABLE salaries (who text PRIMARY KEY, amount int);
         INSERT INTO salaries VALUES ('alice', 250000);",
    );
    let id = start(
        &alice,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('alice_private')",
    );
    assert_eq!(wait_snapshot(&alice, &id).0, "complete");

    // Bob cannot apply alice's snapshot anywhere, nor learn about paths through the manifest
    // helper.
    let e = connect(&bob)
        .query_one(
            "SELECT steep_repl.start_apply('alice_private', schema_mode => 'create')",
            &[],
        )
        .unwrap_err();
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("belongs to another role"), "{msg}");
    assert!(!msg.contains(&id) && !msg.contains("alice\""), "{msg}");
    // Nor write into her snapshot's directory.
    refused(
        &bob,
        "SELECT steep_repl.start_snapshot('alice_private/data/x')",
        "inside the snapshot",
    );
    refused(
        &bob,
        "SELECT steep_repl._manifest_snapshot_id('/etc')",
        "outside steep_repl.snapshot_dir",
    );
    sql(
        &admin,
        "CREATE ROLE carol LOGIN; GRANT CONNECT ON DATABASE adb TO carol",
    );
    sql(
        &n.connection_string("adb"),
        "GRANT USAGE ON SCHEMA steep_repl TO carol",
    );
    refused(
        &as_role(&n, "carol", "adb"),
        "SELECT steep_repl._manifest_snapshot_id('alice_private')",
        "permission denied for function",
    );

    // Bob cannot point a job row at alice's snapshot (it would rewrite her row).
    refused(
        &bob_in_a,
        &format!(
            "INSERT INTO steep_repl.work_queue (operation, snapshot_id, params)
             VALUES ('snapshot_generate', '{id}', '{{\"path\": \"x\"}}')"
        ),
        "row-level security",
    );

    // A failed job of alice's with row data in its error, and a running one.
    let mut a = connect(&alice);
    a.batch_execute(
        "INSERT INTO steep_repl.snapshots (snapshot_id, kind, status) VALUES ('bad', 'generate', 'pending');
         INSERT INTO steep_repl.work_queue (operation, snapshot_id, params)
         VALUES ('snapshot_generate', 'bad', '{\"path\": \"../salaries-250000\"}')",
    )
    .unwrap();
    let (st, err) = wait_snapshot(&alice, "bad");
    assert_eq!(st, "failed");
    let err = err.unwrap();
    assert!(err.contains("salaries-250000"), "{err}");
    let running: i64 = a
        .query_one("SELECT id FROM steep_repl.start_selftest(5, 50)", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(500));
    for conn in [&bob, &bob_in_a] {
        let mut b = connect(conn);
        let seen: i64 = b
            .query_one("SELECT count(*) FROM steep_repl.progress", &[])
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "bob sees alice's progress");
        let seen: i64 = b
            .query_one(
                "SELECT count(*) FROM steep_repl.operation_progress($1)",
                &[&running],
            )
            .unwrap()
            .get(0);
        assert_eq!(seen, 0);
        let last: Option<String> = b
            .query_one("SELECT last_error FROM steep_repl.health()", &[])
            .unwrap()
            .get(0);
        assert!(
            !last.unwrap_or_default().contains("250000"),
            "bob reads alice's error"
        );
        let cancelled: bool = b
            .query_one("SELECT steep_repl.cancel_operation($1)", &[&running])
            .unwrap()
            .get(0);
        assert!(!cancelled);
        let rows: i64 = b
            .query_one("SELECT count(*) FROM steep_repl.snapshots", &[])
            .unwrap()
            .get(0);
        assert_eq!(rows, 0);
    }
    // Alice sees her own.
    let mine: i64 = a
        .query_one(
            "SELECT count(*) FROM steep_repl.progress WHERE id = $1",
            &[&running],
        )
        .unwrap()
        .get(0);
    assert_eq!(mine, 1);
    assert!(a
        .query_one("SELECT steep_repl.cancel_operation($1)", &[&running])
        .unwrap()
        .get::<_, bool>(0));
    // Anyone may LISTEN on the channel: it carries which job moved, nothing else, and a forged
    // signal does not fool a follower.
    let mut listener = connect(&as_role(&n, "carol", "adb"));
    listener
        .batch_execute("LISTEN steep_repl_progress")
        .unwrap();
    let job: i64 = a
        .query_one("SELECT id FROM steep_repl.start_selftest(2, 20)", &[])
        .unwrap()
        .get(0);
    let forger = {
        let conn = as_role(&n, "carol", "adb");
        std::thread::spawn(move || {
            let mut c = connect(&conn);
            for _ in 0..15 {
                c.execute(
                    "SELECT pg_notify('steep_repl_progress', json_build_object('op', 'selftest',
                       'id', $1::bigint, 'status', 'complete', 'percent', 100)::text)",
                    &[&job],
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let watched = json(&ok(steep(home.path()).args([
        "ops",
        "watch",
        &job.to_string(),
        "--json",
        "-c",
        &alice,
    ])));
    forger.join().unwrap();
    assert_eq!(watched["last"]["status"], "complete");
    let st: String = a
        .query_one(
            "SELECT status FROM steep_repl.work_queue WHERE id = $1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(st, "complete", "the follower believed a forged signal");
    {
        use postgres::fallible_iterator::FallibleIterator;
        let mut notes = listener.notifications();
        let mut it = notes.timeout_iter(Duration::from_millis(200));
        let mut real = 0;
        while let Some(note) = it.next().unwrap() {
            let v = json(note.payload());
            if v.get("status").is_some() {
                continue; // carol's own forgeries
            }
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["id", "sent_at_ms"], "{}", note.payload());
            real += 1;
        }
        assert!(real >= 2, "no signals seen");
    }
    // The node registry is shared, but emptying it changes none of alice's rows and blocks none
    // of her jobs; which node this database is stays steep init's business.
    sql(&bob_in_a, "DELETE FROM steep_repl.nodes");
    refused(
        &bob_in_a,
        "UPDATE steep_repl.coordinator_state SET value = '\"x\"'",
        "permission denied",
    );
    let kept: Option<String> = a
        .query_one(
            "SELECT node_id FROM steep_repl.snapshots WHERE snapshot_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(kept.is_some(), "bob's delete rewrote alice's snapshot row");
    let again = start(
        &alice,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('alice_again')",
    );
    assert_eq!(wait_snapshot(&alice, &again).0, "complete");
}

#[test]
fn a_table_whose_policy_hides_rows_from_its_owner_fails_the_job() {
    let home = temp_home();
    let (_n, _, bob) = with_bob(home.path(), "pol");
    sql(
        &bob,
        "CREATE TABLE hidden (id int PRIMARY KEY, mine boolean);
         INSERT INTO hidden VALUES (1, true), (2, false);
         ALTER TABLE hidden ENABLE ROW LEVEL SECURITY; ALTER TABLE hidden FORCE ROW LEVEL SECURITY;
         CREATE POLICY only_mine ON hidden USING (mine);",
    );
    let id = start(
        &bob,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('pol')",
    );
    let (st, err) = wait_snapshot(&bob, &id);
    assert_eq!(st, "failed");
    assert!(err.unwrap().contains("row-level security"));
    let dir = home.path().join("pol-client");
    let e = fails(
        steep(home.path()).args([
            "snapshot",
            "generate",
            "--client",
            "-o",
            dir.to_str().unwrap(),
            "-c",
            &bob,
        ]),
        1,
    );
    assert!(e.contains("row-level security"), "{e}");
}

#[test]
fn standard_conforming_strings_off_and_hostile_names_change_nothing() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE DATABASE scs");
    sql(
        &admin,
        "ALTER DATABASE scs SET standard_conforming_strings = off",
    );
    let conn = n.connection_string("scs");
    init(home.path(), &conn, &[]);
    sql(
        &conn,
        r#"CREATE TABLE "a\'b" (id int PRIMARY KEY, v text);
           CREATE TABLE "'; select 1; --" (id int PRIMARY KEY, "x\'y" text);
           INSERT INTO "a\'b" VALUES (1, 'one');
           INSERT INTO "'; select 1; --" VALUES (1, 'q''uote');"#,
    );
    let id = start(
        &conn,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('scs')",
    );
    let (st, err) = wait_snapshot(&conn, &id);
    assert_eq!(st, "complete", "{err:?}");
    sql(&admin, "CREATE DATABASE scs_dst");
    sql(
        &admin,
        "ALTER DATABASE scs_dst SET standard_conforming_strings = off",
    );
    let dst = n.connection_string("scs_dst");
    init(home.path(), &dst, &[]);
    let id = start(
        &dst,
        "SELECT snapshot_id FROM steep_repl.start_apply('scs', schema_mode => 'create')",
    );
    let (st, err) = wait_snapshot(&dst, &id);
    assert_eq!(st, "complete", "{err:?}");
    let v: String = connect(&dst)
        .query_one(r#"SELECT "x\'y" FROM "'; select 1; --""#, &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "q'uote");
    // Applying again into a table that is not there names it, quoted as written.
    sql(&dst, r#"DROP TABLE "a\'b""#);
    let id = start(
        &dst,
        "SELECT snapshot_id FROM steep_repl.start_apply('scs')",
    );
    let (st, err) = wait_snapshot(&dst, &id);
    assert_eq!(st, "failed");
    assert!(err.unwrap().contains(r#"a\'b"#));
}

#[test]
fn secrets_and_files_stay_private() {
    let home = temp_home();
    let n = node();
    let conn = n.connection_string("postgres");
    init(home.path(), &conn, &[]);
    // A password in worker_conninfo never reaches a command line.
    sql(
        &conn,
        "ALTER SYSTEM SET steep_repl.worker_conninfo = 'password=TopSecret7xyz'",
    );
    sql(
        &conn,
        "SELECT pg_reload_conf();
         CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g;",
    );
    std::thread::sleep(Duration::from_millis(300));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                        if cmd.contains("TopSecret7xyz") {
                            seen.push(cmd);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    let id = start(
        &conn,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('secret')",
    );
    let (st, err) = wait_snapshot(&conn, &id);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert_eq!(st, "complete", "{err:?}");
    assert!(seen.is_empty(), "password on a command line: {seen:?}");
    let m = steep::engine::manifest::Manifest::read(&n.snapshot_dir().join("secret")).unwrap();
    assert!(m.schema.is_some(), "pg_dump did not run");

    // A connection string's password is not echoed in its parse error.
    let e = fails(
        steep(home.path()).args([
            "health",
            "-c",
            "postgresql://u:Top%ZZSecret7@127.0.0.1:1/db",
        ]),
        1,
    );
    assert!(
        !e.contains("Secret7") && e.contains("in the password"),
        "{e}"
    );

    // Client-mode files are the OS user's only.
    let dir = home.path().join("private-client");
    client_generate(home.path(), &dir, &conn);
    for e in walk(&dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&e).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", e.display());
    }

    // A symbolic link inside a snapshot is refused, not followed.
    let data = dir.join("data");
    let first = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let target = home.path().join("elsewhere");
    std::fs::rename(&first, &target).unwrap();
    std::os::unix::fs::symlink(&target, &first).unwrap();
    let e = fails(
        steep(home.path()).args(["snapshot", "verify", dir.to_str().unwrap()]),
        1,
    );
    assert!(e.contains("symbolic link"), "{e}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn internal_functions_are_not_public_and_an_upgrade_keeps_granted_roles_working() {
    let n = node();
    let admin = n.connection_string("postgres");
    sql(
        &admin,
        "CREATE ROLE granted LOGIN; CREATE ROLE stranger LOGIN;
         CREATE EXTENSION steep_repl VERSION '0.2.0';
         GRANT USAGE ON SCHEMA steep_repl TO granted;
         ALTER EXTENSION steep_repl UPDATE;",
    );
    let mut c = connect(&admin);
    for (role, f, want) in [
        ("granted", "steep_repl._compression(text)", true),
        ("granted", "steep_repl._snapshot_path(text, boolean)", true),
        ("granted", "steep_repl._restrict_session(text)", false),
        ("stranger", "steep_repl._compression(text)", false),
        ("stranger", "steep_repl._manifest_snapshot_id(text)", false),
    ] {
        let has: bool = c
            .query_one(
                "SELECT has_function_privilege($1, $2::text::regprocedure, 'EXECUTE')",
                &[&role, &f],
            )
            .unwrap()
            .get(0);
        assert_eq!(has, want, "{role} on {f}");
    }
    let gone: bool = c
        .query_one(
            "SELECT to_regprocedure('steep_repl._acts_as(name)') IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(gone, "_acts_as outlived the policies that used it");
    // A session that is not a superuser's cannot restrict itself (nor anyone else).
    sql(
        &admin,
        "GRANT EXECUTE ON FUNCTION steep_repl._restrict_session(text) TO granted",
    );
    refused(
        &as_role(&n, "granted", "postgres"),
        "SELECT steep_repl._restrict_session('stranger')",
        "must log in as a superuser",
    );
}

#[test]
fn cancel_during_post_data_stops_pg_restore_and_its_sessions_within_a_second() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE DATABASE slow_src");
    sql(&admin, "CREATE DATABASE slow_dst");
    let src = n.connection_string("slow_src");
    let dst = n.connection_string("slow_dst");
    init(home.path(), &src, &[]);
    init(home.path(), &dst, &[]);
    // An index expression that is quick in the source and slow in the target (its database
    // sets the delay for every session, the job's included).
    sql(
        &src,
        "CREATE FUNCTION public.slow(v int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
           $f$BEGIN PERFORM pg_sleep(coalesce(nullif(current_setting('steep.test_delay', true), ''), '0')::float8);
           RETURN v; END$f$;
         CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT g, g FROM generate_series(1, 400) g;
         CREATE INDEX t_slow ON t ((public.slow(v)));",
    );
    sql(
        &admin,
        "ALTER DATABASE slow_dst SET steep.test_delay = '0.05'",
    );
    let id = start(
        &src,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('slow')",
    );
    assert_eq!(wait_snapshot(&src, &id).0, "complete");
    let id = start(
        &dst,
        "SELECT snapshot_id FROM steep_repl.start_apply('slow', schema_mode => 'create')",
    );
    let mut c = connect(&dst);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let phase: Option<String> = c
            .query_one("SELECT phase FROM steep_repl.snapshot_progress($1)", &[&id])
            .unwrap()
            .get(0);
        if phase.as_deref() == Some("post-data") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached post-data: {phase:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let pg_restore start the index build.
    std::thread::sleep(Duration::from_millis(500));
    crate::snapshot::cancel_within_a_second(&mut c, &id);
    // And nothing of the job is left running on the server.
    std::thread::sleep(Duration::from_millis(300));
    let busy: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = 'slow_dst' AND state = 'active' AND pid <> pg_backend_pid()
               AND query ILIKE '%CREATE INDEX%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(busy, 0, "the index build still runs");
}

#[test]
fn a_job_can_be_queued_only_as_a_role_one_may_become() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    let major: i32 = connect(&admin)
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000",
            &[],
        )
        .unwrap()
        .get(0);
    sql(
        &admin,
        "CREATE ROLE bob LOGIN; CREATE ROLE boss SUPERUSER NOLOGIN",
    );
    database(home.path(), &n, "become", "bob", &["bob"]);
    if major >= 16 {
        // Bob inherits boss's privileges but may not become boss (nor gain superuser through a
        // job that acts as boss).
        sql(&admin, "GRANT boss TO bob WITH INHERIT TRUE, SET FALSE");
    }
    let bob = as_role(&n, "bob", "become");
    refused(
        &bob,
        "INSERT INTO steep_repl.work_queue (operation, params, created_by)
         VALUES ('selftest', '{}', 'boss')",
        "row-level security",
    );
    // Nor for another database.
    refused(
        &bob,
        "INSERT INTO steep_repl.work_queue (operation, params, database)
         VALUES ('selftest', '{}', 'postgres')",
        "row-level security",
    );
}

#[test]
fn a_forged_job_row_removes_no_snapshot_and_the_directory_root_takes_none() {
    let home = temp_home();
    let (n, _, bob) = with_bob(home.path(), "forge");
    let admin = n.connection_string("forge");
    sql(&bob, "CREATE TABLE bt (id int PRIMARY KEY)");
    // Snapshots go inside steep_repl.snapshot_dir, never into the directory itself (it would be
    // every other snapshot's parent).
    refused(
        &bob,
        "SELECT steep_repl.start_snapshot('.')",
        "steep_repl.snapshot_dir itself",
    );
    // The superuser's snapshot, and one of bob's.
    let theirs = start(
        &admin,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('admins')",
    );
    assert_eq!(wait_snapshot(&admin, &theirs).0, "complete");
    let mine = start(
        &bob,
        "SELECT snapshot_id FROM steep_repl.start_snapshot('bobs')",
    );
    assert_eq!(wait_snapshot(&bob, &mine).0, "complete");
    // Bob forges a generate 'whose worker died', naming the other directory: the sweep fails
    // it and removes nothing.
    let id: i64 = connect(&bob)
        .query_one(
            "INSERT INTO steep_repl.work_queue (operation, snapshot_id, status, params)
             VALUES ('snapshot_generate', $1, 'running', '{\"path\": \"admins\"}')
             RETURNING id",
            &[&mine],
        )
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let err: String = loop {
        let r = connect(&admin)
            .query_one(
                "SELECT status, coalesce(error_message, '') FROM steep_repl.work_queue WHERE id = $1",
                &[&id],
            )
            .unwrap();
        if r.get::<_, String>(0) == "failed" {
            break r.get(1);
        }
        assert!(Instant::now() < deadline, "the forged job was never failed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(err.contains("left no partial output"), "{err}");
    let dir = n.snapshot_dir().join("admins");
    assert!(
        dir.join("manifest.json").is_file(),
        "the snapshot was touched"
    );
    assert!(dir.join("data").read_dir().unwrap().next().is_some());
}

/// A plain role merges, in client mode with its own credentials on both nodes, the tables it
/// owns; user code on them (triggers, CHECK, defaults) never runs with more rights than it has;
/// a table it may not write is refused before anything changes; a foreign-key cycle it could
/// merge only with session_replication_role is refused naming the keys, and a superuser merges it.
#[test]
fn a_plain_role_merges_its_own_tables_and_gains_nothing() {
    let home = temp_home();
    let (a, admin_a, bob_a) = with_bob(home.path(), "mdb");
    let b = node();
    let admin_b = b.connection_string("postgres");
    sql(&admin_b, "CREATE ROLE bob LOGIN");
    sql(&admin_b, "CREATE DATABASE mdb OWNER bob");
    let bob_b = as_role(&b, "bob", "mdb");
    let tables = "CREATE TABLE public.t_trig (id int PRIMARY KEY, v int);
        CREATE TRIGGER b_row BEFORE INSERT OR UPDATE ON public.t_trig FOR EACH ROW
            EXECUTE FUNCTION public.probe_trigger('before-row');
        CREATE TRIGGER a_row AFTER INSERT OR UPDATE ON public.t_trig FOR EACH ROW
            EXECUTE FUNCTION public.probe_trigger('after-row');
        CREATE TRIGGER b_stmt BEFORE INSERT OR UPDATE ON public.t_trig FOR EACH STATEMENT
            EXECUTE FUNCTION public.probe_trigger('statement');
        CREATE TABLE public.t_check (id int PRIMARY KEY, v int CHECK (public.probe_int('check', v)));
        CREATE TABLE public.t_default (id int PRIMARY KEY, v boolean DEFAULT public.probe('default'));
        CREATE TABLE public.x (id int PRIMARY KEY, y int);
        CREATE TABLE public.y (id int PRIMARY KEY, x int REFERENCES public.x);
        ALTER TABLE public.x ADD CONSTRAINT x_y_fkey FOREIGN KEY (y) REFERENCES public.y;";
    for conn in [&bob_a, &bob_b] {
        let probe: String = PROBE
            .lines()
            .take_while(|l| !l.starts_with("CREATE TABLE public.t_trig"))
            .collect::<Vec<_>>()
            .join("\n");
        sql(conn, &probe);
        sql(conn, tables);
    }
    sql(
        &bob_a,
        "INSERT INTO t_trig VALUES (1, 1), (2, 2); INSERT INTO t_check VALUES (1, 1);
                 INSERT INTO t_default VALUES (1, true)",
    );
    sql(
        &bob_b,
        "INSERT INTO t_trig VALUES (2, 20), (3, 3); INSERT INTO t_check VALUES (2, 2);
                 INSERT INTO t_default (id) VALUES (2)",
    );
    // A table of the superuser's that bob may read but not write: refused, nothing written.
    let (super_a, super_b) = (a.connection_string("mdb"), b.connection_string("mdb"));
    for db in [&super_a, &super_b] {
        sql(
            db,
            "CREATE TABLE public.theirs (id int PRIMARY KEY); GRANT SELECT ON public.theirs TO bob",
        );
    }
    let err = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &bob_a,
            "--peer",
            &bob_b,
            "--strategy",
            "prefer-local",
            "-t",
            "t_trig",
            "-t",
            "theirs",
        ]),
        3,
    );
    assert!(
        err.contains("may not write") && err.contains("theirs"),
        "{err}"
    );
    assert_eq!(
        connect(&bob_b)
            .query_one("SELECT count(*) FROM t_trig", &[])
            .unwrap()
            .get::<_, i64>(0),
        2
    );
    // The cycle of NOT DEFERRABLE keys needs session_replication_role, which bob may not set.
    let err = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &bob_a,
            "--peer",
            &bob_b,
            "--strategy",
            "prefer-local",
        ]),
        3,
    );
    assert!(
        err.contains("x_y_fkey") && err.contains("DEFERRABLE"),
        "{err}"
    );

    let from = (log_len(&a), log_len(&b));
    ok(steep(home.path()).args([
        "merge",
        "run",
        "-c",
        &bob_a,
        "--peer",
        &bob_b,
        "--strategy",
        "prefer-local",
        "-t",
        "t_trig",
        "-t",
        "t_check",
        "-t",
        "t_default",
    ]));
    for conn in [&bob_a, &bob_b] {
        let got: Vec<String> = connect(conn)
            .query(
                "SELECT format('%s', array_agg(t::text ORDER BY t.id)) FROM t_trig t
                 UNION ALL SELECT format('%s', array_agg(t::text ORDER BY t.id)) FROM t_check t",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            got,
            ["{\"(1,1)\",\"(2,2)\",\"(3,3)\"}", "{\"(1,1)\",\"(2,2)\"}"]
        );
    }
    let mut lines = probe_lines(&log_since(&a, from.0));
    lines.extend(probe_lines(&log_since(&b, from.1)));
    // The triggers were held by their owner; the CHECK ran, as bob.
    assert_eq!(kinds(&lines), ["check"]);
    assert!(lines.iter().all(|p| p.session_user == "bob"));
    assert_contained(&lines, &admin_a, "bob");
    assert_contained(&lines, &admin_b, "bob");
    // Another granted role sees nothing of bob's merges: rows, decisions, audit.
    sql(&admin_a, "CREATE ROLE eve LOGIN");
    init(
        home.path(),
        &a.connection_string("mdb"),
        &["--grant", "eve"],
    );
    let eve = as_role(&a, "eve", "mdb");
    let seen: i64 = connect(&eve)
        .query_one(
            "SELECT (SELECT count(*) FROM steep_repl.merges)
                  + (SELECT count(*) FROM steep_repl.merge_audit_log)
                  + (SELECT count(*) FROM steep_repl.merge_tables)
                  + (SELECT count(*) FROM steep_repl.merge_decisions)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    // A role that inherits bob's privileges but may not become bob (16+) sees his merge and
    // cannot steer it: no decision, no mark, no audit row of its own making.
    let pg16: bool = connect(&admin_a)
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 160000",
            &[],
        )
        .unwrap()
        .get(0);
    if pg16 {
        sql(
            &admin_a,
            "CREATE ROLE mallory LOGIN; GRANT bob TO mallory WITH INHERIT TRUE, SET FALSE",
        );
        init(
            home.path(),
            &a.connection_string("mdb"),
            &["--grant", "mallory"],
        );
        let mallory = as_role(&a, "mallory", "mdb");
        let id: String = connect(&mallory)
            .query_one("SELECT merge_id FROM steep_repl.merges LIMIT 1", &[])
            .unwrap()
            .get(0);
        for statement in [
            format!(
                "INSERT INTO steep_repl.merge_decisions (merge_id, schema_name, table_name, key,
                     resolution, decided_by) VALUES ('{id}', 'public', 't_trig', '(9)', 'skip', 'bob')"
            ),
            format!(
                "INSERT INTO steep_repl.merge_tables (merge_id, schema_name, table_name, state)
                 VALUES ('{id}', 'public', 'x', 'merged')"
            ),
            format!(
                "INSERT INTO steep_repl.merge_audit_log (merge_id, schema_name, table_name, pk,
                     category) VALUES ('{id}', 'public', 't_trig', '{{}}', 'conflict')"
            ),
        ] {
            refused(&mallory, &statement, "row-level security");
        }
    }
    let bobs: i64 = connect(&bob_a)
        .query_one("SELECT count(*) FROM steep_repl.merge_audit_log", &[])
        .unwrap()
        .get(0);
    assert!(bobs > 0);

    // A superuser merges the rigid cycle: written with foreign keys off, checked before commit.
    sql(
        &super_a,
        "SET session_replication_role = replica;
                   INSERT INTO x VALUES (1, 1); INSERT INTO y VALUES (1, 1)",
    );
    sql(
        &super_b,
        "SET session_replication_role = replica;
                   INSERT INTO x VALUES (2, 2); INSERT INTO y VALUES (2, 2)",
    );
    ok(steep(home.path()).args([
        "merge",
        "run",
        "-c",
        &super_a,
        "--peer",
        &super_b,
        "--strategy",
        "prefer-local",
        "-t",
        "x",
        "-t",
        "y",
    ]));
    for conn in [&super_a, &super_b] {
        let n: i64 = connect(conn)
            .query_one(
                "SELECT (SELECT count(*) FROM x) + (SELECT count(*) FROM y)",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, 4);
    }
    // A row whose parent neither node has: the cycle is refused, nothing written.
    sql(
        &super_b,
        "SET session_replication_role = replica; INSERT INTO y VALUES (3, 99)",
    );
    let err = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &super_a,
            "--peer",
            &super_b,
            "--strategy",
            "prefer-local",
            "-t",
            "x",
            "-t",
            "y",
        ]),
        1,
    );
    assert!(
        err.contains("neither node has") && err.contains("y_x_fkey"),
        "{err}"
    );
    assert_eq!(
        connect(&super_a)
            .query_one("SELECT count(*) FROM y", &[])
            .unwrap()
            .get::<_, i64>(0),
        2
    );
}
