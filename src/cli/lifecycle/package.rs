//! Packages: the built extension files `steep init` installs into a server on this machine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::cli::home;

#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    #[serde(skip)]
    pub dir: PathBuf,
    pub version: String,
    pub pg_major: u32,
}

/// `explicit`, else `STEEP_PACKAGE_DIR`, else `$STEEP_HOME/packages/pg<major>` (written by
/// scripts/install-extension.sh, which ./install.sh runs).
pub fn package_dir(major: u32, explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("STEEP_PACKAGE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| home::steep_home().join(format!("packages/pg{major}")))
}

pub fn open_package(dir: &Path) -> Result<Package> {
    let meta = dir.join("package.json");
    let text = fs::read_to_string(&meta).with_context(|| {
        format!(
            "no steep_repl package at {} (build one with ./install.sh or \
             scripts/install-extension.sh --pg <major>, or pass --package DIR)",
            dir.display()
        )
    })?;
    let mut pkg: Package =
        serde_json::from_str(&text).with_context(|| format!("reading {}", meta.display()))?;
    pkg.dir = dir.to_path_buf();
    for f in [pkg.library(), pkg.dir.join("extension/steep_repl.control")] {
        if !f.is_file() {
            bail!(
                "the package at {} is incomplete: {} is missing",
                dir.display(),
                f.display()
            );
        }
    }
    Ok(pkg)
}

impl Package {
    pub fn library(&self) -> PathBuf {
        self.dir.join("lib/steep_repl.so")
    }

    pub fn extension_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for e in fs::read_dir(self.dir.join("extension"))? {
            let p = e?.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// The server's library and share directories, from the `pg_config` view (superuser only).
pub fn server_dirs(client: &mut postgres::Client) -> Result<(PathBuf, PathBuf)> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_config WHERE name IN ('PKGLIBDIR', 'SHAREDIR')",
            &[],
        )
        .map_err(|e| {
            anyhow!(
                "cannot read the server's pg_config view ({}): installing files needs a superuser",
                crate::db_error::describe(&e)
            )
        })?;
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == name)
            .map(|r| PathBuf::from(r.get::<_, String>(1)))
            .ok_or_else(|| anyhow!("the server's pg_config view has no {name}"))
    };
    Ok((get("PKGLIBDIR")?, get("SHAREDIR")?))
}

/// Copy a package's files into a server's directories. Each file is written beside its
/// destination and renamed over it: running servers keep the library they mapped (rewriting it in
/// place crashes them), and no backend ever sees a missing or half-written file. Returns the
/// paths written.
pub fn install_package(pkg: &Package, libdir: &Path, sharedir: &Path) -> Result<Vec<PathBuf>> {
    let extdir = sharedir.join("extension");
    let denied = |dest: &Path, e: std::io::Error| {
        anyhow!(
            "cannot write {} ({e}): run steep init as root or as the owner of the PostgreSQL \
             installation, or copy {} into {} and {}/* into {} yourself",
            dest.display(),
            pkg.library().display(),
            libdir.display(),
            pkg.dir.join("extension").display(),
            extdir.display()
        )
    };
    let put = |src: &Path, dir: &Path, mode: u32| -> Result<PathBuf> {
        let name = src.file_name().and_then(|n| n.to_str()).unwrap_or("f");
        let dest = dir.join(name);
        let tmp = dir.join(format!(".{name}.steep-tmp"));
        fs::copy(src, &tmp).map_err(|e| denied(&dest, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, &dest).map_err(|e| denied(&dest, e))?;
        Ok(dest)
    };
    let mut written = vec![put(&pkg.library(), libdir, 0o755)?];
    for f in pkg.extension_files()? {
        written.push(put(&f, &extdir, 0o644)?);
    }
    Ok(written)
}

/// Whether the connection parameters point at this machine.
pub fn is_local(host: Option<&str>) -> bool {
    match host {
        None => true,
        Some(h) => {
            let h = h.split(',').next().unwrap_or(h).trim();
            h.is_empty()
                || h.starts_with('/')
                || h == "localhost"
                || h == "127.0.0.1"
                || h == "::1"
                || h.starts_with("127.")
        }
    }
}
