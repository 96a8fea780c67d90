//! The extension's lifecycle: catalog signature, `steep init`, `steep doctor`, `steep health`.

use crate::common::*;
use steep::cli::embedded;
use steep::cli::lifecycle::{self, catalog_signature, diff_signatures, render_signature};

/// A fresh install's catalog equals the signature the binary embeds for that version. With
/// STEEP_BLESS=1 the embedded file is rewritten instead (after an intended change).
#[test]
fn catalog_signature_of_a_fresh_install_matches_embedded() {
    let node = node();
    let mut c = connect(&node.connection_string("postgres"));
    let version = embedded::embedded().default_version;
    c.batch_execute(&format!("CREATE EXTENSION steep_repl VERSION '{version}'"))
        .unwrap();
    let actual = catalog_signature(&mut c).unwrap();
    assert!(
        actual.len() > 20,
        "suspiciously small signature: {actual:?}"
    );
    let path = format!(
        "{}/embedded_sql/steep_repl--{version}.signature",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("STEEP_BLESS").is_some() {
        std::fs::write(&path, render_signature(&actual)).unwrap();
        return;
    }
    let expected = lifecycle::embedded_signature(&version)
        .unwrap_or_else(|| panic!("{path} is missing: run with STEEP_BLESS=1"));
    let diff = diff_signatures(&expected, &actual);
    assert!(
        diff.is_empty(),
        "catalog differs from {path} ({}); after an intended change rerun with STEEP_BLESS=1",
        diff.summary()
    );
}

fn check<'a>(doctor: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {doctor}"))
}

fn doctor(home: &std::path::Path, conn: &str, code: i32) -> serde_json::Value {
    let o = steep(home)
        .args(["doctor", "--json", "-c", conn])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(code), "doctor: {}", stderr(&o));
    json(&stdout(&o))
}

#[test]
fn init_creates_registers_is_idempotent_and_doctor_is_all_ok() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_uri("postgres");
    let version = embedded::embedded().default_version;

    let first = init(home.path(), &conn, &[]);
    let changes = first["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("created extension")),
        "{first}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("registered node")),
        "{first}"
    );
    assert_eq!(first["preload"], "active");
    assert_eq!(first["extension_version"], serde_json::json!(version));
    let node_id = first["node_id"].as_str().unwrap().to_string();

    let mut c = connect(&conn);
    let local: String = c
        .query_one("SELECT steep_repl.local_node_id()", &[])
        .unwrap()
        .get(0);
    assert_eq!(local, node_id);
    let port: i32 = c
        .query_one(
            "SELECT port FROM steep_repl.nodes WHERE node_id = $1",
            &[&node_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(port, node.port() as i32);

    // The second run changes nothing and says so.
    let o = steep(home.path())
        .args(["init", "--json", "-c", &conn])
        .output()
        .unwrap();
    assert!(o.status.success());
    let second = json(&stdout(&o));
    assert_eq!(second["changes"], serde_json::json!([]), "{second}");
    assert_eq!(second["node_id"], first["node_id"]);
    assert!(stderr(&o).contains("nothing changed"), "{}", stderr(&o));

    let report = doctor(home.path(), &conn, 0);
    assert_eq!(report["ok"], true);
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["level"], "ok", "{c}");
    }
}

