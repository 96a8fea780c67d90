//! Where direct-mode snapshots may live on the server: inside steep_repl.snapshot_dir (no `..`, no
//! escape through a symlink), unless the role may already read/write server files.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Resolve `path` for a server-side snapshot. `base` is steep_repl.snapshot_dir (None when
/// unset); `privileged` is superuser or pg_write_server_files / pg_read_server_files.
pub fn confine(path: &str, base: Option<&str>, privileged: bool) -> Result<PathBuf, String> {
    if path.is_empty() || path.contains('\0') {
        return Err("give a snapshot path".into());
    }
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("snapshot path {path:?} must not contain \"..\""));
    }
    let base = base.map(str::trim).filter(|b| !b.is_empty());
    let Some(base) = base else {
        if !privileged {
            return Err(
                "steep_repl.snapshot_dir is not set, so only roles that may write server \
                        files can name a path: ask a superuser to set it (ALTER SYSTEM SET \
                        steep_repl.snapshot_dir = '/path'; SELECT pg_reload_conf()), or use \
                        client mode (steep snapshot ... --client), which runs as you with files \
                        where steep runs"
                    .into(),
            );
        }
        if !p.is_absolute() {
            return Err(format!(
                "snapshot path {path:?} is relative and steep_repl.snapshot_dir is not set: give \
                 an absolute path"
            ));
        }
        return Ok(p.to_path_buf());
    };
    let base_real = std::fs::canonicalize(base).map_err(|e| {
        format!(
            "steep_repl.snapshot_dir {base:?} cannot be used ({e}): create it or fix the setting"
        )
    })?;
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_real.join(p)
    };
    let real = resolve_existing_prefix(&full)?;
    if real.starts_with(&base_real) || privileged {
        Ok(real)
    } else {
        Err(format!(
            "snapshot path {path:?} is outside steep_repl.snapshot_dir ({}): use a path inside \
             it, or client mode (--client) for files elsewhere",
            base_real.display()
        ))
    }
}

/// Refuse to write a snapshot inside another one: a directory between steep_repl.snapshot_dir
/// (`base`) and `path` that holds a manifest or a `data` directory is a snapshot (finished or
/// being written) and belongs to whoever made it. Paths outside `base` (roles that may write
/// server files anyway) are not checked.
pub fn refuse_nested(path: &Path, base: Option<&str>) -> Result<(), String> {
    let Some(base) = base
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .and_then(|b| std::fs::canonicalize(b).ok())
    else {
        return Ok(());
    };
    // The directory itself holds every role's snapshots: a snapshot there would be their parent.
    if std::fs::canonicalize(path).is_ok_and(|p| p == base) || path == base {
        return Err(format!(
            "snapshot path {} is steep_repl.snapshot_dir itself: give a directory inside it",
            path.display()
        ));
    }
    for dir in path.ancestors().skip(1) {
        if !dir.starts_with(&base) || dir == base {
            break;
        }
        if dir.join(crate::engine::manifest::FILE).exists()
            || dir.join("data").is_dir()
            || dir.join(crate::engine::partial_output::MARKER).exists()
        {
            return Err(format!(
                "snapshot path {} is inside the snapshot at {}: choose a path outside it",
                path.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Open DIR/NAME (a file of a snapshot) for reading without following a symbolic link anywhere
/// below DIR: a link inside a snapshot could otherwise make a job read a file its owner may not.
pub fn open_inside(dir: &Path, name: &str) -> std::io::Result<File> {
    let mut at = dir.to_path_buf();
    let parts: Vec<Component> = Path::new(name).components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(part) = c else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} leaves the snapshot directory"),
            ));
        };
        at.push(part);
        let last = i + 1 == parts.len();
        let meta = std::fs::symlink_metadata(&at)?;
        if meta.file_type().is_symlink() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link, which snapshots may not contain",
                    at.display()
                ),
            ));
        }
        if !last && !meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", at.display()),
            ));
        }
    }
    // O_NOFOLLOW: a link swapped in after the check is refused too.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
}

/// Canonicalize the longest existing prefix (following symlinks) and append the rest.
fn resolve_existing_prefix(full: &Path) -> Result<PathBuf, String> {
    let mut existing = full.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut real = std::fs::canonicalize(&existing)
        .map_err(|e| format!("cannot resolve {}: {e}", existing.display()))?;
    for part in rest.into_iter().rev() {
        real.push(part);
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_to_the_snapshot_dir() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("snaps");
        std::fs::create_dir(&base).unwrap();
        let b = base.to_str().unwrap();
        let real = std::fs::canonicalize(&base).unwrap();
        assert_eq!(confine("s1", Some(b), false).unwrap(), real.join("s1"));
        assert_eq!(
            confine("a/b/c", Some(b), false).unwrap(),
            real.join("a/b/c")
        );
        assert_eq!(
            confine(real.join("x").to_str().unwrap(), Some(b), false).unwrap(),
            real.join("x")
        );
        let e = confine("../../etc/x", Some(b), false).unwrap_err();
        assert!(e.contains("must not contain \"..\""), "{e}");
        let e = confine("/etc/x", Some(b), false).unwrap_err();
        assert!(e.contains("outside steep_repl.snapshot_dir"), "{e}");
        // A symlink inside the directory that points out of it does not let a path escape.
        std::os::unix::fs::symlink("/etc", base.join("escape")).unwrap();
        let e = confine("escape/x", Some(b), false).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        // Roles that may write server files anyway are not confined.
        assert_eq!(
            confine("/tmp/x", Some(b), true).unwrap(),
            PathBuf::from("/tmp/x")
        );
    }

    #[test]
    fn unset_dir_needs_privilege_and_an_absolute_path() {
        let e = confine("/tmp/x", None, false).unwrap_err();
        assert!(e.contains("steep_repl.snapshot_dir is not set"), "{e}");
        assert_eq!(
            confine("/tmp/x", None, true).unwrap(),
            PathBuf::from("/tmp/x")
        );
        assert!(confine("rel", None, true).unwrap_err().contains("absolute"));
        assert!(confine("", None, true).is_err());
        let e = confine("/tmp/x", Some("/nonexistent/steep"), false).unwrap_err();
        assert!(e.contains("cannot be used"), "{e}");
    }
}
