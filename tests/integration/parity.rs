//! Parity with pg_dump | pg_restore: a database of awkward objects (tests/fixtures/awkward.sql)
//! goes through `snapshot generate` → `apply --schema create` in client and direct mode, and
//! through `pg_dump -Fd | pg_restore -j 2`; the three copies must hold the same catalog and the
//! same data. The oracle for the catalog is `pg_dump --schema-only` of each copy, normalised
//! through pg_restore's table of contents (steep_repl's own entries left out).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::snapshot::direct_round_trip;
use steep::cli::sandbox::TempCluster;

const FIXTURE: &str = include_str!("../fixtures/awkward.sql");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `pg_dump --schema-only` of `db` as text, steep_repl's entries left out through the table of
/// contents, and pg_dump's per-run `\restrict` key taken out.
fn schema_text(node: &TempCluster, db: &str, work: &Path) -> String {
    let archive = work.join(format!("{db}.schema"));
    run(Command::new(node.install.bin("pg_dump"))
        .args(["--schema-only", "-Fc", "-f"])
        .arg(&archive)
        .arg(node.connection_uri(db)));
    let toc = run(Command::new(node.install.bin("pg_restore"))
        .arg("-l")
        .arg(&archive));
    let kept: String = toc
        .lines()
        .filter(|l| !l.contains(" steep_repl "))
        .map(|l| format!("{l}\n"))
        .collect();
    let list = work.join(format!("{db}.list"));
    std::fs::write(&list, kept).unwrap();
    let text = run(Command::new(node.install.bin("pg_restore"))
        .arg("-L")
        .arg(&list)
        .args(["-f", "-"])
        .arg(&archive));
    text.lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// What the schema text does not show: whether constraints and indexes are valid, which
/// materialized views hold data, sequence positions, large objects (owner, ACL, comment, bytes).
fn catalog_facts(conn: &str) -> Vec<String> {
    let mut c = connect(conn);
    let mut facts = Vec::new();
    for q in [
        "SELECT format('constraint %s.%s valid=%s', conrelid::regclass, conname, convalidated)
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'steep_repl')",
        "SELECT format('index %s valid=%s ready=%s live=%s', indexrelid::regclass, indisvalid,
                       indisready, indislive)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'steep_repl', 'pg_toast')",
        "SELECT format('matview %s populated=%s', oid::regclass, relispopulated)
         FROM pg_class WHERE relkind = 'm'",
        "SELECT format('sequence %I.%I last=%s', schemaname, sequencename, last_value)
         FROM pg_sequences WHERE schemaname <> 'steep_repl'",
        "SELECT format('large object %s owner=%s acl=%s comment=%s md5=%s', oid,
                       lomowner::regrole, lomacl, obj_description(oid, 'pg_largeobject'),
                       md5(lo_get(oid)))
         FROM pg_largeobject_metadata",
    ] {
        facts.extend(
            c.query(q, &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0)),
        );
    }
    facts.sort();
    facts
}

/// Every table's and populated materialized view's rows, ordered, as one checksum each.
fn data_checksums(conn: &str) -> BTreeMap<String, String> {
    let mut c = connect(conn);
    c.batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET DateStyle = 'ISO'")
        .unwrap();
    let rels: Vec<String> = c
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'steep_repl')
               AND n.nspname !~ '^pg_toast'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    rels.into_iter()
        .map(|rel| {
            let row = c
                .query_one(
                    &format!(
                        "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(x::text, E'\\n'
                         ORDER BY x::text)), '-') FROM ONLY {rel} x"
                    ),
                    &[],
                )
                .unwrap();
            (rel, row.get(0))
        })
        .collect()
}

fn assert_same(what: &str, oracle: &str, copy: &str) {
    if oracle != copy {
        let diff: Vec<String> = diff_lines(oracle, copy);
        panic!(
            "{what} differs from pg_dump | pg_restore:\n{}",
            diff.join("\n")
        );
    }
}

/// The lines only one side has (enough to name what a copy lost or gained).
fn diff_lines(a: &str, b: &str) -> Vec<String> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out: Vec<String> = la
        .iter()
        .filter(|l| !lb.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        lb.iter()
            .filter(|l| !la.contains(l))
            .map(|l| format!("+ {l}")),
    );
    if out.is_empty() {
        out.push("(same lines, different order)".into());
    }
    out
}

#[test]
fn awkward_objects_come_through_as_pg_dump_and_pg_restore_bring_them() {
    let home = temp_home();
    let work = home.path().join("parity");
    std::fs::create_dir_all(&work).unwrap();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(
        &admin,
        "CREATE ROLE parity_owner; CREATE ROLE parity_reader",
    );
    for db in ["awkward", "oracle", "client_t", "direct_t"] {
        sql(&admin, &format!("CREATE DATABASE {db}"));
    }
    let src = n.connection_string("awkward");
    sql(&src, FIXTURE);
    // Direct mode runs in the source's and the target's server.
    init(home.path(), &src, &[]);
    let direct_conn = n.connection_string("direct_t");
    init(home.path(), &direct_conn, &[]);

    // The oracle: pg_dump -Fd | pg_restore -j 2.
    let dump = work.join("awkward.dump");
    run(Command::new(n.install.bin("pg_dump"))
        .args(["-Fd", "-j", "2", "-f"])
        .arg(&dump)
        .arg(n.connection_uri("awkward")));
    run(Command::new(n.install.bin("pg_restore"))
        .args(["-j", "2", "-d"])
        .arg(n.connection_uri("oracle"))
        .arg(&dump));

    // Client mode.
    let snap = work.join("client-snap");
    ok(steep(home.path())
        .args(["snapshot", "generate", "--client", "-j", "2", "-o"])
        .arg(&snap)
        .args(["-c", &src]));
    let client_conn = n.connection_string("client_t");
    ok(steep(home.path())
        .args(["snapshot", "apply", "--client", "-i"])
        .arg(&snap)
        .args(["--schema", "create", "-j", "2", "-c", &client_conn]));

    // Direct mode.
    direct_round_trip(home.path(), &src, "parity-direct", &direct_conn);

    let oracle_conn = n.connection_string("oracle");
    let oracle_schema = schema_text(&n, "oracle", &work);
    let oracle_facts = catalog_facts(&oracle_conn).join("\n");
    let oracle_data = data_checksums(&oracle_conn);
    // The oracle itself is faithful to the source, or the comparison proves nothing.
    assert_same(
        "the source",
        &schema_text(&n, "awkward", &work),
        &oracle_schema,
    );
    assert_eq!(data_checksums(&src), oracle_data);
    assert!(
        oracle_schema.contains("CREATE POLICY readers"),
        "{oracle_schema}"
    );
    for fact in [
        "matview sales_by_region populated=t",
        "large object 424243 owner=parity_owner",
    ] {
        assert!(oracle_facts.contains(fact), "{fact}: {oracle_facts}");
    }

    for (mode, db, conn) in [
        ("client mode", "client_t", &client_conn),
        ("direct mode", "direct_t", &direct_conn),
    ] {
        assert_same(
            &format!("{mode}: pg_dump --schema-only"),
            &oracle_schema,
            &schema_text(&n, db, &work),
        );
        assert_same(
            &format!("{mode}: validity, matviews, sequences, large objects"),
            &oracle_facts,
            &catalog_facts(conn).join("\n"),
        );
        assert_eq!(data_checksums(conn), oracle_data, "{mode}: table data");
    }
}
