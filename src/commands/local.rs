//! `steep local up|down|status|psql`: throwaway PostgreSQL sandboxes on this machine.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::context::Ctx;
use steep::cli::output::table;
use steep::cli::sandbox::{self, Cluster, ClusterOptions, PgInstall};

#[derive(Args)]
pub struct LocalArgs {
    #[command(subcommand)]
    command: LocalCommand,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Create (or start) a sandbox and print its connection string.
    Up(UpArgs),
    /// Stop a sandbox and delete its data.
    Down(DownArgs),
    /// Show a sandbox (or all of them).
    Status(StatusArgs),
    /// Open psql on a sandbox.
    Psql(PsqlArgs),
}

impl LocalArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            LocalCommand::Up(a) => a.execute(ctx),
            LocalCommand::Down(a) => a.execute(ctx),
            LocalCommand::Status(a) => a.execute(ctx),
            LocalCommand::Psql(a) => a.execute(ctx),
        }
    }
}

/// What `status --json` (and `up --json`) prints for one sandbox.
#[derive(Serialize)]
pub struct SandboxInfo {
    pub name: String,
    pub running: bool,
    pub pid: Option<i32>,
    pub port: u16,
    pub connection: String,
    pub pg_version: String,
    pub pg_config: PathBuf,
    pub dir: PathBuf,
    pub log_file: PathBuf,
}

impl SandboxInfo {
    pub fn of(c: &Cluster) -> Self {
        Self {
            name: c.name.clone(),
            running: c.is_running(),
            pid: c.running_pid(),
            port: c.port(),
            connection: c.connection_uri("postgres"),
            pg_version: c.install.version.clone(),
            pg_config: c.install.pg_config.clone(),
            dir: c.dir.clone(),
            log_file: c.log_file(),
        }
    }
}

#[derive(Args)]
pub struct UpArgs {
    /// Sandbox name.
    #[arg(default_value = "default")]
    name: String,
    /// TCP port on 127.0.0.1 (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// pg_config of the PostgreSQL to use (default: the PostgreSQL 18 that ./install.sh set up).
    #[arg(long, value_name = "PATH")]
    pg_config: Option<PathBuf>,
    /// Do not run CREATE EXTENSION steep_repl (the library is still preloaded).
    #[arg(long)]
    no_extension: bool,
}

impl UpArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let dir = sandbox::sandbox_dir(&self.name)?;
        let mut cluster = if dir.join("sandbox.json").is_file() {
            let c = Cluster::open(&dir)?;
            if let Some(p) = self.port.filter(|p| *p != c.port()) {
                bail!(
                    "sandbox '{}' exists on port {}, not {p}: `steep local down {}` first to \
                     recreate it",
                    self.name,
                    c.port(),
                    self.name
                );
            }
            c
        } else {
            let install = PgInstall::locate(self.pg_config.as_deref())?;
            ctx.out.status(
                "Creating",
                format!(
                    "sandbox '{}' ({}) in {}",
                    self.name,
                    install.version,
                    dir.display()
                ),
            );
            let opts = ClusterOptions {
                port: self.port,
                ..ClusterOptions::default()
            };
            Cluster::create(&self.name, &dir, install, &opts)?
        };
        if cluster.is_running() {
            ctx.out.status(
                "Running",
                format!(
                    "sandbox '{}' already runs on port {}",
                    self.name,
                    cluster.port()
                ),
            );
        } else {
            let fresh = !cluster.data_dir().join("postmaster.opts").exists();
            if let Err(e) = cluster.start() {
                if fresh {
                    // A sandbox that never started holds nothing worth keeping.
                    let _ = cluster.remove();
                }
                return Err(e);
            }
            ctx.out.status(
                "Started",
                format!("sandbox '{}' on port {}", self.name, cluster.port()),
            );
            if fresh && !self.no_extension {
                create_extension(&cluster)?;
                ctx.out
                    .status("Created", "extension steep_repl in database postgres");
            }
        }
        let info = SandboxInfo::of(&cluster);
        ctx.out.json(&info)?;
        ctx.out.line(&info.connection);
        Ok(())
    }
}

fn create_extension(cluster: &Cluster) -> Result<()> {
    let mut client =
        postgres::Client::connect(&cluster.connection_string("postgres"), postgres::NoTls)
            .with_context(|| format!("connecting to sandbox '{}'", cluster.name))?;
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS steep_repl")
        .with_context(|| {
            format!(
                "creating extension steep_repl in sandbox '{}'",
                cluster.name
            )
        })
}

