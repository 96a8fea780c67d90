//! Snapshots against real clusters: round trips in both modes and schema modes, consistency under
//! concurrent writes, damaged snapshots, wrong schemas, failure and resume, cancel, privileges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use steep::cli::sandbox::TempCluster;
use steep::engine::manifest::Manifest;

/// A source with pgbench tables, a table of many types, quoted identifiers, a self-referencing
/// foreign key, a foreign-key cycle, a generated column and sequences.
const RICH: &str = r#"
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
    CREATE SCHEMA "Odd ""Schema""";
    CREATE TABLE "Odd ""Schema"""."Types tåble" (
        id serial PRIMARY KEY,
        n numeric(20, 5), f float8, ts timestamptz, d date, iv interval,
        j jsonb, arr integer[], t text, b bytea, u text, m mood, p posint,
        doubled numeric GENERATED ALWAYS AS (n * 2) STORED
    );
    INSERT INTO "Odd ""Schema"""."Types tåble" (n, f, ts, d, iv, j, arr, t, b, u, m, p)
    SELECT g * 1.5, g / 3.0, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour',
           date '2020-02-29' + g, make_interval(secs => g),
           jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x')),
           ARRAY[g, g + 1, NULL],
           E'tab\there\nnewline \\backslash ' || g,
           decode(md5(g::text), 'hex'),
           'ünïcødé ☃ 𝄞 ' || g,
           (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3],
           g
    FROM generate_series(1, 2000) g;
    INSERT INTO "Odd ""Schema"""."Types tåble" (n, t) VALUES (NULL, NULL), (0, '');
    CREATE TABLE employees (id integer PRIMARY KEY, manager_id integer REFERENCES employees (id),
                            name text NOT NULL);
    -- Managers have higher ids than the people they manage: loading in id order would break.
    INSERT INTO employees SELECT g, CASE WHEN g < 500 THEN g + 1 END, 'e' || g FROM generate_series(500, 1, -1) g;
    CREATE TABLE cyc_a (id integer PRIMARY KEY, b_id integer);
    CREATE TABLE cyc_b (id integer PRIMARY KEY, a_id integer NOT NULL REFERENCES cyc_a (id));
    ALTER TABLE cyc_a ADD FOREIGN KEY (b_id) REFERENCES cyc_b (id) DEFERRABLE INITIALLY DEFERRED;
    BEGIN;
    INSERT INTO cyc_a SELECT g, g FROM generate_series(1, 300) g;
    INSERT INTO cyc_b SELECT g, g FROM generate_series(1, 300) g;
    COMMIT;
    CREATE SEQUENCE standalone START 100;
    SELECT nextval('standalone') FROM generate_series(1, 7);
    CREATE SEQUENCE untouched;
"#;

/// A target for client-mode applies: no extension needed, and no durability (faster to start).
pub(crate) fn plain_node() -> TempCluster {
    node_with(steep::cli::sandbox::ClusterOptions {
        preload: false,
        durable: false,
        ..Default::default()
    })
}

fn rich_source(node: &TempCluster) -> String {
    let conn = node.connection_string("postgres");
    pgbench(node, 1);
    sql(&conn, RICH);
    conn
}

fn pgbench(node: &TempCluster, scale: u32) {
    let out = std::process::Command::new(node.install.bin("pgbench"))
        .args(["-i", "-q", "-s", &scale.to_string()])
        .arg(node.connection_uri("postgres"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// md5 of every user table's rows (sorted), by qualified name.
pub(crate) fn table_hashes(conn: &str) -> BTreeMap<String, String> {
    let mut c = connect(conn);
    c.batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .unwrap();
    let tables: Vec<String> = c
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'steep_repl')
               AND n.nspname !~ '^pg_toast'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let h: Option<String> = c
                .query_one(
                    &format!(
                        "SELECT md5(string_agg(x::text, E'\\n' ORDER BY x::text)) FROM ONLY {t} x"
                    ),
                    &[],
                )
                .unwrap()
                .get(0);
            (t, h.unwrap_or_else(|| "empty".into()))
        })
        .collect()
}

fn sequences(conn: &str) -> BTreeMap<String, (i64, bool)> {
    let mut c = connect(conn);
    let names: Vec<String> = c
        .query(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences
             WHERE schemaname NOT IN ('steep_repl')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names
        .into_iter()
        .map(|s| {
            let r = c
                .query_one(&format!("SELECT last_value, is_called FROM {s}"), &[])
                .unwrap();
            (s, (r.get(0), r.get(1)))
        })
        .collect()
}

fn constraints_valid(conn: &str) {
    let mut c = connect(conn);
    let invalid: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE NOT convalidated",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0, "constraints left NOT VALID");
    let fks: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'
             AND conrelid::regclass::text IN ('employees', 'cyc_a', 'cyc_b')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fks, 3, "foreign keys missing");
}

/// Cancel a direct-mode snapshot and check it ended as cancelled within 1.5 s.
pub(crate) fn cancel_within_a_second(c: &mut postgres::Client, id: &str) {
    let asked = Instant::now();
    let ok_: bool = c
        .query_one("SELECT steep_repl.cancel_snapshot($1)", &[&id])
        .unwrap()
        .get(0);
    assert!(ok_);
    loop {
        let st: String = c
            .query_one(
                "SELECT status FROM steep_repl.snapshots WHERE snapshot_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if st != "running" {
            assert_eq!(st, "cancelled");
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(1500), "cancel took {took:?}");
}

/// A client-mode snapshot of `conn` into the snapshot directory under `name`; its path.
pub(crate) fn client_snapshot(home: &Path, conn: &str, name: &str) -> String {
    let out = snapshot_dir_of(home).join(name);
    ok(steep(home).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-c",
        conn,
    ]));
    out.to_str().unwrap().to_string()
}

