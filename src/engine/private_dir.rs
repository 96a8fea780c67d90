//! A temporary directory only this OS user can enter (mode 0700), removed when dropped: for the
//! session proxy's socket and the table-of-contents lists given to pg_restore.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct PrivateDir(PathBuf);

impl PrivateDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let base = std::env::temp_dir();
        let mut last = None;
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let bits = crate::engine::unique_bits(nanos.wrapping_add(attempt));
            let path = base.join(format!("{prefix}-{:012x}", bits >> 16));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
            .with_context(|| format!("creating a private directory in {}", base.display()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
