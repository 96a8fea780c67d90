//! Temporary clusters (tests, demos): stopped and deleted on drop, stale ones swept.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Result;

use super::*;

/// A cluster that is stopped and deleted when dropped, also while a panic unwinds. Each lives
/// under `base`; clusters left there by a process that died are swept when the next one starts.
#[derive(Debug)]
pub struct TempCluster {
    cluster: Option<Cluster>,
}

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempCluster {
    /// Create and start a temporary cluster.
    pub fn start(base: &Path, install: PgInstall, opts: &ClusterOptions) -> Result<Self> {
        sweep_stale(base);
        let pid = std::process::id();
        let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{pid}-{n}");
        let dir = base.join(&name);
        let mut cluster = Cluster::create_owned(&name, &dir, install, opts, Some(pid))?;
        let guard_dir = dir.clone();
        if let Err(e) = cluster.start() {
            let _ = remove_cluster_dir(&guard_dir);
            return Err(e);
        }
        Ok(Self {
            cluster: Some(cluster),
        })
    }

    pub fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("cluster present until drop")
    }

    pub fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("cluster present until drop")
    }
}

impl std::ops::Deref for TempCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.cluster()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Some(c) = self.cluster.take() {
            let _ = c.stop_mode("immediate");
            let _ = remove_cluster_dir(&c.dir);
        }
    }
}

/// Remove temporary clusters whose owning process no longer exists.
pub(super) fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(text) = fs::read_to_string(dir.join(STATE_FILE)) else {
            continue;
        };
        let Ok(state) = serde_json::from_str::<ClusterState>(&text) else {
            continue;
        };
        let Some(owner) = state.owner_pid else {
            continue;
        };
        if process_alive(owner as i32) {
            continue;
        }
        if let Ok(c) = Cluster::open(&dir) {
            let _ = c.stop_mode("immediate");
        }
        let _ = remove_cluster_dir(&dir);
    }
}