/// `steep snapshot generate --direct -o NAME` on `conn`, then `apply --direct --schema create`
/// of it on `target`, each required to complete.
pub(crate) fn direct_round_trip(home: &Path, conn: &str, name: &str, target: &str) {
    for args in [
        vec![
            "snapshot", "generate", "--direct", "-o", name, "--json", "-c", conn,
        ],
        vec![
            "snapshot", "apply", "--direct", "-i", name, "--schema", "create", "--json", "-c",
            target,
        ],
    ] {
        let r = json(&ok(steep(home).args(&args)));
        assert_eq!(r["status"], "complete", "{args:?}: {r}");
    }
}

pub(crate) fn snapshot_dir_of(home: &Path) -> PathBuf {
    let d = home.join("snaps");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn round_trip_in_client_mode_with_schema_create_and_verify() {
    let home = temp_home();
    let src = node();
    let src_conn = rich_source(&src);
    let before = table_hashes(&src_conn);
    let out = snapshot_dir_of(home.path()).join("rt");
    let g = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "--compression",
        "zstd",
        "-j",
        "3",
        "--json",
        "-c",
        &src_conn,
    ])));
    assert_eq!(g["schema"], true, "{g}");
    assert!(g["rows"].as_u64().unwrap() > 100_000);
    assert_eq!(
        table_hashes(&src_conn),
        before,
        "generate changed the source"
    );

    // 1. An empty database: the snapshot creates the schema.
    let dst = plain_node();
    let dst_conn = dst.connection_string("postgres");
    let a = json(&ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "--schema",
        "create",
        "-j",
        "3",
        "--json",
        "-c",
        &dst_conn,
    ])));
    assert_eq!(a["summary"]["tables_skipped"], 0);
    assert_eq!(table_hashes(&dst_conn), before);
    assert_eq!(sequences(&dst_conn), sequences(&src_conn));
    constraints_valid(&dst_conn);

    // 2. A database that already has the schema (foreign keys, the cycle and all): verify.
    sql(
        &dst_conn,
        "TRUNCATE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history, employees,
                  cyc_a, cyc_b, \"Odd \"\"Schema\"\"\".\"Types tåble\";
         SELECT setval('standalone', 1, false);",
    );
    let a = json(&ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "-j",
        "2",
        "--json",
        "-c",
        &dst_conn,
    ])));
    assert_eq!(a["summary"]["tables_loaded"], 8, "{a}");
    assert_eq!(table_hashes(&dst_conn), before);
    assert_eq!(sequences(&dst_conn), sequences(&src_conn));
    constraints_valid(&dst_conn);

    // The snapshot checks out offline, and says what it holds.
    let v = json(&ok(steep(home.path()).args([
        "snapshot",
        "verify",
        out.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(v["ok"], true);
    let m = Manifest::read(&out).unwrap();
    let types = m.tables.iter().find(|t| t.name == "Types tåble").unwrap();
    assert_eq!(types.schema, "Odd \"Schema\"");
    assert_eq!(types.rows, 2002);
    assert!(
        !types.columns.iter().any(|c| c.name == "doubled"),
        "generated columns are not copied"
    );
    assert!(m
        .sequences
        .iter()
        .any(|s| s.name == "standalone" && s.last_value == 106 && s.is_called));
    assert!(m
        .sequences
        .iter()
        .any(|s| s.name == "untouched" && !s.is_called));
    assert_eq!(
        m.source.server_version.split('.').next().unwrap(),
        install().major.to_string()
    );
}

/// A table without columns, or with generated columns only, holds rows all the same: COPY
/// carries them as empty lines, whole or in ctid ranges.
#[test]
fn tables_without_copied_columns_keep_their_rows() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE TABLE \"no columns\" ();
         INSERT INTO \"no columns\" SELECT FROM generate_series(1, 100000);
         CREATE TABLE only_generated (g integer GENERATED ALWAYS AS (7) STORED);
         INSERT INTO only_generated SELECT FROM generate_series(1, 3);",
    );
    let out = snapshot_dir_of(home.path()).join("nocols");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-j",
        "2",
        "--chunk-size-mb",
        "1",
        "-c",
        &conn,
    ]));
    let m = Manifest::read(&out).unwrap();
    let empty = m.tables.iter().find(|t| t.name == "no columns").unwrap();
    assert!(empty.columns.is_empty());
    assert!(
        empty.files.len() > 1,
        "not read in ranges: {:?}",
        empty.files
    );
    assert_eq!(empty.rows, 100000);

    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "--schema",
        "create",
        "-c",
        &dconn,
    ]));
    let mut c = connect(&dconn);
    let counts: (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM \"no columns\"), (SELECT count(*) FROM only_generated),
                        (SELECT sum(g) FROM only_generated)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(counts, (100000, 3, 21));
}

