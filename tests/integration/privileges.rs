//! A plain LOGIN role, granted what the README documents, does everything 0.1.0 offers.

use crate::common::*;

#[test]
fn a_granted_non_superuser_registers_nodes_and_compares_schemas() {
    let home = temp_home();
    let a = node();
    let b = node();
    let (ca, cb) = (a.connection_uri("postgres"), b.connection_uri("postgres"));
    init(home.path(), &ca, &[]);
    init(home.path(), &cb, &[]);
    for c in [&ca, &cb] {
        sql(
            c,
            "CREATE ROLE steep_op LOGIN; CREATE TABLE public.t (id int PRIMARY KEY, v text)",
        );
    }
    let op_a = format!(
        "host=127.0.0.1 port={} user=steep_op dbname=postgres",
        a.port()
    );
    let op_b = format!(
        "host=127.0.0.1 port={} user=steep_op dbname=postgres",
        b.port()
    );

    // Without the grants: a clear permission error.
    let err = fails(steep(home.path()).args(["node", "list", "-c", &op_a]), 1);
    assert!(err.contains("permission denied"), "{err}");

    let r = init(home.path(), &ca, &["--grant", "steep_op"]);
    assert!(r["changes"].to_string().contains("granted role"), "{r}");
    let again = init(home.path(), &ca, &["--grant", "steep_op"]);
    assert_eq!(again["changes"], serde_json::json!([]));
    init(home.path(), &cb, &["--grant", "steep_op"]);

    let mut check = connect(&op_a);
    let su: bool = check
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!su);

    ok(steep(home.path()).args(["node", "register", "other", "--host", "h", "-c", &op_a]));
    ok(steep(home.path()).args(["node", "heartbeat", "other", "-c", &op_a]));
    let list = json(&ok(
        steep(home.path()).args(["node", "list", "--json", "-c", &op_a])
    ));
    assert_eq!(list.as_array().unwrap().len(), 2);
    ok(steep(home.path()).args(["node", "remove", "other", "-c", &op_a]));
    let cap = json(&ok(
        steep(home.path()).args(["schema", "capture", "--json", "-c", &op_a])
    ));
    assert_eq!(cap["tables"], 1);
    let o = steep(home.path())
        .args(["schema", "compare", "--json", "-c", &op_a, "--peer", &op_b])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&stdout(&o))["tables"][0]["status"], "match");
    ok(steep(home.path()).args(["health", "-c", &op_a]));
    // Doctor passes for the role (REPLICATION is only a warning until snapshots need it).
    let d = json(&ok(
        steep(home.path()).args(["doctor", "--json", "-c", &op_a])
    ));
    let p = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "privileges")
        .unwrap();
    assert_eq!(p["level"], "warn", "{p}");
}