#[test]
fn doctor_reports_a_dropped_function_and_repair_restores_it_keeping_rows() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_uri("postgres");
    init(home.path(), &conn, &[]);
    sql(
        &conn,
        "SELECT steep_repl.register_node('peer', 'a peer', 'h', 6000, 7)",
    );
    sql(
        &conn,
        "ALTER EXTENSION steep_repl DROP FUNCTION steep_repl.heartbeat(text);
         DROP FUNCTION steep_repl.heartbeat(text)",
    );
    let report = doctor(home.path(), &conn, 1);
    let cat = check(&report, "catalog");
    assert_eq!(cat["level"], "fail");
    assert!(
        cat["detail"]
            .as_str()
            .unwrap()
            .contains("missing function steep_repl.heartbeat(text)"),
        "{cat}"
    );
    assert!(
        cat["fix"].as_str().unwrap().contains("steep init --repair"),
        "{cat}"
    );

    // The human output names it too.
    let o = steep(home.path())
        .args(["doctor", "-c", &conn])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("fail  catalog"), "{}", stdout(&o));

    let r = init(home.path(), &conn, &["--repair"]);
    assert!(r["changes"].to_string().contains("reinstalled"), "{r}");
    doctor(home.path(), &conn, 0);
    let mut c = connect(&conn);
    let row = c
        .query_one(
            "SELECT node_name, port, priority FROM steep_repl.nodes WHERE node_id = 'peer'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2)
        ),
        ("a peer".to_string(), 6000, 7)
    );
    let beat: bool = c
        .query_one("SELECT steep_repl.heartbeat('peer')", &[])
        .unwrap()
        .get(0);
    assert!(beat);
}

#[test]
fn init_installs_the_package_into_a_server_without_the_extension_and_preloads() {
    let home = temp_home();
    let copy = tree_without_extension(&home.path().join("tree"));
    let mut server = node_with_install(
        copy.clone(),
        steep::cli::sandbox::ClusterOptions {
            preload: false,
            durable: false,
            ..Default::default()
        },
    );
    let conn = server.connection_uri("postgres");

    // Before: doctor says the extension is not available.
    let report = doctor(home.path(), &conn, 1);
    assert_eq!(check(&report, "extension available")["level"], "fail");

    let out = json(&ok(steep(home.path())
        .env("STEEP_PACKAGE_DIR", package_dir())
        .args(["init", "--json", "--preload", "-c", &conn])));
    assert!(
        copy.extension_installed(),
        "files not installed into the copy"
    );
    assert_eq!(out["preload"], "pending_restart");
    assert_eq!(out["restart_required"], true);
    let report = doctor(home.path(), &conn, 0);
    assert_eq!(check(&report, "preload")["level"], "warn");
    assert!(check(&report, "preload")["detail"]
        .as_str()
        .unwrap()
        .contains("not loaded yet"));

    // After a restart the library is preloaded and health is healthy.
    server.cluster_mut().restart().unwrap();
    let h = json(&ok(
        steep(home.path()).args(["health", "--json", "-c", &conn])
    ));
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["shared_memory_available"], true);
    let again = init(home.path(), &conn, &[]);
    assert_eq!(again["changes"], serde_json::json!([]));
    assert_eq!(again["preload"], "active");
}

#[test]
fn init_without_a_terminal_does_not_touch_preload_unless_told() {
    let home = temp_home();
    let server = node_with(steep::cli::sandbox::ClusterOptions {
        preload: false,
        durable: false,
        ..Default::default()
    });
    let conn = server.connection_uri("postgres");
    let o = steep(home.path())
        .args(["init", "--json", "-c", &conn])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&stdout(&o));
    assert_eq!(r["preload"], "not_configured");
    assert!(stderr(&o).contains("--preload"), "{}", stderr(&o));
    let h = json(&ok(
        steep(home.path()).args(["health", "--json", "-c", &conn])
    ));
    assert_eq!(h["status"], "degraded");
    let report = doctor(home.path(), &conn, 0);
    let p = check(&report, "preload");
    assert_eq!(p["level"], "warn");
    assert!(
        p["fix"].as_str().unwrap().contains("steep init --preload"),
        "{p}"
    );
}