/// Foreign keys that lock the same tables are never added at once: the two keys of a cycle, run
/// side by side, would deadlock (each locks its own table, then the other's).
#[test]
fn parallel_post_data_adds_the_keys_of_many_cycles_without_deadlock() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "DO $$ BEGIN FOR i IN 1..40 LOOP
             EXECUTE format('CREATE TABLE p%1$s_a (id int PRIMARY KEY, b int);
                             CREATE TABLE p%1$s_b (id int PRIMARY KEY, a int);
                             INSERT INTO p%1$s_a SELECT g, g FROM generate_series(1, 50) g;
                             INSERT INTO p%1$s_b SELECT g, g FROM generate_series(1, 50) g;
                             ALTER TABLE p%1$s_a ADD CONSTRAINT p%1$s_a_fk FOREIGN KEY (b)
                                 REFERENCES p%1$s_b (id);
                             ALTER TABLE p%1$s_b ADD CONSTRAINT p%1$s_b_fk FOREIGN KEY (a)
                                 REFERENCES p%1$s_a (id);', lpad(i::text, 3, '0'));
         END LOOP; END $$;",
    );
    let out = snapshot_dir_of(home.path()).join("cycles");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &conn,
    ]));
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "--schema",
        "create",
        "-j",
        "4",
        "-c",
        &dconn,
    ]));
    let fks: i64 = connect(&dconn)
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fks, 80, "every foreign key is there and validated");
}

#[test]
fn a_snapshot_is_consistent_under_concurrent_transfers() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE TABLE acct_a (id int PRIMARY KEY, balance bigint NOT NULL, pad text);
         CREATE TABLE acct_b (id int PRIMARY KEY, balance bigint NOT NULL, pad text);
         INSERT INTO acct_a SELECT g, 1000, repeat('x', 200) FROM generate_series(1, 50000) g;
         INSERT INTO acct_b SELECT g, 1000, repeat('y', 200) FROM generate_series(1, 50000) g;",
    );
    let total: i64 = 2 * 50000 * 1000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, moved, conn) = (stop.clone(), moved.clone(), conn.clone());
        std::thread::spawn(move || {
            let mut c = connect(&conn);
            let mut k = 0i32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k = k % 50000 + 1;
                let mut tx = c.transaction().unwrap();
                tx.execute(
                    "UPDATE acct_a SET balance = balance - 7 WHERE id = $1",
                    &[&k],
                )
                .unwrap();
                tx.execute(
                    "UPDATE acct_b SET balance = balance + 7 WHERE id = $1",
                    &[&k],
                )
                .unwrap();
                tx.commit().unwrap();
                moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = snapshot_dir_of(home.path()).join("consistent");
    // One connection reads the tables one after the other: without one snapshot for both, the
    // transfers in between would show.
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-j",
        "1",
        "--compression",
        "gzip:1",
        "--no-schema",
        "-c",
        &conn,
    ]));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        moved.load(std::sync::atomic::Ordering::Relaxed) > 50,
        "the writer barely ran"
    );
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(
        &dconn,
        "CREATE TABLE acct_a (id int PRIMARY KEY, balance bigint NOT NULL, pad text);
         CREATE TABLE acct_b (id int PRIMARY KEY, balance bigint NOT NULL, pad text);",
    );
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "-c",
        &dconn,
    ]));
    let sum: i64 = connect(&dconn)
        .query_one(
            "SELECT (SELECT sum(balance) FROM acct_a) + (SELECT sum(balance) FROM acct_b)",
            &[],
        )
        .unwrap()
        .get::<_, rust_decimal_free::Num>(0)
        .0;
    assert_eq!(sum, total, "the snapshot saw half a transfer");
    let changed: i64 = connect(&dconn)
        .query_one("SELECT count(*) FROM acct_a WHERE balance <> 1000", &[])
        .unwrap()
        .get(0);
    assert!(changed > 0, "the snapshot should contain some transfers");
}

/// numeric -> i64 without a decimal crate: the test sums are integral.
mod rust_decimal_free {
    pub struct Num(pub i64);
    impl<'a> postgres::types::FromSql<'a> for Num {
        fn from_sql(
            _: &postgres::types::Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            // numeric binary: ndigits, weight, sign, dscale, digits (base 10000).
            let u16_at = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
            let (ndigits, weight, sign) = (u16_at(0) as usize, u16_at(2) as i16, u16_at(4));
            let mut v: i64 = 0;
            for i in 0..ndigits {
                v = v * 10000 + u16_at(8 + 2 * i) as i64;
            }
            let shift = weight as i32 - (ndigits as i32 - 1);
            for _ in 0..shift.max(0) {
                v *= 10000;
            }
            Ok(Num(if sign == 0x4000 { -v } else { v }))
        }
        fn accepts(t: &postgres::types::Type) -> bool {
            *t == postgres::types::Type::NUMERIC
        }
    }
}

