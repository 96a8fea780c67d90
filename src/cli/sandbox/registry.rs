//! The `steep local` sandboxes on this machine: where they live, which run, removing one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::*;
use crate::cli::home;

/// The directory of the `steep local` sandbox `name`. Names are restricted so they cannot
/// escape the sandboxes directory.
pub fn sandbox_dir(name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        bail!(
            "invalid sandbox name {name:?}: use 1-32 letters, digits, '-' or '_' (not starting \
             with '-')"
        );
    }
    Ok(home::sandboxes_dir().join(name))
}

/// Every `steep local` sandbox on this machine, by name.
pub fn list_sandboxes() -> Result<Vec<Cluster>> {
    let dir = home::sandboxes_dir();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if entry.path().join(STATE_FILE).is_file() {
            out.push(Cluster::open(&entry.path())?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The sandbox a command uses when no connection is given: `default` when it runs, else the only
/// running one. Several running and none named `default` is ambiguous, and an error.
pub fn running_sandbox() -> Result<Option<Cluster>> {
    let running: Vec<Cluster> = list_sandboxes()?
        .into_iter()
        .filter(Cluster::is_running)
        .collect();
    if running.len() <= 1 {
        return Ok(running.into_iter().next());
    }
    let names: Vec<String> = running.iter().map(|c| c.name.clone()).collect();
    match running.into_iter().find(|c| c.name == "default") {
        Some(c) => Ok(Some(c)),
        None => bail!(
            "no connection given and several sandboxes are running ({}): pass -c, e.g. \
             -c \"$(steep local status {} --json | jq -r .connection)\"",
            names.join(", "),
            names[0]
        ),
    }
}

/// Delete a cluster directory; refuses a directory that is not a steep cluster.
pub(super) fn remove_cluster_dir(dir: &Path) -> Result<()> {
    if !dir.join(STATE_FILE).is_file() {
        bail!(
            "refusing to delete {}: it is not a steep cluster (no {STATE_FILE})",
            dir.display()
        );
    }
    fs::remove_dir_all(dir).with_context(|| format!("deleting {}", dir.display()))
}