#[test]
fn doctor_detects_not_created_older_version_library_mismatch_and_missing_keys() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_uri("postgres");
    let version = embedded::embedded().default_version;

    let report = doctor(home.path(), &conn, 1);
    let inst = check(&report, "extension installed");
    assert_eq!(inst["level"], "fail");
    assert!(inst["fix"].as_str().unwrap().contains("steep init"));

    init(home.path(), &conn, &[]);
    sql(
        &conn,
        "CREATE TABLE public.no_key (x int); CREATE TABLE public.has_key (x int PRIMARY KEY)",
    );
    // An install at an older version, as after installing new files without ALTER EXTENSION.
    sql(
        &conn,
        "UPDATE pg_extension SET extversion = '0.0.9' WHERE extname = 'steep_repl'",
    );
    let report = doctor(home.path(), &conn, 1);
    let inst = check(&report, "extension installed");
    assert_eq!(inst["level"], "fail");
    assert_eq!(
        inst["detail"],
        format!("0.0.9 installed, {version} available")
    );
    let lib = check(&report, "library version");
    assert_eq!(lib["level"], "fail");
    assert!(
        lib["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("steep_repl.so is {version}")),
        "{lib}"
    );
    let pk = check(&report, "primary keys");
    assert_eq!(pk["level"], "warn");
    assert!(pk["detail"].as_str().unwrap().contains("public.no_key"));
    assert!(!pk["detail"].as_str().unwrap().contains("has_key"));
}

#[test]
fn health_and_version_need_the_extension_with_a_clear_error() {
    let home = temp_home();
    let node = node();
    let conn = node.connection_uri("postgres");
    let err = fails(steep(home.path()).args(["health", "-c", &conn]), 1);
    assert!(
        err.contains("steep_repl is not installed in database \"postgres\": run `steep init`"),
        "{err}"
    );
    init(home.path(), &conn, &[]);
    let v = json(&ok(
        steep(home.path()).args(["version", "--json", "-c", &conn])
    ));
    assert_eq!(
        v["server"]["library_version"],
        v["embedded"]["default_version"]
    );
}

/// Every released version installs from its frozen script (with today's library) into exactly
/// the catalog its signature records.
#[test]
fn every_embedded_version_installs_into_its_recorded_catalog() {
    for version in embedded::embedded().versions {
        let node = node();
        let mut c = connect(&node.connection_string("postgres"));
        c.batch_execute(&format!("CREATE EXTENSION steep_repl VERSION '{version}'"))
            .unwrap();
        let actual = catalog_signature(&mut c).unwrap();
        if std::env::var_os("STEEP_BLESS").is_some() {
            // After a change to what the signature covers, every version's file is rewritten.
            std::fs::write(
                format!(
                    "{}/embedded_sql/steep_repl--{version}.signature",
                    env!("CARGO_MANIFEST_DIR")
                ),
                render_signature(&actual),
            )
            .unwrap();
            continue;
        }
        let expected = lifecycle::embedded_signature(&version).unwrap();
        let diff = diff_signatures(&expected, &actual);
        assert!(diff.is_empty(), "{version}: {}", diff.summary());
    }
}