#[test]
fn damaged_or_incomplete_snapshots_are_refused_before_any_change() {
    let home = temp_home();
    let src = node();
    let src_conn = rich_source(&src);
    let out = snapshot_dir_of(home.path()).join("damaged");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &src_conn,
    ]));
    let dst = plain_node();
    let dst_conn = dst.connection_string("postgres");
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "--schema",
        "create",
        "-c",
        &dst_conn,
    ]));
    sql(
        &dst_conn,
        "UPDATE pgbench_branches SET bbalance = 42; DELETE FROM employees WHERE id < 100;",
    );
    let before = table_hashes(&dst_conn);

    // One byte of one data file flipped.
    let m = Manifest::read(&out).unwrap();
    let victim = out.join(
        &m.tables
            .iter()
            .find(|t| t.name == "pgbench_accounts")
            .unwrap()
            .files[0]
            .name,
    );
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-c",
            &dst_conn,
        ]),
        1,
    );
    assert!(
        err.contains("checksum mismatch") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(err.contains("pgbench_accounts"), "{err}");
    assert_eq!(table_hashes(&dst_conn), before, "a table changed");
    let err = fails(
        steep(home.path()).args(["snapshot", "verify", out.to_str().unwrap()]),
        1,
    );
    assert!(
        err.contains("damaged") && err.contains("checksum mismatch"),
        "{err}"
    );

    // No manifest: refused.
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-c",
            &dst_conn,
        ]),
        1,
    );
    assert!(err.contains("has no manifest.json"), "{err}");
    assert_eq!(table_hashes(&dst_conn), before);
    // A malformed one: refused with the reason.
    std::fs::write(out.join("manifest.json"), "{\"format\": 1}").unwrap();
    let err = fails(
        steep(home.path()).args(["snapshot", "verify", out.to_str().unwrap()]),
        1,
    );
    assert!(err.contains("not a valid steep manifest"), "{err}");
}

#[test]
fn a_wrong_schema_target_is_refused_with_the_diff() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(20) NOT NULL, note text);
                INSERT INTO t SELECT g, 'n' || g, 'x' FROM generate_series(1, 100) g;
         CREATE TABLE u (id int NOT NULL, code text PRIMARY KEY);",
    );
    let out = snapshot_dir_of(home.path()).join("shape");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &conn,
    ]));
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(
        &dconn,
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(10), extra int);
         -- The same columns in another order (COPY names them, so that is fine), another key.
         CREATE TABLE u (code text NOT NULL, id int PRIMARY KEY);",
    );
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-c",
            &dconn,
        ]),
        3,
    );
    assert!(err.contains("the target's schema differs"), "{err}");
    assert!(
        err.contains(
            "type character varying(20) in the snapshot, character varying(10) on the target"
        ),
        "{err}"
    );
    assert!(
        err.contains("NOT NULL in the snapshot, NULL on the target"),
        "{err}"
    );
    assert!(err.contains("\"note\": column missing"), "{err}");
    assert!(
        err.contains("\"extra\": column only on the target"),
        "{err}"
    );
    assert!(
        err.contains("primary key (code) in the snapshot, (id) on the target"),
        "{err}"
    );
    let n: i64 = connect(&dconn)
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn a_failure_mid_apply_leaves_tables_whole_and_resume_finishes() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    let ddl = "CREATE TABLE t1 (id int PRIMARY KEY, v int); CREATE TABLE t2 (id int PRIMARY KEY, v int);
               CREATE TABLE t3 (id int PRIMARY KEY, v int); CREATE TABLE t4 (id int PRIMARY KEY, v int);
               CREATE TABLE strict_one (id int PRIMARY KEY, v int);";
    sql(&conn, ddl);
    sql(
        &conn,
        "INSERT INTO t1 SELECT g, g FROM generate_series(1, 20000) g;
                INSERT INTO t2 SELECT g, g FROM generate_series(1, 20000) g;
                INSERT INTO t3 SELECT g, g FROM generate_series(1, 20000) g;
                INSERT INTO t4 SELECT g, g FROM generate_series(1, 20000) g;
                INSERT INTO strict_one SELECT g, g FROM generate_series(1, 20000) g;",
    );
    let out = snapshot_dir_of(home.path()).join("resume");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &conn,
    ]));
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(&dconn, ddl);
    // A CHECK constraint the data violates (late in the table): the load of that table fails.
    sql(
        &dconn,
        "ALTER TABLE strict_one ADD CONSTRAINT small CHECK (v < 19000)",
    );
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-j",
            "2",
            "-c",
            &dconn,
        ]),
        1,
    );
    assert!(err.contains("strict_one") && err.contains("small"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    let mut c = connect(&dconn);
    for t in ["t1", "t2", "t3", "t4", "strict_one"] {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .unwrap()
            .get(0);
        assert!(n == 0 || n == 20000, "{t} is half loaded: {n} rows");
    }
    let strict: i64 = c
        .query_one("SELECT count(*) FROM strict_one", &[])
        .unwrap()
        .get(0);
    assert_eq!(strict, 0);
    c.batch_execute("ALTER TABLE strict_one DROP CONSTRAINT small")
        .unwrap();
    let r = json(&ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "--resume",
        "--json",
        "-c",
        &dconn,
    ])));
    let loaded_before = r["summary"]["tables_skipped"].as_u64().unwrap();
    assert_eq!(
        r["summary"]["tables_loaded"].as_u64().unwrap() + loaded_before,
        5
    );
    assert!(r["summary"]["tables_loaded"].as_u64().unwrap() >= 1);
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
}

/// Direct mode: queue in SQL, run in a worker, files on the server.
fn direct_node() -> (tempfile::TempDir, TempCluster, String) {
    let home = temp_home();
    let n = node();
    let conn = n.connection_string("postgres");
    init(home.path(), &conn, &[]);
    (home, n, conn)
}

