//! Throwaway PostgreSQL clusters: the `steep local` sandboxes and the integration tests' servers.
//!
//! A cluster lives in one directory: `data/` (PGDATA), `server.log`, `sandbox.json` (its state) and
//! its Unix socket. When steep runs as root, every server command runs as an unprivileged OS user
//! (`STEEP_RUN_AS`, default `postgres`), because PostgreSQL refuses to run as root.

mod install;
mod registry;
mod temp;

pub use install::*;
pub use registry::*;
pub use temp::*;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The name of the bootstrap superuser in every cluster steep creates.
pub const SUPERUSER: &str = "postgres";
const STATE_FILE: &str = "sandbox.json";
const INSTALL_HINT: &str =
    "run ./install.sh (or scripts/setup.sh and scripts/install-extension.sh)";

/// How to set up a new cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A fixed TCP port; `None` picks a free one.
    pub port: Option<u16>,
    /// Load `steep_repl` through `shared_preload_libraries`.
    pub preload: bool,
    /// Keep crash safety (fsync). Tests turn it off for speed.
    pub durable: bool,
    /// More `postgresql.conf` settings, as (name, value) with the value already quoted as needed.
    pub settings: Vec<(String, String)>,
    /// `pg_hba.conf` lines placed before the default `trust` ones (so they take precedence).
    pub hba: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            port: None,
            preload: true,
            durable: true,
            settings: Vec::new(),
            hba: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterState {
    name: String,
    port: u16,
    port_fixed: bool,
    pg_config: PathBuf,
    created_at: u64,
    /// The process that owns a temporary (test) cluster; stale ones are swept.
    #[serde(default)]
    owner_pid: Option<u32>,
}

/// One PostgreSQL cluster in its own directory.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub install: PgInstall,
    state: ClusterState,
    run_as: Option<RunAs>,
}

impl Cluster {
    /// initdb a new cluster in `dir` (which must not exist yet). It is not started.
    pub fn create(
        name: &str,
        dir: &Path,
        install: PgInstall,
        opts: &ClusterOptions,
    ) -> Result<Self> {
        Self::create_owned(name, dir, install, opts, None)
    }

