//! Applying a snapshot again and finishing an interrupted apply: the target's old rows and its
//! foreign keys, resume markers instead of row counts, resuming in the mode that was started.

use crate::common::*;
use crate::snapshot::{client_snapshot as generate, plain_node, table_hashes};

fn apply(home: &std::path::Path, snap: &str, conn: &str, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = steep(home);
    cmd.args([
        "snapshot", "apply", "--client", "-i", snap, "-c", conn, "--json",
    ])
    .args(extra);
    cmd
}

fn count(conn: &str, table: &str) -> i64 {
    connect(conn)
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn applying_again_into_a_target_with_foreign_keys_replaces_its_rows() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE TABLE parent (id int PRIMARY KEY, v text);
         CREATE TABLE child (id int PRIMARY KEY, pid int NOT NULL REFERENCES parent, v text);
         CREATE TABLE grandchild (id int PRIMARY KEY, cid int REFERENCES child);
         INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 500) g;
         INSERT INTO child SELECT g, 1 + g % 500, 'c' || g FROM generate_series(1, 2000) g;
         INSERT INTO grandchild SELECT g, g FROM generate_series(1, 2000) g;",
    );
    let snap = generate(home.path(), &conn, "fk");
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    ok(&mut apply(
        home.path(),
        &snap,
        &dconn,
        &["--schema", "create"],
    ));
    // The target drifts: rows the snapshot does not have, referencing each other.
    sql(
        &dconn,
        "INSERT INTO parent VALUES (9001, 'new'); INSERT INTO child VALUES (9001, 9001, 'new');
         INSERT INTO grandchild VALUES (9001, 9001); UPDATE parent SET v = 'changed' WHERE id = 1;",
    );
    for extra in [&[][..], &["--schema", "skip"], &["--resume"], &["-j", "1"]] {
        let r = json(&ok(&mut apply(home.path(), &snap, &dconn, extra)));
        assert_eq!(r["summary"]["tables_loaded"], 3, "{extra:?}: {r}");
        assert_eq!(table_hashes(&dconn), table_hashes(&conn), "{extra:?}");
    }
}

#[test]
fn resume_trusts_markers_committed_with_the_rows_not_row_counts() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    let ddl =
        "CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY, v int);";
    sql(&conn, ddl);
    sql(
        &conn,
        "INSERT INTO a SELECT g, g FROM generate_series(1, 1000) g;
         INSERT INTO b SELECT g, g FROM generate_series(1, 1000) g;",
    );
    let snap = generate(home.path(), &conn, "markers");
    // A target with steep_repl (where markers live), holding stale rows: same counts, other data.
    let dst = node();
    let dconn = dst.connection_string("postgres");
    init(home.path(), &dconn, &[]);
    sql(&dconn, ddl);
    sql(
        &dconn,
        "INSERT INTO a SELECT g, -g FROM generate_series(1, 1000) g;
         INSERT INTO b SELECT g, -g FROM generate_series(1, 1000) g;
         ALTER TABLE b ADD CONSTRAINT stale_only CHECK (v < 0);",
    );
    let err = fails(&mut apply(home.path(), &snap, &dconn, &["-j", "1"]), 1);
    assert!(err.contains("stale_only"), "{err}");
    assert_eq!(count(&dconn, "a"), 1000);
    sql(&dconn, "ALTER TABLE b DROP CONSTRAINT stale_only");
    let r = json(&ok(&mut apply(home.path(), &snap, &dconn, &["--resume"])));
    assert_eq!(r["summary"]["tables_skipped"], 1, "{r}");
    assert_eq!(r["summary"]["tables_loaded"], 1, "{r}");
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
    // The marker is this role's, in the target, committed with the rows.
    let marked: Vec<String> = connect(&dconn)
        .query(
            "SELECT table_name FROM steep_repl.apply_markers_of($1)",
            &[
                &json(&std::fs::read_to_string(format!("{snap}/manifest.json")).unwrap())
                    ["snapshot_id"]
                    .as_str()
                    .unwrap(),
            ],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(marked, ["a", "b"]);

    // Without steep_repl on the target, resume reloads every table (each load is whole or
    // nothing): still the right data.
    let plain = plain_node();
    let pconn = plain.connection_string("postgres");
    sql(&pconn, ddl);
    sql(
        &pconn,
        "INSERT INTO a SELECT g, -g FROM generate_series(1, 1000) g;
         INSERT INTO b SELECT g, -g FROM generate_series(1, 1000) g;",
    );
    let r = json(&ok(&mut apply(home.path(), &snap, &pconn, &["--resume"])));
    assert_eq!(r["summary"]["tables_loaded"], 2, "{r}");
    assert_eq!(table_hashes(&pconn), table_hashes(&conn));
}

#[test]
fn an_interrupted_schema_create_apply_is_finished_by_resuming_it_in_that_mode() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE TABLE accounts (id int PRIMARY KEY, v int);
         CREATE TABLE strict_one (id int PRIMARY KEY, v int);
         CREATE INDEX strict_one_v ON strict_one (v);
         INSERT INTO accounts SELECT g, g FROM generate_series(1, 5000) g;
         INSERT INTO strict_one SELECT g, g FROM generate_series(1, 5000) g;",
    );
    let snap = generate(home.path(), &conn, "create");
    let dst = node();
    let dconn = dst.connection_string("postgres");
    init(home.path(), &dconn, &[]);
    // The load of strict_one fails after the schema was created: an event trigger gives the new
    // table a CHECK the data violates.
    sql(
        &dconn,
        "CREATE FUNCTION add_check() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
                      WHERE object_identity = 'public.strict_one') THEN
             ALTER TABLE public.strict_one ADD CONSTRAINT small CHECK (v < 4000);
           END IF;
         END $$;",
    );
    sql(
        &dconn,
        "CREATE EVENT TRIGGER add_check ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
         EXECUTE FUNCTION add_check();",
    );
    let err = fails(
        &mut apply(
            home.path(),
            &snap,
            &dconn,
            &["--schema", "create", "-j", "1"],
        ),
        1,
    );
    assert!(err.contains("small"), "{err}");
    sql(
        &dconn,
        "DROP EVENT TRIGGER add_check; ALTER TABLE strict_one DROP CONSTRAINT small;",
    );
    // Resuming in another schema mode would leave post-data (keys, indexes) undone: refused.
    for extra in [&["--resume"][..], &["--resume", "--schema", "skip"]] {
        let err = fails(&mut apply(home.path(), &snap, &dconn, extra), 1);
        assert!(err.contains("--schema create --resume"), "{extra:?}: {err}");
    }
    let r = json(&ok(&mut apply(
        home.path(),
        &snap,
        &dconn,
        &["--schema", "create", "--resume"],
    )));
    assert_eq!(r["summary"]["tables_skipped"], 1, "{r}");
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
    let indexes: i64 = connect(&dconn)
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid IN ('accounts'::regclass, 'strict_one'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 3, "both primary keys and strict_one_v");
}