#[test]
fn direct_and_client_modes_write_the_same_data_and_apply_across_modes() {
    let (home, src, conn) = direct_node();
    rich_source(&src);
    let mut listener = connect(&conn);
    listener
        .batch_execute("LISTEN steep_repl_progress")
        .unwrap();
    let direct = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--direct",
        "-o",
        "same-direct",
        "--compression",
        "lz4",
        "-j",
        "2",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(direct["status"], "complete", "{direct}");
    let ddir = src.snapshot_dir().join("same-direct");
    let cdir = snapshot_dir_of(home.path()).join("same-client");
    // Direct mode signals only which job moved, and when. The job's last signal may come after
    // the CLI returns: read until a second passes without one.
    let mut direct_signals = Vec::new();
    for _ in 0..10 {
        let got = signals(&mut listener);
        if got.is_empty() && !direct_signals.is_empty() {
            break;
        }
        direct_signals.extend(got);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(!direct_signals.is_empty());
    for p in &direct_signals {
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "sent_at_ms"], "{p}");
    }
    let client_run = steep(home.path())
        .args([
            "snapshot",
            "generate",
            "--client",
            "-o",
            cdir.to_str().unwrap(),
            "--compression",
            "lz4",
            "-j",
            "2",
            "-c",
            &conn,
        ])
        .output()
        .unwrap();
    let err = stderr(&client_run);
    assert!(client_run.status.success(), "{err}");
    // A client-mode run keeps its snapshots row, progress included, where the extension is.
    assert!(!err.contains("not recording"), "{err}");
    let (md, mc) = (
        Manifest::read(&ddir).unwrap(),
        Manifest::read(&cdir).unwrap(),
    );
    assert_eq!(md.mode, "direct");
    assert_eq!(mc.mode, "client");
    let row = connect(&conn)
        .query_one(
            "SELECT kind, mode, status, rows_processed, overall_percent
             FROM steep_repl.snapshots WHERE snapshot_id = $1",
            &[&mc.snapshot_id],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, i64>(3),
            row.get::<_, f64>(4)
        ),
        (
            "generate".into(),
            "client".into(),
            "complete".into(),
            mc.rows() as i64,
            100.0
        )
    );
    // Equal apart from ids, times and mode (and the WAL position they were taken at).
    let strip = |m: &Manifest| {
        let mut m = m.clone();
        m.snapshot_id.clear();
        m.mode.clear();
        m.created_at.clear();
        m.lsn.clear();
        m.schema = None;
        m
    };
    assert_eq!(strip(&md), strip(&mc));
    // One way of recording a run: the same snapshots row in both modes (apart from ids, times,
    // mode, path and WAL position); client mode has no job, so it sends no signals.
    assert_eq!(
        snapshot_row(&conn, &md.snapshot_id),
        snapshot_row(&conn, &mc.snapshot_id)
    );
    assert!(signals(&mut listener).is_empty());
    // The same data: identical file contents after decompression.
    for (td, tc) in md.tables.iter().zip(&mc.tables) {
        for (fd, fc) in td.files.iter().zip(&tc.files) {
            let read = |dir: &Path, name: &str| {
                let mut v = Vec::new();
                use std::io::Read;
                md.compression
                    .decoder(std::fs::File::open(dir.join(name)).unwrap())
                    .unwrap()
                    .read_to_end(&mut v)
                    .unwrap();
                v
            };
            assert!(
                read(&ddir, &fd.name) == read(&cdir, &fc.name),
                "{} differs",
                td.qualified()
            );
        }
    }
    // A direct-mode snapshot applies in client mode, and a client-mode one in direct mode.
    let dst = node();
    let dconn = dst.connection_string("postgres");
    init(home.path(), &dconn, &[]);
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        ddir.to_str().unwrap(),
        "--schema",
        "create",
        "-c",
        &dconn,
    ]));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
    let dst2 = node();
    let d2 = dst2.connection_string("postgres");
    init(home.path(), &d2, &[]);
    // Client-mode files are private to the OS user that wrote them: hand them to the server's.
    let st = std::process::Command::new("chown")
        .args([
            "-R",
            &std::env::var("STEEP_RUN_AS").unwrap_or("postgres".into()),
        ])
        .arg(&cdir)
        .status()
        .unwrap();
    assert!(st.success());
    let a = json(&ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--direct",
        "-i",
        cdir.to_str().unwrap(),
        "--schema",
        "create",
        "--json",
        "-c",
        &d2,
    ])));
    assert_eq!(a["status"], "complete", "{a}");
    assert_eq!(table_hashes(&d2), table_hashes(&conn));
    let list = json(&ok(
        steep(home.path()).args(["snapshot", "list", "--json", "-c", &d2])
    ));
    assert_eq!(list[0]["kind"], "apply");
    assert_eq!(list[0]["mode"], "direct");
    assert_eq!(list[0]["status"], "complete");
    let client_apply = json(&ok(
        steep(home.path()).args(["snapshot", "list", "--json", "-c", &dconn])
    ));
    assert_eq!(client_apply[0]["mode"], "client");
    assert_eq!(
        snapshot_row(&d2, list[0]["snapshot_id"].as_str().unwrap()),
        snapshot_row(&dconn, client_apply[0]["snapshot_id"].as_str().unwrap())
    );
}

/// A snapshots row without what differs between two runs of the same work (ids, times, mode,
/// path, node, WAL position — which must be there).
fn snapshot_row(conn: &str, id: &str) -> serde_json::Value {
    let (row, lsn): (String, Option<String>) = {
        let r = connect(conn)
            .query_one(
                "SELECT (to_jsonb(s) - ARRAY['snapshot_id', 'mode', 'created_at', 'started_at',
                                            'completed_at', 'storage_path', 'lsn', 'node_id'])::text,
                        lsn::text
                 FROM steep_repl.snapshots s WHERE snapshot_id = $1",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(lsn.is_some(), "{row}");
    json(&row)
}