    fn create_owned(
        name: &str,
        dir: &Path,
        install: PgInstall,
        opts: &ClusterOptions,
        owner_pid: Option<u32>,
    ) -> Result<Self> {
        if opts.preload {
            install.require_extension()?;
        }
        for tool in ["initdb", "pg_ctl", "postgres"] {
            if !install.bin(tool).is_file() {
                bail!("{} is missing: {INSTALL_HINT}", install.bin(tool).display());
            }
        }
        let run_as = RunAs::resolve()?;
        if dir.exists() {
            bail!(
                "{} already exists: remove it or choose another name",
                dir.display()
            );
        }
        let parent = dir.parent().context("cluster directory has no parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        if run_as.is_some() {
            // The server user walks through the parent to reach its data directory.
            let mut perms = fs::metadata(parent)?.permissions();
            perms.set_mode(perms.mode() | 0o755);
            fs::set_permissions(parent, perms)?;
        }
        fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        if let Some(u) = &run_as {
            u.chown(dir)?;
        }
        if dir.join(".s.PGSQL.65535").as_os_str().len() > 107 {
            bail!(
                "the cluster directory {} is too long for a Unix socket path: use a shorter \
                 STEEP_HOME",
                dir.display()
            );
        }
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let state = ClusterState {
            name: name.to_string(),
            port,
            port_fixed: opts.port.is_some(),
            pg_config: install.pg_config.clone(),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            owner_pid,
        };
        let cluster = Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            install,
            state,
            run_as,
        };
        cluster.write_state()?;
        cluster.initdb(opts)?;
        Ok(cluster)
    }

    /// Open the cluster whose directory is `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let state_path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&state_path)
            .with_context(|| format!("reading {}", state_path.display()))?;
        let state: ClusterState = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", state_path.display()))?;
        let install = PgInstall::locate(Some(&state.pg_config))?;
        Ok(Self {
            name: state.name.clone(),
            dir: dir.to_path_buf(),
            install,
            state,
            run_as: RunAs::resolve()?,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Where direct-mode snapshots of this cluster go (steep_repl.snapshot_dir).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    pub fn port(&self) -> u16 {
        self.state.port
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq URI for database `dbname` as the bootstrap superuser over TCP on localhost.
    pub fn connection_uri(&self, dbname: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port(),
            percent_encode(dbname)
        )
    }

    /// The same as a key=value string (what the `postgres` crate and libpq both accept).
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname='{}'",
            self.port(),
            dbname.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }

    /// The postmaster's pid when the server is running.
    pub fn running_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.write_port_conf()?;
            let out = self.run_server_cmd(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    self.data_dir().as_os_str(),
                    "-l".as_ref(),
                    self.log_file().as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "120".as_ref(),
                    "start".as_ref(),
                ],
            )?;
            if out.status.success() {
                return Ok(());
            }
            let log = self.log_tail(30);
            let port_taken =
                log.contains("could not bind") || log.contains("Address already in use");
            if port_taken && !self.state.port_fixed && attempts < 5 {
                self.state.port = free_port()?;
                self.write_state()?;
                continue;
            }
            let hint = if port_taken {
                format!("port {} is in use: choose another with --port", self.port())
            } else {
                format!("see {}", self.log_file().display())
            };
            bail!(
                "PostgreSQL did not start in {} ({hint}):\n{}\n{}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                log.trim()
            );
        }
    }

    /// Stop the server (fast shutdown: active sessions are disconnected).
    pub fn stop(&self) -> Result<()> {
        self.stop_mode("fast")
    }

    fn stop_mode(&self, mode: &str) -> Result<()> {
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        let out = self.run_server_cmd(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data_dir().as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "stop".as_ref(),
            ],
        )?;
        if !out.status.success() && self.is_running() {
            bail!(
                "could not stop PostgreSQL in {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // pg_ctl returns once postmaster.pid is gone, a moment before the process exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// Restart the server (used by tests and after configuration changes).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// Stop the server and delete the cluster's directory.
    pub fn remove(self) -> Result<()> {
        if self.stop_mode("fast").is_err() {
            self.stop_mode("immediate")?;
        }
        remove_cluster_dir(&self.dir)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Append settings to the cluster's configuration (takes effect on the next start or reload).
    pub fn set_settings(&self, settings: &[(String, String)]) -> Result<()> {
        let path = self.data_dir().join("steep.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        for (k, v) in settings {
            writeln!(f, "{k} = {v}")?;
        }
        Ok(())
    }

    /// Write a file into the data directory, owned by the server user (e.g. TLS certificates).
    pub fn write_data_file(&self, name: &str, contents: &[u8], mode: u32) -> Result<PathBuf> {
        let path = self.data_dir().join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        if let Some(u) = &self.run_as {
            u.chown(&path)?;
        }
        Ok(path)
    }

    /// Run a program from the installation's bin directory as the server user.
    pub fn run_server_cmd(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<Output> {
        let path = self.install.bin(program);
        let mut cmd = Command::new(&path);
        cmd.args(args).current_dir(&self.dir);
        // Our own flags say where the server is; inherited libpq variables must not redirect it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        if let Some(u) = &self.run_as {
            cmd.uid(u.uid.as_raw())
                .gid(u.gid.as_raw())
                .env("HOME", &u.home);
        }
        cmd.output()
            .with_context(|| format!("running {}", path.display()))
    }

    fn initdb(&self, opts: &ClusterOptions) -> Result<()> {
        let data = self.data_dir();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "--auth=trust".as_ref(),
            "--encoding=UTF8".as_ref(),
            "--no-locale".as_ref(),
        ];
        if !opts.durable {
            args.push("--no-sync".as_ref());
        }
        let out = self.run_server_cmd("initdb", &args)?;
        if !out.status.success() {
            bail!(
                "initdb failed for {}:\n{}{}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut conf = vec![
            ("listen_addresses".to_string(), "'127.0.0.1'".to_string()),
            (
                "unix_socket_directories".to_string(),
                quote_conf(&self.dir.to_string_lossy()),
            ),
            ("wal_level".into(), "logical".into()),
            ("track_commit_timestamp".into(), "on".into()),
            ("max_worker_processes".into(), "32".into()),
            ("max_replication_slots".into(), "16".into()),
            ("max_wal_senders".into(), "16".into()),
            ("log_line_prefix".into(), "'%m [%p] %q%u@%d '".into()),
        ];
        if opts.preload {
            conf.push(("shared_preload_libraries".into(), "'steep_repl'".into()));
        }
        // Direct-mode snapshots of this sandbox live beside its data.
        let snapshots = self.snapshot_dir();
        fs::create_dir(&snapshots).with_context(|| format!("creating {}", snapshots.display()))?;
        fs::set_permissions(&snapshots, fs::Permissions::from_mode(0o700))?;
        if let Some(u) = &self.run_as {
            u.chown(&snapshots)?;
        }
        conf.push((
            "steep_repl.snapshot_dir".into(),
            quote_conf(&snapshots.to_string_lossy()),
        ));
        if !opts.durable {
            // Survives a process crash (the OS still has the writes), not an OS crash. Commits
            // stay synchronous: crash-restart tests need every committed row to survive.
            for (k, v) in [("fsync", "off"), ("full_page_writes", "off")] {
                conf.push((k.into(), v.into()));
            }
        }
        conf.extend(opts.settings.iter().cloned());

        if !opts.hba.is_empty() {
            let hba_path = data.join("pg_hba.conf");
            let old = fs::read_to_string(&hba_path)
                .with_context(|| format!("reading {}", hba_path.display()))?;
            self.write_owned(&hba_path, &format!("{}\n{old}", opts.hba.join("\n")))?;
        }
        let steep_conf = data.join("steep.conf");
        let mut text = String::from("# Written by steep for this cluster.\n");
        for (k, v) in &conf {
            text.push_str(&format!("{k} = {v}\n"));
        }
        self.write_owned(&steep_conf, &text)?;
        let main_conf = data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .with_context(|| format!("opening {}", main_conf.display()))?;
        // The port lives in its own file, rewritten when a busy port forces another choice.
        writeln!(f, "\ninclude 'steep.conf'\ninclude 'steep-port.conf'")?;
        Ok(())
    }

    fn write_port_conf(&self) -> Result<()> {
        let path = self.data_dir().join("steep-port.conf");
        self.write_owned(&path, &format!("port = {}\n", self.port()))
    }

    fn write_state(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        self.write_owned(&self.dir.join(STATE_FILE), &text)
    }

    fn write_owned(&self, path: &Path, text: &str) -> Result<()> {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        if let Some(u) = &self.run_as {
            u.chown(path)?;
        }
        Ok(())
    }
}

/// Whether `pid` is a live process (a zombie awaiting its reaper counts as gone).
pub fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    };
    if !exists {
        return false;
    }
    // /proc/PID/stat: "pid (comm) state ..."; comm may contain spaces and parentheses.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now. Chosen from 20000..32000 (below the
/// ephemeral range, so outgoing connections do not take it) and checked by binding it.
fn free_port() -> Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2654435761);
    for _ in 0..200 {
        let n = NEXT.fetch_add(7919, Ordering::SeqCst);
        let port = 20000 + (seed.wrapping_add(n) % 12000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free TCP port found on 127.0.0.1 in 20000..32000")
}

fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions() {
        assert_eq!(parse_major("PostgreSQL 18.6").unwrap(), 18);
        assert_eq!(
            parse_major("PostgreSQL 15.18 (Debian 15.18-0+deb12u1)").unwrap(),
            15
        );
        assert_eq!(parse_major("PostgreSQL 19devel").unwrap(), 19);
        assert!(parse_major("MySQL 8").is_err());
        assert!(parse_major("PostgreSQL x").is_err());
    }

    #[test]
    fn conf_and_uri_quoting() {
        assert_eq!(quote_conf("/a/b'c"), "'/a/b''c'");
        assert_eq!(percent_encode("my db/ü"), "my%20db%2F%C3%BC");
    }

    #[test]
    fn free_ports_are_bindable_and_in_range() {
        for _ in 0..20 {
            let p = free_port().unwrap();
            assert!((20000..32000).contains(&p));
            assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
        }
    }
}
