//! Shared test helpers: the PostgreSQL under test, isolated steep homes, running the binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use steep::sandbox::{ClusterOptions, PgInstall, TempCluster};

/// The pg_config of the PostgreSQL under test.
pub fn pg_config() -> PathBuf {
    std::env::var_os("STEEP_TEST_PG_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(steep::paths::default_pg_config)
}

pub fn install() -> PgInstall {
    PgInstall::locate(Some(&pg_config())).expect("PostgreSQL under test (run scripts/setup.sh)")
}

/// A directory the unprivileged server user can traverse, removed at the end of the test.
pub fn temp_home() -> tempfile::TempDir {
    let base = steep::paths::steep_home().join("test-tmp");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("home-")
        .tempdir_in(&base)
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A started throwaway cluster with steep_repl preloaded; stopped and deleted on drop.
pub fn node() -> TempCluster {
    node_with(ClusterOptions {
        durable: false,
        ..ClusterOptions::default()
    })
}

pub fn node_with(opts: ClusterOptions) -> TempCluster {
    let base = steep::paths::steep_home().join("test-clusters");
    TempCluster::start(&base, install(), &opts).expect("start a test cluster")
}

pub fn connect(conninfo: &str) -> postgres::Client {
    postgres::Client::connect(conninfo, postgres::NoTls).expect("connect to the test cluster")
}

/// `steep` with an isolated STEEP_HOME and the PostgreSQL under test, and no inherited
/// connection settings.
pub fn steep(home: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("steep").unwrap();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("PG") || k == "STEEP_CONNECTION" {
            cmd.env_remove(k);
        }
    }
    cmd.env("STEEP_HOME", home)
        .env("STEEP_PG_CONFIG", pg_config())
        .env("NO_COLOR", "1");
    cmd
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Run and require success, returning stdout.
pub fn ok(cmd: &mut assert_cmd::Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Run and require the exit code, returning stderr.
pub fn fails(cmd: &mut assert_cmd::Command, code: i32) -> String {
    let o = cmd.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(code),
        "unexpected exit:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub fn pid_alive(pid: i64) -> bool {
    steep::sandbox::process_alive(pid as i32)
}