/// The NOTIFY payloads received so far.
fn signals(c: &mut postgres::Client) -> Vec<serde_json::Value> {
    use postgres::fallible_iterator::FallibleIterator;
    c.simple_query("SELECT 1").unwrap();
    c.notifications()
        .iter()
        .map(|n| Ok(json(n.payload())))
        .collect()
        .unwrap()
}

/// Wait until the snapshot's phase is `want`.
fn phase_reaches(c: &mut postgres::Client, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let phase: Option<String> = c
            .query_one("SELECT phase FROM steep_repl.snapshot_progress($1)", &[&id])
            .unwrap()
            .get(0);
        if phase.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "never reached {want}: {phase:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cancel_during_pg_dump_stops_it_within_a_second_and_removes_the_output() {
    let (_home, src, conn) = direct_node();
    sql(
        &conn,
        "CREATE TABLE p (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE p_a PARTITION OF p FOR VALUES IN ('a');
         INSERT INTO p SELECT g, 'a' FROM generate_series(1, 1000) g;",
    );
    // pg_dump locks every table it dumps, the partitioned parent included, which the data copy
    // (of its partitions) never touches: held here, it keeps pg_dump waiting.
    let mut blocker = connect(&conn);
    blocker
        .batch_execute("BEGIN; LOCK TABLE ONLY p IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut c = connect(&conn);
    let id: String = c
        .query_one(
            "SELECT snapshot_id FROM steep_repl.start_snapshot('dumping')",
            &[],
        )
        .unwrap()
        .get(0);
    phase_reaches(&mut c, &id, "schema");
    std::thread::sleep(Duration::from_millis(500));
    let waiting: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(waiting, 1, "pg_dump is not waiting on the lock");
    cancel_within_a_second(&mut c, &id);
    std::thread::sleep(Duration::from_millis(300));
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "pg_dump's session is still there");
    let dir = src.snapshot_dir().join("dumping");
    assert!(!dir.exists(), "partial snapshot left at {}", dir.display());
    blocker.batch_execute("ROLLBACK").unwrap();
}

/// Wait until the snapshot has copied some bytes.
fn copying(c: &mut postgres::Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes: i64 = c
            .query_one(
                "SELECT coalesce(sum(bytes_processed), 0)::int8 FROM steep_repl.snapshot_progress($1)",
                &[&id],
            )
            .unwrap()
            .get(0);
        if bytes > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never started copying"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_generate_leaves_no_partial_output_behind() {
    let (home, src, conn) = direct_node();
    pgbench(&src, 10);
    // Direct mode: kill -9 of the job's worker; PostgreSQL restarts, the sweep fails the job
    // and removes what it wrote.
    let mut c = connect(&conn);
    let id: String = c
        .query_one(
            "SELECT snapshot_id FROM steep_repl.start_snapshot('killed', 'gzip:9', 1)",
            &[],
        )
        .unwrap()
        .get(0);
    copying(&mut c, &id);
    let dir = src.snapshot_dir().join("killed");
    assert!(dir.join("data").is_dir());
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM steep_repl.work_queue WHERE snapshot_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        if let Ok(mut c) = postgres::Client::connect(&conn, postgres::NoTls) {
            if let Ok(r) = c.query_one(
                "SELECT status, error_message FROM steep_repl.snapshots WHERE snapshot_id = $1",
                &[&id],
            ) {
                if r.get::<_, String>(0) == "failed" {
                    break r.get::<_, String>(1);
                }
            }
        }
        assert!(Instant::now() < deadline, "the job was never failed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        err.contains("partial output") && err.contains("was removed"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0);
    // The same path takes a new snapshot.
    let r = json(&ok(steep(home.path()).args([
        "snapshot", "generate", "--direct", "-o", "killed", "--json", "-c", &conn,
    ])));
    assert_eq!(r["status"], "complete", "{r}");

    // Client mode: kill -9 of steep itself; the next run names the leftovers and how to remove
    // them.
    let out = snapshot_dir_of(home.path()).join("killed-client");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("steep"))
        .env("STEEP_HOME", home.path())
        .env("STEEP_PG_CONFIG", pg_config())
        .args([
            "snapshot",
            "generate",
            "--client",
            "--compression",
            "gzip:9",
            "-j",
            "1",
            "-o",
        ])
        .arg(&out)
        .args(["-c", &conn])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out
        .join("data")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        assert!(Instant::now() < deadline, "client generate never wrote");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "generate",
            "--client",
            "-o",
            out.to_str().unwrap(),
            "-c",
            &conn,
        ]),
        1,
    );
    assert!(
        err.contains("partial output of snapshot") && err.contains("rm -r --"),
        "{err}"
    );
}

#[test]
fn cancel_mid_generate_removes_partial_files_and_leaves_the_source_alone() {
    let (_home, src, conn) = direct_node();
    pgbench(&src, 10);
    let before = table_hashes(&conn);
    let mut c = connect(&conn);
    let id: String = c
        .query_one(
            "SELECT snapshot_id FROM steep_repl.start_snapshot('cancelled', 'gzip:9', 1)",
            &[],
        )
        .unwrap()
        .get(0);
    let dir = src.snapshot_dir().join("cancelled");
    copying(&mut c, &id);
    assert!(
        dir.join("data").is_dir(),
        "no partial files to clean up yet"
    );
    let t0 = Instant::now();
    let ok_: bool = c
        .query_one("SELECT steep_repl.cancel_snapshot($1)", &[&id])
        .unwrap()
        .get(0);
    assert!(ok_);
    let status: String = c
        .query_one(
            "SELECT status FROM steep_repl.wait_snapshot($1, 30)",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "cancelled");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "cancel took {:?}",
        t0.elapsed()
    );
    assert!(!dir.exists(), "partial snapshot left at {}", dir.display());
    assert_eq!(table_hashes(&conn), before);
}

