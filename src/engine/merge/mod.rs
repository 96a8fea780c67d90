//! Merging two nodes that both hold rows, shared by the CLI (client mode: it holds a connection
//! to each node) and the job worker (direct mode: it connects to its own server and to the peer).
//!
//! Part one, overlap analysis: per table, which rows match, which conflict (same primary key,
//! different row), and which exist on one side only — exactly, whatever either node's session
//! settings or column order, and with only what differs crossing the network: each node sums its
//! own row digests per bucket of key hashes (`digest`), and only the keys and row hashes of
//! buckets that differ are fetched (`overlap`). Preflight refuses what cannot be compared
//! (`preflight`); one-sided rows whose secondary unique key the other node holds are reported
//! (`unique`).

pub mod apply;
pub mod conflicts;
pub mod digest;
pub mod ledger;
pub mod overlap;
pub mod packed;
pub mod preflight;
pub mod rows;
pub mod stored;
pub mod strategy;
pub mod unique;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::counters::Counters;
use crate::engine::error::cancelled;
use crate::engine::scheduler::{self, Tasks};
use crate::engine::Connect;

pub use unique::UniqueCollision;

/// Blocking preflight findings (the CLI's exit 3), each naming its cause and fix.
#[derive(Debug)]
pub struct Refused(pub Vec<String>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the nodes cannot be compared:\n  - {}",
            self.0.join("\n  - ")
        )
    }
}

impl std::error::Error for Refused {}

/// Keys (each the row-literal text of a row's primary key values, `(NZ,AKL)`) by category,
/// sorted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Keys {
    pub conflict: Vec<String>,
    pub local_only: Vec<String>,
    pub remote_only: Vec<String>,
}

impl Keys {
    pub fn sort(&mut self) {
        self.conflict.sort();
        self.local_only.sort();
        self.remote_only.sort();
    }
}

/// What comparing a table cost: buckets compared and differing, (key, hash) pairs fetched from
/// each node, and whether every pair was streamed because most buckets differed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub buckets: u64,
    pub buckets_differing: u64,
    pub pairs_local: u64,
    pub pairs_remote: u64,
    pub streamed: bool,
}

/// One table's overlap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableOverlap {
    pub schema: String,
    pub table: String,
    #[serde(rename = "match")]
    pub matched: u64,
    pub conflict: u64,
    pub local_only: u64,
    pub remote_only: u64,
    pub local_rows: u64,
    pub remote_rows: u64,
    /// Whether `keys` lists every non-matching key (at most `overlap::MAX_KEYS` are kept per
    /// category; the counts are exact either way).
    pub keys_complete: bool,
    /// More than half the keys both nodes hold conflict: both probably numbered their own rows
    /// (same key, different entity); merging the table blindly would re-parent child rows.
    pub suspect_serial_keys: bool,
    pub unique_collisions: Vec<UniqueCollision>,
    pub cost: Cost,
    pub keys: Keys,
}

impl TableOverlap {
    pub fn qualified(&self) -> String {
        crate::sql::qualified(&self.schema, &self.table)
    }
}

#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// `schema.table` or `table` names; none: every table of the local node.
    pub tables: Vec<String>,
    /// Tables compared at once (each with a connection to each node).
    pub parallel: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub tables: Vec<TableOverlap>,
}

/// A connection prepared for digests, in a REPEATABLE READ transaction, watched for cancel.
pub(crate) fn open(
    side: &dyn Connect,
    progress: &Counters,
    what: &str,
) -> Result<postgres::Client> {
    let mut c = side
        .connect()
        .with_context(|| format!("connecting to the {what}"))?;
    digest::prepare(&mut c)?;
    progress.watch_client(&c);
    Ok(c)
}

/// Compare the tables of `local` and `peer`.
pub fn analyze(
    local: &dyn Connect,
    peer: &dyn Connect,
    opts: &AnalyzeOptions,
    progress: &Counters,
) -> Result<Analysis> {
    progress.set_phase("preflight");
    let plan = {
        let mut l = open(local, progress, "local node")?;
        let mut p = open(peer, progress, "peer")?;
        preflight::check(&mut l, &mut p, &opts.tables)?
    };
    progress.set_phase("comparing");
    progress.tables_total.store(
        plan.tables.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let ran = scheduler::run(
        Tasks {
            count: plan.tables.len(),
            ..Default::default()
        },
        opts.parallel.clamp(1, 16),
        &|| progress.cancelled(),
        || {
            Ok((
                open(local, progress, "local node")?,
                open(peer, progress, "peer")?,
            ))
        },
        |(l, p), i, _| {
            let t = &plan.tables[i];
            progress.set_table(Some(t.qualified()));
            // Each table is read in one snapshot of each node.
            for c in [&mut *l, &mut *p] {
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            }
            let r =
                overlap::compare(l, p, t).with_context(|| format!("comparing {}", t.qualified()));
            for c in [&mut *l, &mut *p] {
                let _ = c.batch_execute("ROLLBACK");
            }
            let r = r?;
            progress.rows_done.fetch_add(
                r.local_rows + r.remote_rows,
                std::sync::atomic::Ordering::Relaxed,
            );
            progress
                .tables_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(r)
        },
    );
    progress.set_table(None);
    if progress.cancelled() {
        return Err(cancelled("nothing was changed"));
    }
    if let Some(e) = ran.error {
        return Err(e);
    }
    let mut tables: Vec<TableOverlap> = ran.results.into_iter().flatten().collect();
    tables.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    progress.set_phase("complete");
    Ok(Analysis { tables })
}