#[derive(Args)]
pub struct DownArgs {
    /// Sandbox name.
    #[arg(default_value = "default", conflicts_with = "all")]
    name: String,
    /// Every sandbox.
    #[arg(long)]
    all: bool,
    /// Stop the server but keep its data (start it again with `steep local up NAME`).
    #[arg(long)]
    keep_data: bool,
}

impl DownArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let targets = if self.all {
            sandbox::list_sandboxes()?
        } else {
            let dir = sandbox::sandbox_dir(&self.name)?;
            if !dir.join("sandbox.json").is_file() {
                bail!(
                    "no sandbox named '{}' (see `steep local status --all`)",
                    self.name
                );
            }
            vec![Cluster::open(&dir)?]
        };
        let mut names = Vec::new();
        for c in targets {
            names.push(c.name.clone());
            if self.keep_data {
                c.stop()?;
                ctx.out
                    .status("Stopped", format!("sandbox '{}' (data kept)", c.name));
            } else {
                let name = c.name.clone();
                c.remove()?;
                ctx.out.status("Removed", format!("sandbox '{name}'"));
            }
        }
        ctx.out
            .json(&serde_json::json!({ "stopped": names, "data_kept": self.keep_data }))
    }
}

#[derive(Args)]
pub struct StatusArgs {
    /// Sandbox name.
    #[arg(default_value = "default", conflicts_with = "all")]
    name: String,
    /// Every sandbox (JSON: an array).
    #[arg(long)]
    all: bool,
}

impl StatusArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        if self.all {
            let all: Vec<SandboxInfo> = sandbox::list_sandboxes()?
                .iter()
                .map(SandboxInfo::of)
                .collect();
            ctx.out.json(&all)?;
            if all.is_empty() {
                ctx.out
                    .note("no sandboxes: create one with `steep local up`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        if s.running { "running" } else { "stopped" }.into(),
                        s.pg_version.clone(),
                        s.connection.clone(),
                    ]
                })
                .collect();
            ctx.out
                .line(table(&["name", "state", "version", "connection"], &rows));
            return Ok(());
        }
        let dir = sandbox::sandbox_dir(&self.name)?;
        if !dir.join("sandbox.json").is_file() {
            let names: Vec<String> = sandbox::list_sandboxes()?
                .into_iter()
                .map(|c| c.name)
                .collect();
            if names.is_empty() {
                bail!(
                    "no sandbox named '{}': create one with `steep local up`",
                    self.name
                );
            }
            bail!(
                "no sandbox named '{}' (existing: {}): name one, e.g. `steep local status {}`",
                self.name,
                names.join(", "),
                names[0]
            );
        }
        let info = SandboxInfo::of(&Cluster::open(&dir)?);
        ctx.out.json(&info)?;
        ctx.out.line(format!(
            "{}: {} ({}), {}\n  connection: {}\n  data: {}\n  log: {}",
            info.name,
            if info.running { "running" } else { "stopped" },
            info.pid
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "no server".into()),
            info.pg_version,
            info.connection,
            info.dir.display(),
            info.log_file.display()
        ));
        Ok(())
    }
}

#[derive(Args)]
pub struct PsqlArgs {
    /// Sandbox name.
    #[arg(default_value = "default")]
    name: String,
    /// Database to connect to.
    #[arg(short, long, default_value = "postgres")]
    dbname: String,
    /// Further psql arguments, after `--`.
    #[arg(last = true)]
    psql_args: Vec<String>,
}

impl PsqlArgs {
    pub fn execute(&self, _ctx: &Ctx) -> Result<()> {
        let dir = sandbox::sandbox_dir(&self.name)?;
        if !dir.join("sandbox.json").is_file() {
            bail!(
                "no sandbox named '{}': create one with `steep local up`",
                self.name
            );
        }
        let c = Cluster::open(&dir)?;
        if !c.is_running() {
            bail!(
                "sandbox '{}' is stopped: start it with `steep local up {}`",
                self.name,
                self.name
            );
        }
        let psql = std::env::var_os("STEEP_PSQL")
            .map(PathBuf::from)
            .unwrap_or_else(|| c.install.bin("psql"));
        let err = Command::new(&psql)
            .arg(c.connection_uri(&self.dbname))
            .args(&self.psql_args)
            .exec();
        Err(err).with_context(|| format!("running {}", psql.display()))
    }
}