#[test]
fn paths_are_confined_and_non_superusers_snapshot_what_they_may_read() {
    let (home, src, conn) = direct_node();
    sql(
        &conn,
        "CREATE TABLE public.mine (id int PRIMARY KEY, v text);
                INSERT INTO mine SELECT g, 'v' || g FROM generate_series(1, 1000) g;
                CREATE ROLE snapper LOGIN;
                GRANT SELECT ON ALL TABLES IN SCHEMA public TO snapper;",
    );
    init(home.path(), &conn, &["--grant", "snapper"]);
    let user = format!(
        "host=127.0.0.1 port={} user=snapper dbname=postgres",
        src.port()
    );
    // Client mode needs only SELECT on the tables.
    let out = snapshot_dir_of(home.path()).join("by-snapper");
    let g = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "--json",
        "-c",
        &user,
    ])));
    assert_eq!(g["rows"], 1000);
    // Direct mode: inside steep_repl.snapshot_dir only.
    let mut c = connect(&user);
    for (path, want) in [
        ("../../etc/x", "must not contain \"..\""),
        ("/tmp/outside", "outside steep_repl.snapshot_dir"),
    ] {
        let e = c
            .query_one("SELECT steep_repl.start_snapshot($1)", &[&path])
            .unwrap_err();
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(msg.contains(want), "{path}: {msg}");
    }
    let e = c
        .query_one("SELECT steep_repl.start_snapshot('x', 'rar')", &[])
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("unknown compression"),
        "{e}"
    );
    let d = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--direct",
        "-o",
        "snapper-direct",
        "--json",
        "-c",
        &user,
    ])));
    assert_eq!(d["status"], "complete", "{d}");
    let m = Manifest::read(&src.snapshot_dir().join("snapper-direct")).unwrap();
    assert_eq!(m.rows(), 1000);
    // A superuser may write anywhere the server can.
    let free = home.path().join("superuser-direct");
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let su = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--direct",
        "-o",
        free.to_str().unwrap(),
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(su["status"], "complete", "{su}");
    // Direct apply refuses a directory without a manifest at once.
    let e = connect(&conn)
        .query_one(
            "SELECT steep_repl.start_apply($1)",
            &[&home.path().to_str().unwrap()],
        )
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("has no manifest.json"),
        "{e}"
    );
}

#[test]
fn a_table_written_in_many_pieces_loads_in_one_transaction() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    let ddl = "CREATE TABLE big (id int PRIMARY KEY, v int, pad text); CREATE TABLE small (id int PRIMARY KEY);";
    sql(&conn, ddl);
    sql(
        &conn,
        "INSERT INTO big SELECT g, g, repeat('p', 200) FROM generate_series(1, 60000) g;
                INSERT INTO small SELECT generate_series(1, 10);",
    );
    let out = snapshot_dir_of(home.path()).join("pieces");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-j",
        "3",
        "--chunk-size-mb",
        "1",
        "-c",
        &conn,
    ]));
    let m = Manifest::read(&out).unwrap();
    let big = m.tables.iter().find(|t| t.name == "big").unwrap();
    assert!(
        big.files.len() >= 5,
        "big was not split: {} files",
        big.files.len()
    );
    assert_eq!(big.rows, 60000);

    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(&dconn, ddl);
    // Rows late in the table break a CHECK on the target: the last pieces fail, the whole table
    // is rolled back.
    sql(
        &dconn,
        "ALTER TABLE big ADD CONSTRAINT early CHECK (v < 55000)",
    );
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-j",
            "3",
            "-c",
            &dconn,
        ]),
        1,
    );
    assert!(err.contains("early"), "{err}");
    let n: i64 = connect(&dconn)
        .query_one("SELECT count(*) FROM big", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "big is half loaded after a failed piece");
    let small: i64 = connect(&dconn)
        .query_one("SELECT count(*) FROM small", &[])
        .unwrap()
        .get(0);
    assert!(small == 0 || small == 10, "small is half loaded: {small}");
    sql(&dconn, "ALTER TABLE big DROP CONSTRAINT early");
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "-j",
        "3",
        "--resume",
        "-c",
        &dconn,
    ]));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
}

