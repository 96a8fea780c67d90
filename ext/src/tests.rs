// #[pg_test]s: run inside a real PostgreSQL with the library preloaded. Included into the
// inline `tests` module of lib.rs, which #[pg_schema] requires.

use pgrx::prelude::*;

fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[pg_test]
fn version_matches_the_crate_and_extversion() {
    assert_eq!(
        one::<String>("SELECT steep_repl.version()").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        one::<String>("SELECT extversion FROM pg_extension WHERE extname = 'steep_repl'")
            .as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(one::<i32>("SELECT steep_repl.min_pg_version()"), Some(150000));
}

#[pg_test]
fn loaded_through_shared_preload_libraries_and_healthy() {
    let v = one::<String>("SHOW shared_preload_libraries").unwrap_or_default();
    assert!(v.split(',').any(|l| l.trim() == "steep_repl"), "{v}");
    for _ in 0..50 {
        if one::<String>("SELECT status FROM steep_repl.health()").as_deref() == Some("healthy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        one::<String>("SELECT status FROM steep_repl.health()").as_deref(),
        Some("healthy")
    );
    assert_eq!(
        one::<bool>("SELECT shared_memory_available FROM steep_repl.health()"),
        Some(true)
    );
}

#[pg_test]
fn register_is_an_upsert_and_heartbeat_knows_nodes() {
    run("SELECT steep_repl.register_node('n1', 'first', 'db1', 5433, 10)");
    run("SELECT steep_repl.register_node('n1', 'renamed', 'db1', 5433, 20)");
    assert_eq!(one::<i64>("SELECT count(*) FROM steep_repl.nodes"), Some(1));
    assert_eq!(
        one::<String>("SELECT node_name FROM steep_repl.nodes WHERE node_id = 'n1'").as_deref(),
        Some("renamed")
    );
    assert_eq!(one::<bool>("SELECT steep_repl.heartbeat('n1')"), Some(true));
    assert_eq!(one::<bool>("SELECT steep_repl.heartbeat('nope')"), Some(false));
    assert_eq!(
        one::<bool>("SELECT is_healthy FROM steep_repl.node_status('n1')"),
        Some(true)
    );
    run("UPDATE steep_repl.nodes SET last_seen = now() - interval '31 seconds'");
    assert_eq!(
        one::<bool>("SELECT is_healthy FROM steep_repl.node_status('n1')"),
        Some(false)
    );
    assert_eq!(one::<bool>("SELECT steep_repl.remove_node('n1')"), Some(true));
    assert_eq!(one::<bool>("SELECT steep_repl.remove_node('n1')"), Some(false));
}

#[pg_test(error = "invalid priority 0: give a number between 1 and 100")]
fn register_rejects_bad_priority() {
    run("SELECT steep_repl.register_node('n1', 'x', NULL, 5432, 0)");
}

#[pg_test(error = "invalid port 70000: give a number between 1 and 65535")]
fn register_rejects_bad_port() {
    run("SELECT steep_repl.register_node('n1', 'x', NULL, 70000)");
}

#[pg_test(error = "unknown node 'ghost'")]
fn capture_requires_a_registered_node() {
    run("SELECT steep_repl.capture_fingerprints('ghost')");
}

/// Run `sql` expecting it to fail with SQLSTATE condition `condition`; anything else (success
/// included) fails the test. SPI cannot run SAVEPOINT, so a DO block's exception handler is the
/// subtransaction.
fn expect_error(sql: &str, condition: &str) {
    run(&format!(
        "DO $t$ BEGIN {sql}; RAISE EXCEPTION 'accepted: %', $q${sql}$q$; \
         EXCEPTION WHEN {condition} THEN NULL; END $t$"
    ));
}

#[pg_test]
fn check_constraints_guard_enumerated_columns() {
    run("SELECT steep_repl.register_node('n1', 'x')");
    for sql in [
        "UPDATE steep_repl.nodes SET status = 'sleeping'",
        "INSERT INTO steep_repl.snapshots (snapshot_id, kind) VALUES ('s', 'copy')",
        "INSERT INTO steep_repl.snapshots (snapshot_id, kind, compression) VALUES ('s', 'apply', 'rar')",
        "INSERT INTO steep_repl.merge_audit_log (merge_id, schema_name, table_name, pk, category) \
         VALUES ('m', 'public', 't', '{}', 'match')",
    ] {
        expect_error(sql, "check_violation");
    }
}

/// Capture the current schema under `node`.
fn capture(node: &str) {
    run(&format!(
        "SELECT steep_repl.register_node('{node}', '{node}'); \
         SELECT steep_repl.capture_fingerprints('{node}')"
    ));
}

#[pg_test]
fn typmod_nullability_and_pk_change_the_fingerprint_but_defaults_do_not() {
    run("CREATE TABLE public.fp (id int PRIMARY KEY, name varchar(50), note text DEFAULT 'a')");
    capture("a");
    run("ALTER TABLE public.fp ALTER COLUMN note SET DEFAULT 'b'");
    capture("b");
    assert_eq!(
        one::<String>("SELECT status FROM steep_repl.compare_fingerprints('a', 'b') WHERE table_name = 'fp'")
            .as_deref(),
        Some("match")
    );
    let d = one::<String>(
        "SELECT difference || ':' || breaks_replication FROM steep_repl.fingerprint_diff('a', 'b')",
    );
    assert_eq!(d.as_deref(), Some("default:false"));

    run("ALTER TABLE public.fp ALTER COLUMN name TYPE varchar(100)");
    capture("c");
    assert_eq!(
        one::<String>("SELECT status FROM steep_repl.compare_fingerprints('a', 'c') WHERE table_name = 'fp'")
            .as_deref(),
        Some("mismatch")
    );
    assert_eq!(
        one::<String>(
            "SELECT column_name || ' ' || local_value || ' -> ' || peer_value || ' ' || breaks_replication \
             FROM steep_repl.fingerprint_diff('a', 'c') WHERE difference = 'type'"
        )
        .as_deref(),
        Some("name character varying(50) -> character varying(100) true")
    );

    run("ALTER TABLE public.fp ALTER COLUMN name SET NOT NULL");
    capture("d");
    assert_eq!(
        one::<i64>("SELECT count(*) FROM steep_repl.fingerprint_diff('c', 'd') WHERE difference = 'nullable' AND breaks_replication"),
        Some(1)
    );
    run("ALTER TABLE public.fp DROP CONSTRAINT fp_pkey");
    capture("e");
    assert_eq!(
        one::<String>("SELECT local_value || '|' || coalesce(peer_value, '') FROM steep_repl.fingerprint_diff('d', 'e') WHERE difference = 'primary_key'")
            .as_deref(),
        Some("id|")
    );
}

#[pg_test]
fn tables_on_one_side_and_missing_columns() {
    run("CREATE TABLE public.both_t (id int, extra int)");
    run("CREATE TABLE public.only_a (id int)");
    capture("a");
    run("DROP TABLE public.only_a");
    run("ALTER TABLE public.both_t DROP COLUMN extra");
    run("CREATE TABLE public.only_b (id int)");
    capture("b");
    let statuses = Spi::connect(|c| {
        let rows = c.select(
            "SELECT table_name, status FROM steep_repl.compare_fingerprints('a', 'b') \
             WHERE schema_name = 'public' ORDER BY table_name",
            None,
            &[],
        )?;
        let mut v = Vec::new();
        for r in rows {
            v.push(format!(
                "{}={}",
                r.get::<String>(1)?.unwrap(),
                r.get::<String>(2)?.unwrap()
            ));
        }
        Ok::<_, pgrx::spi::Error>(v)
    })
    .unwrap();
    assert_eq!(
        statuses,
        ["both_t=mismatch", "only_a=local_only", "only_b=peer_only"]
    );
    assert_eq!(
        one::<String>("SELECT string_agg(coalesce(column_name, '-') || ':' || difference, ',' ORDER BY table_name) \
                       FROM steep_repl.fingerprint_diff('a', 'b')")
            .as_deref(),
        Some("extra:missing_on_peer,-:table_missing_on_peer,-:table_missing_locally")
    );
}

#[pg_test]
fn column_order_matters_but_only_among_shared_columns() {
    run("CREATE TABLE public.o1 (a int, b int, c int)");
    capture("a");
    run("DROP TABLE public.o1; CREATE TABLE public.o1 (a int, c int, b int)");
    capture("b");
    assert_eq!(
        one::<String>("SELECT status FROM steep_repl.compare_fingerprints('a', 'b') WHERE table_name = 'o1'")
            .as_deref(),
        Some("mismatch")
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM steep_repl.fingerprint_diff('a', 'b') WHERE difference = 'position' AND NOT breaks_replication"),
        Some(2)
    );
}

#[pg_test]
fn export_import_round_trip_and_tamper_detection() {
    run(r#"CREATE SCHEMA "Odd ""Schema"""; CREATE TABLE "Odd ""Schema"""."tåble" ("ID" int PRIMARY KEY, "a b" numeric(10,2))"#);
    capture("src");
    run("SELECT steep_repl.register_node('copy', 'copy')");
    assert_eq!(
        one::<i32>("SELECT steep_repl.import_fingerprints('copy', steep_repl.export_fingerprints('src'))"),
        one::<i32>("SELECT count(*)::int FROM steep_repl.schema_fingerprints WHERE node_id = 'src'")
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM steep_repl.compare_fingerprints('src', 'copy') WHERE status <> 'match'"),
        Some(0)
    );
    expect_error(
        r#"PERFORM steep_repl.import_fingerprints('copy',
             jsonb_set(steep_repl.export_fingerprints('src'),
                       '{tables,0,column_definitions,0,type}', '"bigint"'))"#,
        "data_corrupted",
    );
}

#[pg_test]
fn extension_tables_are_not_fingerprinted() {
    capture("a");
    assert_eq!(
        one::<i64>("SELECT count(*) FROM steep_repl.schema_fingerprints WHERE schema_name = 'steep_repl'"),
        Some(0)
    );
}

// ---- 0.2.0: work queue and operations (inside one uncommitted transaction, so no worker ever
// picks these jobs up) ----

#[pg_test]
fn workers_are_available_when_preloaded() {
    // The launcher starts with the server; give it a moment on a fresh test cluster.
    for _ in 0..50 {
        if one::<bool>("SELECT steep_repl.bgworker_available()") == Some(true) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("bgworker_available() stayed false");
}

#[pg_test]
fn selftest_queues_a_pending_job_owned_by_the_caller() {
    let id = one::<i64>("SELECT id FROM steep_repl.start_selftest(2, 4)").unwrap();
    assert_eq!(
        one::<String>(&format!(
            "SELECT status || ' ' || operation || ' ' || created_by || ' ' || params::text \
             FROM steep_repl.work_queue WHERE id = {id}"
        ))
        .as_deref(),
        Some("pending selftest postgres {\"steps\": 4, \"seconds\": 2}")
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT status FROM steep_repl.operation_progress({id})"
        ))
        .as_deref(),
        Some("pending")
    );
    assert_eq!(
        one::<i64>("SELECT count(*) FROM steep_repl.progress WHERE operation = 'selftest'"),
        Some(1)
    );
    // A pending job is cancelled at once.
    assert_eq!(one::<bool>(&format!("SELECT steep_repl.cancel_operation({id})")), Some(true));
    assert_eq!(
        one::<String>(&format!("SELECT status FROM steep_repl.work_queue WHERE id = {id}")).as_deref(),
        Some("cancelled")
    );
    assert_eq!(one::<bool>(&format!("SELECT steep_repl.cancel_operation({id})")), Some(false));
    assert_eq!(one::<bool>("SELECT steep_repl.cancel_operation(-1)"), Some(false));
}

#[pg_test(error = "invalid steps 0: give 1 to 1000000")]
fn selftest_validates_its_arguments() {
    run("SELECT steep_repl.start_selftest(1, 0)");
}

#[pg_test(error = "invalid status 'done': use pending, running, complete, failed or cancelled")]
fn list_operations_validates_the_status() {
    run("SELECT * FROM steep_repl.list_operations('done')");
}

#[pg_test]
fn snapshot_ids_have_the_engine_form_and_differ() {
    let ok: Option<bool> = one(
        "SELECT a ~ '^snap-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$' AND a <> b
         FROM (SELECT steep_repl._new_snapshot_id() a, steep_repl._new_snapshot_id() b) x",
    );
    assert_eq!(ok, Some(true));
}

#[pg_test]
fn work_queue_constraints() {
    for sql in [
        "INSERT INTO steep_repl.work_queue (operation) VALUES ('defrag')",
        "INSERT INTO steep_repl.work_queue (operation, status) VALUES ('selftest', 'paused')",
        "INSERT INTO steep_repl.work_queue (operation, params) VALUES ('selftest', '[]')",
        "INSERT INTO steep_repl.merges (merge_id, peer, strategy) VALUES ('m', 'h', 'coin-flip')",
        "INSERT INTO steep_repl.snapshots (snapshot_id, kind, mode) VALUES ('s', 'generate', 'psychic')",
    ] {
        expect_error(sql, "check_violation");
    }
}

#[pg_test]
fn row_security_keeps_roles_to_their_own_operations() {
    run("CREATE ROLE alice; CREATE ROLE bob; \
         GRANT USAGE ON SCHEMA steep_repl TO alice, bob; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA steep_repl TO alice, bob");
    run("SET ROLE alice");
    let id = one::<i64>(
        "INSERT INTO steep_repl.work_queue (operation) VALUES ('selftest') RETURNING id",
    )
    .unwrap();
    assert_eq!(
        one::<String>(&format!("SELECT created_by::text FROM steep_repl.work_queue WHERE id = {id}"))
            .as_deref(),
        Some("alice")
    );
    // Alice may not queue a job that would run as somebody else.
    expect_error(
        "INSERT INTO steep_repl.work_queue (operation, created_by) VALUES ('selftest', 'postgres')",
        "insufficient_privilege",
    );
    run("RESET ROLE; SET ROLE bob");
    assert_eq!(one::<i64>("SELECT count(*) FROM steep_repl.work_queue"), Some(0));
    assert_eq!(one::<bool>(&format!("SELECT steep_repl.cancel_operation({id})")), Some(false));
    run(&format!("UPDATE steep_repl.work_queue SET params = '{{\"seconds\": 99}}' WHERE id = {id}"));
    run("RESET ROLE");
    assert_eq!(
        one::<String>(&format!("SELECT params::text FROM steep_repl.work_queue WHERE id = {id}")).as_deref(),
        Some("{}")
    );
    // A member with alice's privileges acts for her.
    run("GRANT alice TO bob; SET ROLE bob");
    assert_eq!(one::<bool>(&format!("SELECT steep_repl.cancel_operation({id})")), Some(true));
    run("RESET ROLE");
}
