//! A PostgreSQL installation (through its pg_config) and the OS user its servers run as.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use nix::unistd::{Gid, Uid, User};

use super::*;
use crate::cli::home;

/// A PostgreSQL installation, located through its `pg_config`.
#[derive(Debug, Clone)]
pub struct PgInstall {
    pub pg_config: PathBuf,
    pub bindir: PathBuf,
    pub pkglibdir: PathBuf,
    pub sharedir: PathBuf,
    /// As `pg_config --version` prints it, e.g. "PostgreSQL 18.6".
    pub version: String,
    pub major: u32,
}

impl PgInstall {
    /// The installation at `pg_config`, or the default one (`STEEP_PG_CONFIG`, else the
    /// PostgreSQL 18 tree under `STEEP_HOME`).
    pub fn locate(pg_config: Option<&Path>) -> Result<Self> {
        let pg_config = pg_config
            .map(Path::to_path_buf)
            .unwrap_or_else(home::default_pg_config);
        if !pg_config.is_file() {
            bail!(
                "PostgreSQL is not installed at {}: {INSTALL_HINT}, or pass --pg-config",
                pg_config.display()
            );
        }
        let out = Command::new(&pg_config)
            .args(["--bindir", "--pkglibdir", "--sharedir", "--version"])
            .output()
            .with_context(|| format!("running {}", pg_config.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                pg_config.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let [bindir, pkglibdir, sharedir, version] = lines[..] else {
            bail!("unexpected output from {}: {text:?}", pg_config.display());
        };
        let major = parse_major(version)
            .with_context(|| format!("reading the version from {}", pg_config.display()))?;
        Ok(Self {
            pg_config,
            bindir: bindir.into(),
            pkglibdir: pkglibdir.into(),
            sharedir: sharedir.into(),
            version: version.to_string(),
            major,
        })
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.bindir.join(program)
    }

    /// Whether the `steep_repl` extension's library and control file are in this tree.
    pub fn extension_installed(&self) -> bool {
        self.pkglibdir.join("steep_repl.so").is_file()
            && self.sharedir.join("extension/steep_repl.control").is_file()
    }

    pub fn require_extension(&self) -> Result<()> {
        if self.extension_installed() {
            return Ok(());
        }
        bail!(
            "the steep_repl extension is not installed in {} ({}): {INSTALL_HINT}",
            self.bindir.parent().unwrap_or(&self.bindir).display(),
            self.version
        )
    }
}

/// "PostgreSQL 18.6" -> 18, "PostgreSQL 15.18 (Debian ...)" -> 15, "PostgreSQL 19devel" -> 19.
pub fn parse_major(version: &str) -> Result<u32> {
    let rest = version
        .strip_prefix("PostgreSQL ")
        .ok_or_else(|| anyhow!("not a PostgreSQL version string: {version:?}"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .map_err(|_| anyhow!("not a PostgreSQL version string: {version:?}"))
}

/// The unprivileged OS user that runs servers. `None` when steep itself is not root.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub home: PathBuf,
}

impl RunAs {
    pub fn resolve() -> Result<Option<Self>> {
        if !home::is_root() {
            return Ok(None);
        }
        let name = home::run_as_user();
        let user = User::from_name(&name)
            .with_context(|| format!("looking up the OS user '{name}'"))?
            .ok_or_else(|| {
                anyhow!(
                    "PostgreSQL cannot run as root, and the OS user '{name}' that steep runs servers \
                     as does not exist: {INSTALL_HINT} to create it, or set STEEP_RUN_AS to an \
                     existing unprivileged user"
                )
            })?;
        if user.uid.is_root() {
            bail!(
                "PostgreSQL cannot run as root, and STEEP_RUN_AS='{name}' is a root account: \
                 set STEEP_RUN_AS to an unprivileged user (default: postgres)"
            );
        }
        Ok(Some(Self {
            name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
        }))
    }

    pub(super) fn chown(&self, path: &Path) -> Result<()> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to the OS user '{}'", path.display(), self.name))
    }
}
