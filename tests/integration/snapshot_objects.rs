//! Objects a snapshot must carry as pg_dump | pg_restore does.

use crate::common::*;
use crate::snapshot::{client_snapshot, plain_node, table_hashes};

#[test]
fn a_foreign_key_to_a_partitioned_table_survives_schema_create_in_both_modes() {
    let home = temp_home();
    let (src, conn) = {
        let n = node();
        let c = n.connection_string("postgres");
        (n, c)
    };
    init(home.path(), &conn, &[]);
    sql(
        &conn,
        "CREATE TABLE p (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE p_a PARTITION OF p FOR VALUES IN ('a');
         CREATE TABLE p_b PARTITION OF p FOR VALUES IN ('b');
         CREATE TABLE c (id int PRIMARY KEY, pid int, region text, FOREIGN KEY (pid, region) REFERENCES p);
         INSERT INTO p SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 100) g;
         INSERT INTO c SELECT g, g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 100) g;",
    );
    let snap = client_snapshot(home.path(), &conn, "partfk");
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    ok(steep(home.path()).args([
        "snapshot", "apply", "--client", "-i", &snap, "--schema", "create", "-j", "2", "-c", &dconn,
    ]));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
    let fk_valid: bool = connect(&dconn)
        .query_one(
            "SELECT count(*) > 0 AND bool_and(convalidated) FROM pg_constraint
             WHERE conrelid = 'c'::regclass AND contype = 'f'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(fk_valid);
    // Direct mode, into another database of the source's server.
    sql(&conn, "CREATE DATABASE partfk_dst");
    let d2 = src.connection_string("partfk_dst");
    init(home.path(), &d2, &[]);
    let r = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--direct",
        "-o",
        "partfk-direct",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    let r = json(&ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--direct",
        "-i",
        "partfk-direct",
        "--schema",
        "create",
        "--json",
        "-c",
        &d2,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(table_hashes(&d2), table_hashes(&conn));
}
