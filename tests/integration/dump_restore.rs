//! A DBA's ordinary backup of a database where steep has run restores with `pg_restore -j`.

use std::process::Command;

use crate::common::*;

#[test]
fn pg_dump_directory_format_restores_with_pg_restore_j4() {
    let home = temp_home();
    let n = node();
    let admin = n.connection_string("postgres");
    sql(&admin, "CREATE DATABASE app");
    let conn = n.connection_string("app");
    init(home.path(), &conn, &[]);
    sql(
        &conn,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;
         SELECT steep_repl.register_node('peer', 'the peer', 'h', 5433, 10);
         SELECT steep_repl.capture_fingerprints(steep_repl.local_node_id());
         SELECT steep_repl.capture_fingerprints('peer');
         INSERT INTO steep_repl.merge_audit_log (merge_id, schema_name, table_name, pk, category)
             VALUES ('m1', 'public', 't', '{\"id\": 1}', 'conflict');",
    );
    // Rows in every table steep keeps: a snapshot record and the job that made it.
    let r = json(&ok(steep(home.path()).args([
        "snapshot", "generate", "--direct", "-o", "s1", "--json", "-c", &conn,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    let bin = pg_config().parent().unwrap().to_path_buf();
    let dir = home.path().join("dump");
    let dump = Command::new(bin.join("pg_dump"))
        .args(["-Fd", "-j", "2", "-f"])
        .arg(&dir)
        .arg(format!("--dbname={conn}"))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", stderr(&dump));
    sql(&admin, "CREATE DATABASE restored");
    let restore = Command::new(bin.join("pg_restore"))
        .args(["-j", "4", "--exit-on-error"])
        .arg(format!("--dbname={}", n.connection_string("restored")))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", stderr(&restore));
    let rconn = n.connection_string("restored");
    let rows = |conn: &str, q: &str| -> Vec<String> {
        connect(conn)
            .query(q, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    };
    for q in [
        "SELECT node_id || node_name FROM steep_repl.nodes ORDER BY 1",
        "SELECT node_id || schema_name || table_name || fingerprint FROM steep_repl.schema_fingerprints ORDER BY 1",
        "SELECT snapshot_id || status FROM steep_repl.snapshots ORDER BY 1",
        "SELECT merge_id || category FROM steep_repl.merge_audit_log ORDER BY 1",
        "SELECT steep_repl.local_node_id()",
        "SELECT id || v FROM t ORDER BY id",
    ] {
        assert_eq!(rows(&rconn, q), rows(&conn, q), "{q}");
    }
    // Jobs are runtime state: not carried.
    assert!(!rows(&conn, "SELECT id::text FROM steep_repl.work_queue").is_empty());
    assert!(rows(&rconn, "SELECT id::text FROM steep_repl.work_queue").is_empty());
}
