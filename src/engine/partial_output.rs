//! A generate's output directory while it is being written: a marker names the snapshot and the
//! run writing it (a job's id, or a client process), so that after the process was killed
//! (kill -9, a crash, a server restart) the partial output is recognised — removed by the
//! database worker's sweep for exactly that job in direct mode, named with the command that
//! removes it when client mode meets it again — and nothing else is ever removed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::manifest;

/// The marker's file name: present from the first write until the manifest is in place.
pub const MARKER: &str = ".steep-partial";

/// Mark `dir` (empty, or created just now) as the partial output of `snapshot_id`, written by
/// `run` (e.g. "job 42").
pub fn mark(dir: &Path, snapshot_id: &str, run: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(MARKER))
        .with_context(|| format!("creating {}/{MARKER}", dir.display()))?;
    f.write_all(format!("{snapshot_id}\n{run}\n").as_bytes())?;
    Ok(())
}

/// The output is complete (its manifest is in place): drop the marker.
pub fn unmark(dir: &Path) {
    let _ = fs::remove_file(dir.join(MARKER));
}

/// The snapshot and run whose partial output `dir` holds, if it does (a marker, and no
/// manifest).
pub fn partial_of(dir: &Path) -> Option<(String, String)> {
    if dir.join(manifest::FILE).exists() {
        return None;
    }
    let meta = fs::symlink_metadata(dir.join(MARKER)).ok()?;
    if !meta.is_file() {
        return None;
    }
    let text = fs::read_to_string(dir.join(MARKER)).ok()?;
    let mut lines = text.lines();
    Some((
        lines.next()?.to_string(),
        lines.next().unwrap_or("").to_string(),
    ))
}

/// What a directory that is not empty says to a new generate: the command that removes an
/// interrupted run's output, or that it is someone else's.
pub fn refusal(dir: &Path) -> String {
    match partial_of(dir) {
        Some((id, _)) => format!(
            "{} holds the partial output of snapshot {id}, which did not finish (its process \
             was stopped): remove it with `rm -r -- {}` and generate again",
            dir.display(),
            crate::sql::quote_literal(&dir.to_string_lossy())
        ),
        None => format!(
            "{} is not empty: give a new or empty directory (a snapshot is never written over \
             another)",
            dir.display()
        ),
    }
}

/// Remove the partial output that run `run` of `snapshot_id` left in `dir` (everything in it:
/// generate starts only in an empty directory), keeping the directory. Ok(false) when `dir` holds
/// no such output.
pub fn remove(dir: &Path, snapshot_id: &str, run: &str) -> Result<bool> {
    if partial_of(dir) != Some((snapshot_id.to_string(), run.to_string())) {
        return Ok(false);
    }
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if p.file_name().is_some_and(|n| n == MARKER) {
            continue;
        }
        // Neither follows a symbolic link: a link is removed, not what it points at.
        let meta = fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        }
        .with_context(|| format!("removing {}", p.display()))?;
    }
    unmark(dir);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_incomplete_output_of_that_snapshot_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        fs::create_dir(dir.join("data")).unwrap();
        fs::write(dir.join("data/t.copy"), "x").unwrap();
        assert!(!remove(dir, "s1", "job 1").unwrap(), "no marker: not ours");
        assert!(refusal(dir).contains("is not empty"));
        mark(dir, "s1", "job 1").unwrap();
        assert!(refusal(dir).contains("partial output of snapshot s1"));
        assert!(!remove(dir, "s2", "job 1").unwrap(), "another snapshot's");
        assert!(!remove(dir, "s1", "job 2").unwrap(), "another run's");
        fs::write(dir.join(manifest::FILE), "{}").unwrap();
        assert!(!remove(dir, "s1", "job 1").unwrap(), "complete");
        fs::remove_file(dir.join(manifest::FILE)).unwrap();
        assert!(remove(dir, "s1", "job 1").unwrap());
        assert_eq!(fs::read_dir(dir).unwrap().count(), 0);
    }
}
