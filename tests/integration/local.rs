//! `steep local` and the cluster manager behind it.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use steep::cli::sandbox::{ClusterOptions, PgInstall, TempCluster};

#[test]
fn two_sandboxes_side_by_side_then_down_leaves_nothing() {
    let home = temp_home();
    let conn_a = ok(steep(home.path()).args(["local", "up"]));
    let conn_a = conn_a.trim();
    assert!(
        conn_a.starts_with("postgresql://postgres@127.0.0.1:"),
        "{conn_a}"
    );
    let b = json(&ok(steep(home.path()).args(["local", "up", "b", "--json"])));
    assert_eq!(b["running"], true);

    // The acceptance recipe: the status JSON's connection reaches a server with steep_repl.
    let status = json(&ok(steep(home.path()).args(["local", "status", "--json"])));
    assert_eq!(status["connection"].as_str().unwrap(), conn_a);
    let mut a = connect(conn_a);
    let v: String = a
        .query_one("SELECT steep_repl.version()", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, steep::cli::embedded::embedded().default_version);
    for (setting, want) in [
        ("shared_preload_libraries", "steep_repl"),
        ("wal_level", "logical"),
        ("track_commit_timestamp", "on"),
    ] {
        let got: String = a.query_one(&format!("SHOW {setting}"), &[]).unwrap().get(0);
        assert_eq!(got, want, "{setting}");
    }
    let server_version: i32 = a
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(server_version as u32, install().major);

    // Both serve at once, on different ports, with their own data.
    let mut bc = connect(b["connection"].as_str().unwrap());
    a.batch_execute("CREATE TABLE only_in_a (x int)").unwrap();
    let in_b: i64 = bc
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0);
    assert_ne!(status["port"], b["port"]);

    let all = json(&ok(
        steep(home.path()).args(["local", "status", "--all", "--json"])
    ));
    let pids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    drop((a, bc));

    ok(steep(home.path()).args(["local", "down"]));
    ok(steep(home.path()).args(["local", "down", "b"]));
    for pid in pids {
        assert!(!pid_alive(pid), "postmaster {pid} still runs");
    }
    let left: Vec<_> = std::fs::read_dir(home.path().join("sandboxes"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn up_twice_reuses_the_running_sandbox_and_down_keep_data_restarts() {
    let home = temp_home();
    let first = ok(steep(home.path()).args(["local", "up", "again"]));
    let o = steep(home.path())
        .args(["local", "up", "again"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), first);
    assert!(stderr(&o).contains("already runs"), "{}", stderr(&o));

    let mut c = connect(first.trim());
    c.batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        .unwrap();
    drop(c);
    ok(steep(home.path()).args(["local", "down", "again", "--keep-data"]));
    let st = json(&ok(
        steep(home.path()).args(["local", "status", "again", "--json"])
    ));
    assert_eq!(st["running"], false);
    ok(steep(home.path()).args(["local", "up", "again"]));
    let mut c = connect(first.trim());
    let x: i32 = c.query_one("SELECT x FROM kept", &[]).unwrap().get(0);
    assert_eq!(x, 42);
    drop(c);
    ok(steep(home.path()).args(["local", "down", "--all"]));
    assert!(!home.path().join("sandboxes/again").exists());
}

#[test]
fn bad_names_and_missing_sandboxes_are_clear_errors() {
    let home = temp_home();
    let err = fails(steep(home.path()).args(["local", "up", "../etc"]), 1);
    assert!(err.contains("invalid sandbox name"), "{err}");
    let err = fails(steep(home.path()).args(["local", "status"]), 1);
    assert!(err.contains("steep local up"), "{err}");
    let err = fails(steep(home.path()).args(["local", "down", "nope"]), 1);
    assert!(err.contains("no sandbox named 'nope'"), "{err}");
    let err = fails(steep(home.path()).args(["local", "bogus"]), 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

#[test]
fn missing_postgresql_tree_points_at_install() {
    let home = temp_home();
    let err = fails(
        steep(home.path())
            .env("STEEP_PG_CONFIG", "/nonexistent/bin/pg_config")
            .args(["local", "up"]),
        1,
    );
    assert!(err.contains("PostgreSQL is not installed"), "{err}");
    assert!(err.contains("./install.sh"), "{err}");
}

#[test]
fn missing_extension_points_at_install() {
    // A pg_config that reports the real binaries but an empty library directory.
    let home = temp_home();
    let real = install();
    let empty = home.path().join("emptylib");
    std::fs::create_dir_all(empty.join("extension")).unwrap();
    let fake = home.path().join("pg_config");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho {}\necho {}\necho {}\necho '{}'\n",
            real.bindir.display(),
            empty.display(),
            empty.display(),
            real.version
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = fails(
        steep(home.path())
            .env("STEEP_PG_CONFIG", &fake)
            .args(["local", "up"]),
        1,
    );
    assert!(
        err.contains("steep_repl extension is not installed"),
        "{err}"
    );
    assert!(err.contains("./install.sh"), "{err}");
    assert!(!home.path().join("sandboxes/default").exists());
}

#[test]
fn as_root_without_a_server_user_is_a_clear_error() {
    if !steep::cli::home::is_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let home = temp_home();
    let err = fails(
        steep(home.path())
            .env("STEEP_RUN_AS", "steep-no-such-user")
            .args(["local", "up"]),
        1,
    );
    assert!(err.contains("PostgreSQL cannot run as root"), "{err}");
    assert!(err.contains("steep-no-such-user"), "{err}");
    assert!(!err.contains("root\" execution of the PostgreSQL server is not permitted"));
    let err = fails(
        steep(home.path())
            .env("STEEP_RUN_AS", "root")
            .args(["local", "up"]),
        1,
    );
    assert!(
        err.contains("set STEEP_RUN_AS to an unprivileged user"),
        "{err}"
    );
}

#[test]
fn temp_cluster_is_removed_when_a_test_panics() {
    let base = temp_home();
    let install = install();
    let dirs = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let c = TempCluster::start(
            base.path(),
            install,
            &ClusterOptions {
                durable: false,
                ..ClusterOptions::default()
            },
        )
        .unwrap();
        *dirs.lock().unwrap() = Some((c.dir.clone(), c.running_pid().unwrap()));
        panic!("test failure while the cluster runs");
    });
    assert!(result.is_err());
    let (dir, pid) = dirs.lock().unwrap().take().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!pid_alive(pid as i64), "postmaster {pid} still runs");
}

#[test]
fn clusters_without_preload_do_not_need_the_extension() {
    let c = node_with(ClusterOptions {
        preload: false,
        durable: false,
        ..ClusterOptions::default()
    });
    let mut client = connect(&c.connection_string("postgres"));
    let preload: String = client
        .query_one("SHOW shared_preload_libraries", &[])
        .unwrap()
        .get(0);
    assert_eq!(preload, "");
    let _ = PgInstall::locate(Some(&pg_config())).unwrap();
}
