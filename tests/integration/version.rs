//! `steep version` and `steep demo`.

use crate::common::*;

#[test]
fn version_reports_binary_embedded_and_server() {
    let home = temp_home();
    // Without a server: binary and embedded versions only.
    let v = json(&ok(steep(home.path()).args(["version", "--json"])));
    assert_eq!(v["binary"], env!("CARGO_PKG_VERSION"));
    let embedded = v["embedded"]["default_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(v["embedded"]["versions"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(embedded)));
    assert!(v["server"].is_null());

    // With a running sandbox found implicitly: the server's library and extversion.
    ok(steep(home.path()).args(["local", "up", "v"]));
    let v = json(&ok(steep(home.path()).args(["version", "--json"])));
    assert_eq!(
        v["server"]["installed_version"],
        serde_json::json!(embedded)
    );
    assert_eq!(v["server"]["library_version"], serde_json::json!(embedded));
    assert!(v["server"]["server_version"]
        .as_str()
        .unwrap()
        .starts_with(&install().major.to_string()));
    ok(steep(home.path()).args(["local", "down", "v"]));
}

#[test]
fn version_with_an_unreachable_connection_fails_clearly() {
    let home = temp_home();
    let err = fails(
        steep(home.path()).args(["version", "-c", "host=127.0.0.1 port=1 connect_timeout=2"]),
        1,
    );
    assert!(err.contains("could not connect to 127.0.0.1:1"), "{err}");
    let err = fails(steep(home.path()).args(["version", "-c", "host"]), 1);
    assert!(err.contains("malformed connection string"), "{err}");
}

#[test]
fn demo_runs_the_main_job_end_to_end_and_cleans_up() {
    let home = temp_home();
    let out = json(&ok(
        steep(home.path()).args(["demo", "--scale", "1", "--json"])
    ));
    assert_eq!(out["compare_before"], 3, "{out}");
    assert_eq!(out["compare_after"], 0, "{out}");
    assert_eq!(out["accounts_a"], 100000);
    assert_eq!(out["accounts_b"], 100000);
    // Then both changed accounts 1-3 and opened accounts; merged: account 1 as the decisions file
    // says (B's -50), 2 and 3 by prefer-local (A's +100), every new account on both.
    assert_eq!(out["merge"], 0, "{out}");
    assert_eq!(out["merged_accounts"], 100008, "{out}");
    assert_eq!(out["merged_balance"], 150, "{out}");
    let left = std::fs::read_dir(home.path().join("demo"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "demo left clusters behind");
}

#[test]
fn version_with_c_sees_available_but_not_created_extension() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_uri("postgres");
    let v = json(&ok(
        steep(home.path()).args(["version", "--json", "-c", &conn])
    ));
    let embedded = v["embedded"]["default_version"].clone();
    assert_eq!(v["server"]["available_version"], embedded);
    assert!(v["server"]["installed_version"].is_null());
    assert!(v["server"]["library_version"].is_null());

    connect(&conn)
        .batch_execute("CREATE EXTENSION steep_repl")
        .unwrap();
    // STEEP_CONNECTION is the second source of a connection string.
    let v = json(&ok(steep(home.path())
        .env("STEEP_CONNECTION", &conn)
        .args(["version", "--json"])));
    assert_eq!(v["server"]["installed_version"], embedded);
}

#[test]
fn completions_for_bash_name_the_commands() {
    let home = temp_home();
    let out = ok(steep(home.path()).args(["completions", "bash"]));
    for word in ["snapshot", "schema", "doctor", "ops", "local"] {
        assert!(
            out.contains(word),
            "{word} missing from the bash completions"
        );
    }
    let err = fails(steep(home.path()).args(["completions", "tcsh"]), 2);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}