/// Outcomes come from the kind of error, never from its text: a failure naming a table called
/// `cancelled_orders` is a failure, and a direct-mode schema mismatch is a blocking finding
/// (exit 3) because the job says so in its result.
#[test]
fn outcomes_follow_the_kind_of_error_not_its_wording() {
    let (home, src, conn) = direct_node();
    sql(
        &conn,
        "CREATE TABLE cancelled_orders (id int PRIMARY KEY, v int);
         INSERT INTO cancelled_orders SELECT g, g FROM generate_series(1, 10) g;",
    );
    let out = snapshot_dir_of(home.path()).join("kinds");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &conn,
    ]));
    let dst = node();
    let dconn = dst.connection_string("postgres");
    init(home.path(), &dconn, &[]);
    sql(
        &dconn,
        "CREATE TABLE cancelled_orders (id int PRIMARY KEY, v int CHECK (v < 5))",
    );
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-c",
            &dconn,
        ]),
        1,
    );
    assert!(err.contains("cancelled_orders"), "{err}");
    let list = json(&ok(
        steep(home.path()).args(["snapshot", "list", "--json", "-c", &dconn])
    ));
    assert_eq!(list[0]["status"], "failed", "{list}");

    // Direct mode: a target whose table has another shape.
    let id: String = connect(&conn)
        .query_one(
            "SELECT snapshot_id FROM steep_repl.start_snapshot('kinds-direct')",
            &[],
        )
        .unwrap()
        .get(0);
    let st: String = connect(&conn)
        .query_one(
            "SELECT status FROM steep_repl.wait_snapshot($1, 60)",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(st, "complete");
    sql(&conn, "ALTER TABLE cancelled_orders ADD COLUMN extra int");
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--direct",
            "-i",
            "kinds-direct",
            "-c",
            &conn,
        ]),
        3,
    );
    assert!(err.contains("differs"), "{err}");
    let kind: Option<String> = connect(&conn)
        .query_one(
            "SELECT result ->> 'error_kind' FROM steep_repl.work_queue ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kind.as_deref(), Some("schema_mismatch"));
    let _ = src;
}

/// Bad arguments are usage errors (exit 2), found before anything connects.
#[test]
fn bad_snapshot_arguments_are_usage_errors() {
    let home = temp_home();
    for args in [
        vec!["-j", "0"],
        vec!["-j", "10000"],
        vec!["--compression", "brotli"],
        vec!["--compression", "zstd:99"],
        vec!["--compression", "zstd:3", "--level", "5"],
        vec!["--compression", "gzip", "--level", "99"],
    ] {
        let mut all = vec!["snapshot", "generate", "-o", "x", "-c", "host=/nonexistent"];
        all.extend(args.iter().copied());
        let err = fails(steep(home.path()).args(&all), 2);
        assert!(
            !err.contains("nonexistent"),
            "{args:?} tried to connect: {err}"
        );
    }
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "-i",
            "x",
            "-j",
            "65",
            "-c",
            "host=/nonexistent",
        ]),
        2,
    );
    assert!(err.contains("1 to 64"), "{err}");
    // One level, given twice alike, is not a contradiction.
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "generate",
            "-o",
            "x",
            "--compression",
            "zstd:5",
            "--level",
            "5",
            "-c",
            "host=/nonexistent",
        ]),
        1,
    );
    assert!(!err.contains("contradict"), "{err}");
}

/// A file whose stored bytes and checksum were made to agree but which expands far beyond what
/// the manifest says is stopped at the manifest's size; counts that wrap are refused.
#[test]
fn manifest_numbers_are_trusted_only_as_far_as_they_check() {
    use std::io::Write;
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    );
    let out = snapshot_dir_of(home.path()).join("bomb");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "--compression",
        "gzip",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &conn,
    ]));
    let manifest_path = out.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let mut m: serde_json::Value = json(&original);
    let file = m["tables"][0]["files"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // 30 MB of rows, compressed to a few dozen KB.
    let c = steep::engine::compress::Compression::parse("gzip:9", None).unwrap();
    let mut enc = c
        .encoder(std::fs::File::create(out.join(&file)).unwrap())
        .unwrap();
    let line = format!("1\t{}\n", "x".repeat(1023));
    for _ in 0..30_000 {
        enc.write_all(line.as_bytes()).unwrap();
    }
    enc.finish().unwrap();
    let bytes = std::fs::read(out.join(&file)).unwrap();
    let sha = steep::engine::checksum::sha256_of(&bytes[..]).unwrap().0;
    let stored = bytes.len() as u64;
    m["tables"][0]["files"][0]["stored_bytes"] = serde_json::json!(stored);
    m["tables"][0]["stored_bytes"] = serde_json::json!(stored);
    m["tables"][0]["files"][0]["sha256"] = serde_json::json!(sha);
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(&dconn, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let started = std::time::Instant::now();
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "--no-verify",
            "-i",
            out.to_str().unwrap(),
            "-c",
            &dconn,
        ]),
        1,
    );
    assert!(err.contains("decompresses to more than"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let o = steep(home.path())
        .args(["snapshot", "verify", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("decompresses to more than"),
        "{}",
        stdout(&o)
    );

    // Row counts that wrap: 2^64 - 1 in one file and 1 in another add up to 0.
    let mut m: serde_json::Value = json(&original);
    let mut second = m["tables"][0]["files"][0].clone();
    second["name"] = serde_json::json!(format!("{file}.2"));
    second["rows"] = serde_json::json!(u64::MAX);
    m["tables"][0]["files"][0]["rows"] = serde_json::json!(1);
    m["tables"][0]["files"].as_array_mut().unwrap().push(second);
    m["tables"][0]["rows"] = serde_json::json!(0);
    let raw = m["tables"][0]["raw_bytes"].as_u64().unwrap();
    let stored0 = m["tables"][0]["stored_bytes"].as_u64().unwrap();
    m["tables"][0]["raw_bytes"] = serde_json::json!(raw * 2);
    m["tables"][0]["stored_bytes"] = serde_json::json!(stored0 * 2);
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "apply",
            "--client",
            "-i",
            out.to_str().unwrap(),
            "-c",
            &dconn,
        ]),
        1,
    );
    assert!(err.contains("out of range"), "{err}");
}
