//! `steep schema capture|compare|diff` between two real servers.

use crate::common::*;

/// Two initialized servers; returns (home, a, b, conn_a, conn_b).
fn pair() -> (
    tempfile::TempDir,
    steep::cli::sandbox::TempCluster,
    steep::cli::sandbox::TempCluster,
    String,
    String,
) {
    let home = temp_home();
    let a = node();
    let b = node();
    let (ca, cb) = (a.connection_uri("postgres"), b.connection_uri("postgres"));
    init(home.path(), &ca, &[]);
    init(home.path(), &cb, &[]);
    (home, a, b, ca, cb)
}

const SCHEMA: &str = r#"
    CREATE SCHEMA "Odd ""Sales""";
    CREATE TABLE "Odd ""Sales"""."Tåble x" ("ID" bigint PRIMARY KEY, "name col" varchar(50), note text DEFAULT 'n');
    CREATE TABLE public.plain (id int PRIMARY KEY, v numeric(10,2) NOT NULL);
"#;

fn compare(home: &std::path::Path, ca: &str, cb: &str) -> (i32, serde_json::Value, String) {
    let o = steep(home)
        .args(["schema", "compare", "--json", "-c", ca, "--peer", cb])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code().unwrap(), json(&stdout(&o)), err)
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"))
}

#[test]
fn identical_schemas_match_with_exit_0() {
    let (home, _a, _b, ca, cb) = pair();
    sql(&ca, SCHEMA);
    sql(&cb, SCHEMA);
    let (code, report, _) = compare(home.path(), &ca, &cb);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["blocking"], 0);
    assert_eq!(report["tables"].as_array().unwrap().len(), 2);
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(t["status"], "match", "{t}");
    }
    // Capture stores the fingerprints under the local node.
    let cap = json(&ok(
        steep(home.path()).args(["schema", "capture", "--json", "-c", &ca])
    ));
    assert_eq!(cap["tables"], 2);
}

#[test]
fn typmod_difference_breaks_replication_with_exit_3() {
    let (home, _a, _b, ca, cb) = pair();
    sql(&ca, SCHEMA);
    sql(&cb, &SCHEMA.replace("varchar(50)", "varchar(100)"));
    let (code, report, err) = compare(home.path(), &ca, &cb);
    assert_eq!(code, 3, "{report}");
    let t = table(&report, "Tåble x");
    assert_eq!(t["status"], "mismatch");
    assert_eq!(t["breaks_replication"], true);
    let d = &t["differences"][0];
    assert_eq!(d["column"], "name col");
    assert_eq!(d["difference"], "type");
    assert_eq!(d["local"], "character varying(50)");
    assert_eq!(d["peer"], "character varying(100)");
    assert_eq!(table(&report, "plain")["status"], "match");
    assert!(err.contains("break replication"), "{err}");

    // diff on the one table, addressed with SQL quoting.
    let o = steep(home.path())
        .args([
            "schema",
            "diff",
            "--table",
            r#""Odd ""Sales"""."Tåble x""#,
            "-c",
            &ca,
            "--peer",
            &cb,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("name col") && out.contains("character varying(100)") && out.contains("yes"),
        "{out}"
    );
}

#[test]
fn a_default_only_difference_is_reported_but_not_blocking() {
    let (home, _a, _b, ca, cb) = pair();
    sql(&ca, SCHEMA);
    sql(&cb, &SCHEMA.replace("DEFAULT 'n'", "DEFAULT 'other'"));
    let (code, report, _) = compare(home.path(), &ca, &cb);
    assert_eq!(code, 0, "{report}");
    let t = table(&report, "Tåble x");
    assert_eq!(t["status"], "match");
    assert_eq!(t["breaks_replication"], false);
    assert_eq!(t["differences"][0]["difference"], "default");
    assert_eq!(t["differences"][0]["breaks_replication"], false);
    let d = json(&ok(steep(home.path()).args([
        "schema",
        "diff",
        "--json",
        "--table",
        r#""Odd ""Sales"""."Tåble x""#,
        "-c",
        &ca,
        "--peer",
        &cb,
    ])));
    assert_eq!(d["breaks_replication"], false);
    assert_eq!(d["differences"][0]["local"], "'n'::text");
}

#[test]
fn tables_on_one_side_only_are_local_only_and_peer_only() {
    let (home, _a, _b, ca, cb) = pair();
    sql(&ca, "CREATE TABLE public.mine (id int PRIMARY KEY)");
    sql(&cb, "CREATE TABLE public.theirs (id int PRIMARY KEY)");
    let (code, report, _) = compare(home.path(), &ca, &cb);
    assert_eq!(code, 3);
    assert_eq!(table(&report, "mine")["status"], "local_only");
    assert_eq!(table(&report, "theirs")["status"], "peer_only");
    let err = fails(
        steep(home.path()).args([
            "schema", "diff", "--table", "nowhere", "-c", &ca, "--peer", &cb,
        ]),
        1,
    );
    assert!(err.contains("exists on neither node"), "{err}");
    let err = fails(
        steep(home.path()).args(["schema", "diff", "--table", "a b", "-c", &ca, "--peer", &cb]),
        1,
    );
    assert!(err.contains("quote identifiers"), "{err}");
}

#[test]
fn compare_needs_initialized_distinct_nodes() {
    let home = temp_home();
    let a = node();
    let b = node();
    let (ca, cb) = (a.connection_uri("postgres"), b.connection_uri("postgres"));
    init(home.path(), &ca, &[]);
    let err = fails(
        steep(home.path()).args(["schema", "compare", "-c", &ca, "--peer", &cb]),
        1,
    );
    assert!(
        err.contains("on the peer server") && err.contains("steep init"),
        "{err}"
    );
    init(home.path(), &cb, &["--node-id", "same"]);
    init(home.path(), &ca, &["--node-id", "same"]);
    let err = fails(
        steep(home.path()).args(["schema", "compare", "-c", &ca, "--peer", &cb]),
        1,
    );
    assert!(
        err.contains("both servers say they are node \"same\""),
        "{err}"
    );
}