/// ALTER EXTENSION UPDATE from every older version yields the newest version's catalog, object by
/// object, and keeps the data.
#[test]
fn upgrading_from_every_version_equals_a_fresh_install_and_keeps_data() {
    let e = embedded::embedded();
    let expected = lifecycle::embedded_signature(&e.default_version).unwrap();
    for old in e.versions.iter().filter(|v| **v != e.default_version) {
        let node = node();
        let conn = node.connection_string("postgres");
        let mut c = connect(&conn);
        c.batch_execute(&format!(
            "CREATE EXTENSION steep_repl VERSION '{old}';
             SELECT steep_repl.register_node('n1', 'first', 'h', 6000, 7);
             SELECT steep_repl.set_local_node('n1');
             CREATE TABLE public.t (id int PRIMARY KEY, v varchar(20));
             SELECT steep_repl.capture_fingerprints('n1');
             INSERT INTO steep_repl.snapshots (snapshot_id, kind, node_id, status)
                 VALUES ('s1', 'generate', 'n1', 'complete');
             INSERT INTO steep_repl.merge_audit_log (merge_id, schema_name, table_name, pk, category)
                 VALUES ('m1', 'public', 't', '{{\"id\": 1}}', 'conflict');"
        ))
        .unwrap();
        c.batch_execute("ALTER EXTENSION steep_repl UPDATE")
            .unwrap();
        let v: String = c
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'steep_repl'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(v, e.default_version);
        let diff = diff_signatures(&expected, &catalog_signature(&mut c).unwrap());
        assert!(diff.is_empty(), "upgrade from {old}: {}", diff.summary());
        let row = c
            .query_one(
                "SELECT n.node_name, n.port, n.priority, steep_repl.local_node_id(),
                        (SELECT count(*) FROM steep_repl.schema_fingerprints WHERE node_id = 'n1'),
                        (SELECT status FROM steep_repl.snapshots WHERE snapshot_id = 's1'),
                        (SELECT count(*) FROM steep_repl.merge_audit_log WHERE merge_id = 'm1')
                 FROM steep_repl.nodes n WHERE n.node_id = 'n1'",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "first");
        assert_eq!((row.get::<_, i32>(1), row.get::<_, i32>(2)), (6000, 7));
        assert_eq!(row.get::<_, String>(3), "n1");
        assert_eq!(row.get::<_, i64>(4), 1);
        assert_eq!(row.get::<_, String>(5), "complete");
        assert_eq!(row.get::<_, i64>(6), 1);
        // New audit rows continue the identity sequence.
        c.batch_execute(
            "INSERT INTO steep_repl.merge_audit_log (merge_id, schema_name, table_name, pk, category)
             VALUES ('m1', 'public', 't', '{\"id\": 2}', 'conflict')",
        )
        .unwrap();
    }
}

/// Poll a job until it leaves pending/running; its final status.
fn job_outcome(conn: &str, id: i64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut c = connect(conn);
    loop {
        let s: String = c
            .query_one(
                "SELECT status FROM steep_repl.work_queue WHERE id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if s != "pending" && s != "running" {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} still {s}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Installing a build while servers run from the tree leaves them running: the script
/// (scripts/install-extension.sh) and `steep init`'s package install write each file beside its
/// destination and rename it over; rewriting the library in place killed every server that had
/// it loaded (SIGBUS in its processes).
#[test]
fn reinstalling_the_extension_leaves_running_servers_alone() {
    let home = temp_home();
    let copy = tree_without_extension(&home.path().join("tree"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-extension.sh");
    let install = || {
        let out = std::process::Command::new(script)
            .args(["--pg", &copy.major.to_string(), "--pg-config"])
            .arg(&copy.pg_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install-extension.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    install();
    assert!(copy.extension_installed());
    let server = node_with_install(
        copy.clone(),
        steep::cli::sandbox::ClusterOptions {
            durable: false,
            ..Default::default()
        },
    );
    let conn = server.connection_string("postgres");
    init(home.path(), &conn, &[]);
    let postmaster = server.cluster().running_pid().expect("the server runs");
    let mut c = connect(&conn);
    let start = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT id FROM steep_repl.start_selftest(3.0, 30)", &[])
            .unwrap()
            .get(0)
    };
    // A job worker and the database's worker have the library mapped while it is replaced,
    // by the script and by the package install `steep init` uses.
    let running = start(&mut c);
    std::thread::sleep(std::time::Duration::from_millis(500));
    install();
    let pkg = lifecycle::open_package(&package_dir()).unwrap();
    lifecycle::install_package(&pkg, &copy.pkglibdir, &copy.sharedir).unwrap();
    assert_eq!(job_outcome(&conn, running), "complete");
    assert_eq!(
        server.cluster().running_pid(),
        Some(postmaster),
        "the server restarted"
    );
    // New sessions and new workers load the new file and work.
    let mut fresh = connect(&conn);
    let next = start(&mut fresh);
    assert_eq!(job_outcome(&conn, next), "complete");
    let leftovers: Vec<_> = std::fs::read_dir(&copy.pkglibdir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("steep-tmp") || n.contains("steep-new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
