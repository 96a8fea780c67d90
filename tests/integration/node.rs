//! `steep node ...` against a real server.

use crate::common::*;

#[test]
fn register_heartbeat_status_list_remove_with_awkward_ids() {
    let home = temp_home();
    let server = node();
    let conn = server.connection_uri("postgres");
    init(home.path(), &conn, &[]);
    let awkward = "nœud \"west\" 'a' b";
    let r = json(&ok(steep(home.path()).args([
        "node",
        "register",
        awkward,
        "--name",
        "West ☃",
        "--host",
        "db-west",
        "--port",
        "6432",
        "--priority",
        "10",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(r["node_id"], awkward);
    assert_eq!(r["port"], 6432);
    ok(steep(home.path()).args(["node", "heartbeat", awkward, "-c", &conn]));
    let st = json(&ok(
        steep(home.path()).args(["node", "status", awkward, "--json", "-c", &conn])
    ));
    assert_eq!(st["is_healthy"], true);
    assert_eq!(st["node_name"], "West ☃");
    let list = json(&ok(
        steep(home.path()).args(["node", "list", "--json", "-c", &conn])
    ));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&awkward));
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|n| n["local"] == true)
            .count(),
        1
    );
    // The local node's status without naming it.
    let me = json(&ok(
        steep(home.path()).args(["node", "status", "--json", "-c", &conn])
    ));
    assert_eq!(me["local"], true);

    ok(steep(home.path()).args(["node", "remove", awkward, "-c", &conn]));
    let mut c = connect(&conn);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM steep_repl.nodes WHERE node_id = $1",
            &[&awkward],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn unknown_nodes_and_bad_values_are_one_line_errors() {
    let home = temp_home();
    let server = node();
    let conn = server.connection_uri("postgres");
    init(home.path(), &conn, &[]);
    for args in [
        vec!["node", "heartbeat", "ghost"],
        vec!["node", "status", "ghost"],
        vec!["node", "remove", "ghost"],
    ] {
        let mut a = args.clone();
        a.extend(["-c", &conn]);
        let err = fails(steep(home.path()).args(&a), 1);
        assert!(err.contains("unknown node \"ghost\""), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = fails(
        steep(home.path()).args(["node", "register", "n", "--priority", "0", "-c", &conn]),
        1,
    );
    assert!(
        err.contains("invalid priority 0: give a number between 1 and 100"),
        "{err}"
    );
    let err = fails(
        steep(home.path()).args(["node", "register", "", "-c", &conn]),
        1,
    );
    assert!(err.contains("invalid node_id"), "{err}");
    let err = fails(
        steep(home.path()).args(["node", "register", "n", "--port", "x", "-c", &conn]),
        2,
    );
    assert!(err.contains("invalid value 'x'"), "{err}");
}
