//! Replication init, step by step: preflight, publications, the slot-consistent copy (or merge,
//! or nothing for empty tables), subscriptions that begin exactly at each slot's consistent
//! point, the key scheme, and a marker row each way. A failure or cancel at any step removes
//! what the init made (slots first: a forgotten slot keeps WAL forever) and says what it removed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::keys::{self, Assigned};
use super::names::{self, NodeIdentity};
use super::objects::{self, SubscriptionSpec};
use super::preflight::{self, Role};
use super::{origin, slot, stream};
use crate::conn::ConnParams;
use crate::db_error::db_error;
use crate::engine::apply::{self, ApplyOptions, SchemaMode};
use crate::engine::catalog;
use crate::engine::compress::Compression;
use crate::engine::counters::Counters;
use crate::engine::error::cancelled;
use crate::engine::generate::{self, GenerateOptions, Selection, SlotSnapshot};
use crate::engine::merge::apply::{MergeOptions, MergeReport};
use crate::engine::merge::{ledger, strategy::Strategy};
use crate::engine::Connect;
use crate::sql::quote_literal;

/// Where the second node's data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A snapshot of the first node at its slot's consistent point, loaded into the second.
    Snapshot,
    /// Both nodes hold rows: merged first (steep merge), then replicated.
    Merge,
    /// The replicated tables are empty on both nodes.
    Empty,
}

impl std::str::FromStr for Source {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "snapshot" => Ok(Self::Snapshot),
            "merge" => Ok(Self::Merge),
            "empty" => Ok(Self::Empty),
            _ => bail!("invalid --from {s:?}: use snapshot, merge or empty"),
        }
    }
}

/// Init refused before anything changed: each reason with its fix (the CLI's exit 3).
#[derive(Debug)]
pub struct Refused(pub Vec<String>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replication cannot be set up, nothing was changed:\n  - {}",
            self.0.join("\n  - ")
        )
    }
}

impl std::error::Error for Refused {}

/// One node as the init reaches it: its engine connections and its connection parameters (for
/// the replication connection).
pub struct Node<'a> {
    pub connect: &'a dyn Connect,
    pub params: &'a ConnParams,
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub setup: String,
    pub from: Source,
    pub one_way: bool,
    /// The key scheme's step (bidirectional setups).
    pub key_step: i64,
    /// How the second node's server reaches the first (kept in its subscription), and the
    /// reverse.
    pub a_for_b: String,
    pub b_for_a: String,
    /// Where the copy is written while it moves (a directory of its own is made inside, and
    /// removed afterwards).
    pub work_dir: PathBuf,
    pub parallel: usize,
    /// Tables larger than this are copied in several block ranges.
    pub chunk_bytes: u64,
    pub pg_dump: Option<PathBuf>,
    pub pg_restore: Option<PathBuf>,
    pub schema: SchemaMode,
    /// How long a marker row may take to arrive.
    pub marker_timeout: Duration,
    /// --from merge: how conflicts are decided (not `ask`: nobody is asked during an init).
    pub merge_strategy: Option<Strategy>,
}

/// One direction of a setup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Direction {
    pub from: String,
    pub to: String,
    pub slot: String,
    pub subscription: String,
    pub consistent_point: String,
    /// How long the marker row took to arrive.
    pub marker_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitReport {
    pub setup: String,
    pub from: Source,
    pub bidirectional: bool,
    /// The setup was complete and working already: nothing was changed.
    pub already_replicating: bool,
    /// What an earlier, unfinished init had left and this one removed first.
    pub removed_first: Vec<String>,
    pub tables: Vec<String>,
    pub directions: Vec<Direction>,
    pub rows_copied: Option<u64>,
    /// --from merge: the merge's report.
    pub merge: Option<MergeReport>,
    pub key_scheme: Vec<KeyAssignment>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyAssignment {
    pub node: String,
    #[serde(flatten)]
    pub assigned: Assigned,
}

pub const SEQUENCES_NOTE: &str = "PostgreSQL does not replicate sequences: each node numbers new \
     keys itself (the key scheme keeps them apart)";

/// A connection to a node for the init's own statements, its settings pinned.
fn open(node: &dyn Connect, what: &str) -> Result<postgres::Client> {
    let mut c = node
        .connect()
        .with_context(|| format!("connecting to {what}"))?;
    c.batch_execute(names::PINNED)?;
    Ok(c)
}

/// Set up replication between `a` (the node whose data wins for --from snapshot) and `b`.
/// `say` reports steps as they happen.
pub fn init(
    a: &Node,
    b: &Node,
    opts: &InitOptions,
    progress: &Counters,
    say: &(dyn Fn(String) + Sync),
) -> Result<InitReport> {
    names::check_setup(&opts.setup)?;
    progress.set_phase("preflight");
    let mut ca = open(a.connect, "the first node")?;
    let mut cb = open(b.connect, "the second node")?;
    progress.watch_client(&ca);
    progress.watch_client(&cb);
    let ia = NodeIdentity::read(&mut ca)?;
    let ib = NodeIdentity::read(&mut cb)?;
    let bidirectional = !opts.one_way;
    preflight_both(&mut ca, &mut cb, &ia, &ib, a, b, opts)?;
    let (tables, oids) = replicated_tables(&mut ca)?;

    let mut report = InitReport {
        setup: opts.setup.clone(),
        from: opts.from,
        bidirectional,
        already_replicating: false,
        removed_first: Vec::new(),
        tables: tables.clone(),
        directions: Vec::new(),
        rows_copied: None,
        merge: None,
        key_scheme: Vec::new(),
        notes: vec![SEQUENCES_NOTE.to_string()],
    };

    // What exists of the setup on either node decides: objects this pairing and shape would
    // not make (another peer's, or the setup made the other way) are never touched; a complete
    // setup is checked and left; a live one of another shape is refused; what an unfinished init
    // left (it never reached its marker rows) is removed and the init starts over.
    let pa = objects::present(&mut ca, &opts.setup)?;
    let pb = objects::present(&mut cb, &opts.setup)?;
    let slot_on_a = names::slot_for(&opts.setup, &ib);
    let slot_on_b = names::slot_for(&opts.setup, &ia);
    // A subscription is named like the slot that feeds it.
    let (sub_on_a, sub_on_b) = (slot_on_b.clone(), slot_on_a.clone());
    // (slots, subscriptions) this init makes on each node.
    fn both_ways(bidirectional: bool, name: &str) -> Vec<&str> {
        if bidirectional {
            vec![name]
        } else {
            vec![]
        }
    }
    let expect_a = (
        vec![slot_on_a.as_str()],
        both_ways(bidirectional, &sub_on_a),
    );
    let expect_b = (
        both_ways(bidirectional, &slot_on_b),
        vec![sub_on_b.as_str()],
    );
    let mut foreign = Vec::new();
    for (p, (slots, subs), label) in [(&pa, &expect_a, "A"), (&pb, &expect_b, "B")] {
        for s in p.slots.iter().filter(|s| !slots.contains(&s.as_str())) {
            foreign.push(format!("slot {s} on {label}"));
        }
        for (s, _) in p
            .subscriptions
            .iter()
            .filter(|(s, _)| !subs.contains(&s.as_str()))
        {
            foreign.push(format!("subscription {s} on {label}"));
        }
    }
    // A subscription whose feeding slot is not on the other node subscribes to someone else.
    if pa.subscriptions.iter().any(|(s, _)| *s == sub_on_a) && !pb.slots.contains(&slot_on_b) {
        foreign.push(format!("subscription {sub_on_a} on A (fed from elsewhere)"));
    }
    if pb.subscriptions.iter().any(|(s, _)| *s == sub_on_b) && !pa.slots.contains(&slot_on_a) {
        foreign.push(format!("subscription {sub_on_b} on B (fed from elsewhere)"));
    }
    if !foreign.is_empty() {
        bail!(Refused(vec![format!(
            "setup {} holds objects this {} init of A and B would not make: {}; they belong to \
             another pairing or were made the other way: give this setup another --name, or \
             remove that one with steep replication drop first",
            opts.setup,
            if bidirectional {
                "bidirectional"
            } else {
                "one-way"
            },
            foreign.join(", ")
        )]));
    }
    let has_sub = |p: &objects::Present, name: &str| p.subscriptions.iter().any(|(s, _)| s == name);
    let complete = has_sub(&pb, &sub_on_b) && (!bidirectional || has_sub(&pa, &sub_on_a));
    if complete {
        if pa
            .subscriptions
            .iter()
            .chain(&pb.subscriptions)
            .any(|(_, on)| !on)
        {
            bail!(Refused(vec![format!(
                "setup {} exists with a disabled subscription: enable it (ALTER SUBSCRIPTION ... \
                 ENABLE), or remove the setup with steep replication drop and init again",
                opts.setup
            )]));
        }
        progress.set_phase("checking");
        let mut dirs = vec![marker_check(
            &mut ca,
            &mut cb,
            &ia,
            &opts.setup,
            opts.marker_timeout,
        )?];
        if bidirectional {
            dirs.push(marker_check(
                &mut cb,
                &mut ca,
                &ib,
                &opts.setup,
                opts.marker_timeout,
            )?);
        }
        report.already_replicating = true;
        report.directions = vec![existing_direction("A", "B", &slot_on_a, dirs[0])];
        if bidirectional {
            report
                .directions
                .push(existing_direction("B", "A", &slot_on_b, dirs[1]));
        }
        return Ok(report);
    }
    let live = pa
        .subscriptions
        .iter()
        .chain(&pb.subscriptions)
        .any(|(_, on)| *on);
    if live && (pa.markers || pb.markers) {
        bail!(Refused(vec![format!(
            "setup {} replicates already, one way: to replicate both ways, remove it with steep \
             replication drop and init again",
            opts.setup
        )]));
    }
    if pa.anything() || pb.anything() {
        let removal = objects::remove_setup(&mut [(&mut ca, "A"), (&mut cb, "B")], &opts.setup);
        if !removal.failed.is_empty() {
            bail!(
                "removing what an earlier init of {} left failed: {}",
                opts.setup,
                removal.failed.join("; ")
            );
        }
        if !removal.removed.is_empty() {
            say(format!(
                "removed what an earlier init of {} left: {}",
                opts.setup,
                removal.removed.join(", ")
            ));
        }
        report.removed_first = removal.removed;
    }

    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        steps(
            &mut ca,
            &mut cb,
            &ia,
            &ib,
            a,
            b,
            opts,
            progress,
            say,
            &tables,
            &oids,
            &mut report,
        )
    }))
    .unwrap_or_else(|_| {
        Err(anyhow!(
            "replication init stopped on an internal error (a panic)"
        ))
    });
    match run {
        Ok(()) => {
            progress.set_phase("complete");
            Ok(report)
        }
        Err(e) => {
            // The slots above all: an orphaned slot keeps the publisher's WAL forever. On fresh
            // connections: the init's own may be mid-statement or broken.
            let mut failed = Vec::new();
            let ca = open(a.connect, "the first node");
            let cb = open(b.connect, "the second node");
            let removal = match (ca, cb) {
                (Ok(mut ca), Ok(mut cb)) => {
                    objects::remove_setup(&mut [(&mut ca, "A"), (&mut cb, "B")], &opts.setup)
                }
                (Ok(mut c), Err(err)) | (Err(err), Ok(mut c)) => {
                    failed.push(format!("{err:#}"));
                    objects::remove_setup(&mut [(&mut c, "the node reached")], &opts.setup)
                }
                (Err(x), Err(y)) => {
                    failed.push(format!("{x:#}; {y:#}"));
                    objects::Removal::default()
                }
            };
            failed.extend(removal.failed);
            let mut what = if removal.removed.is_empty() {
                "nothing was left behind".to_string()
            } else {
                format!("removed {}", removal.removed.join(", "))
            };
            if !failed.is_empty() {
                what = format!(
                    "{what}; not cleaned up ({}): run steep replication drop",
                    failed.join("; ")
                );
            }
            Err(e.context(format!("replication init of {} failed; {what}", opts.setup)))
        }
    }
}

fn existing_direction(from: &str, to: &str, name: &str, marker_ms: u64) -> Direction {
    Direction {
        from: from.into(),
        to: to.into(),
        slot: name.into(),
        subscription: name.into(),
        consistent_point: String::new(),
        marker_ms,
    }
}

fn preflight_both(
    ca: &mut postgres::Client,
    cb: &mut postgres::Client,
    ia: &NodeIdentity,
    ib: &NodeIdentity,
    a: &Node,
    b: &Node,
    opts: &InitOptions,
) -> Result<()> {
    let bidirectional = !opts.one_way;
    let mut reasons = Vec::new();
    if ia.same_as(ib) {
        bail!(Refused(vec![
            "both connections reach the same database: give the other node with --peer".into()
        ]));
    }
    for (c, label) in [(&mut *ca, "A"), (&mut *cb, "B")] {
        let has: bool = c
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c
                                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = 'steep_repl' AND c.relname = 'replication_markers')",
                &[],
            )?
            .get(0);
        if !has {
            reasons.push(format!(
                "node {label}: steep_repl {} or newer is not installed in this database: run `steep \
                 init` against it",
                super::EXTENSION_VERSION
            ));
        }
    }
    if bidirectional {
        for (n, label) in [(ia, "A"), (ib, "B")] {
            if !n.has_origin_option() {
                reasons.push(format!(
                    "node {label} runs PostgreSQL {}: bidirectional replication needs 16 or newer \
                     on both nodes (the subscription option origin = none keeps a change from \
                     being sent back where it came from); use --one-way",
                    n.server_version_num / 10000
                ));
            }
        }
    }
    if opts.from == Source::Merge && !(ia.has_origin_option() && ib.has_origin_option()) {
        reasons.push(
            "--from merge needs PostgreSQL 16 or newer on both nodes (the merge's own writes are \
             kept out of replication by their origin)"
                .into(),
        );
    }
    let ra = Role {
        publishes: true,
        subscribes: bidirectional,
    };
    let rb = Role {
        publishes: bidirectional,
        subscribes: true,
    };
    for (c, n, role, label) in [(&mut *ca, ia, ra, "A"), (&mut *cb, ib, rb, "B")] {
        for f in preflight::check(c, n, role)? {
            reasons.push(format!("node {label}: {}: {}", f.problem, f.fix));
        }
    }
    if reasons.is_empty() {
        for (node, publishes, label) in [(a, true, "A"), (b, bidirectional, "B")] {
            if publishes {
                if let Err(e) = slot::replication_connection(node.params) {
                    reasons.push(format!("node {label}: {e:#}"));
                }
            }
        }
    }
    if !reasons.is_empty() {
        bail!(Refused(reasons));
    }
    Ok(())
}

/// The tables replicated: every user table of the first node (quoted qualified names, oids).
/// Tables an UPDATE or DELETE could not be published for are refused with the fix.
fn replicated_tables(c: &mut postgres::Client) -> Result<(Vec<String>, Vec<i64>)> {
    let (_, tables) = catalog::shapes_and_tables(c)?;
    if tables.is_empty() {
        bail!(Refused(vec![
            "the first node has no tables to replicate".into()
        ]));
    }
    let oids: Vec<i64> = tables.iter().map(|t| t.oid).collect();
    let bad = preflight::without_replica_identity(c, &oids)?;
    if !bad.is_empty() {
        bail!(Refused(vec![format!(
            "{} {} no primary key and no replica identity: PostgreSQL would refuse UPDATE and \
             DELETE on {} once published; add a primary key, or ALTER TABLE ... REPLICA IDENTITY \
             FULL (every column identifies the row)",
            bad.join(", "),
            if bad.len() == 1 { "has" } else { "have" },
            if bad.len() == 1 { "it" } else { "them" },
        )]));
    }
    Ok((tables.iter().map(|t| t.qualified()).collect(), oids))
}

#[allow(clippy::too_many_arguments)]
fn steps(
    ca: &mut postgres::Client,
    cb: &mut postgres::Client,
    ia: &NodeIdentity,
    ib: &NodeIdentity,
    a: &Node,
    b: &Node,
    opts: &InitOptions,
    progress: &Counters,
    say: &(dyn Fn(String) + Sync),
    tables: &[String],
    oids: &[i64],
    report: &mut InitReport,
) -> Result<()> {
    let check = || -> Result<()> {
        if progress.cancelled() {
            return Err(cancelled("what the init made is removed"));
        }
        Ok(())
    };
    let bidirectional = !opts.one_way;
    let publication = names::publication(&opts.setup);
    let slot_a = names::slot_for(&opts.setup, ib);
    let slot_b = names::slot_for(&opts.setup, ia);
    // Changes a node received are not sent on: both ways, and for a merge, whose writes carry
    // origins of their own.
    let origin_none = bidirectional || opts.from == Source::Merge;
    // A bidirectional setup's keys: after the copy (which sets B's sequences to A's values) and
    // B's slot, after the merge for a merge (which moves sequences itself), always before any
    // subscription applies inserts.
    let key_scheme = |ca: &mut postgres::Client,
                      cb: &mut postgres::Client,
                      report: &mut InitReport|
     -> Result<()> {
        if bidirectional {
            progress.set_phase("keys");
            let seqs = keys::owned_sequences(ca, oids)?;
            for (node, assigned) in keys::apply(ca, cb, &opts.setup, &seqs, opts.key_step)? {
                report.key_scheme.push(KeyAssignment { node, assigned });
            }
        }
        Ok(())
    };

    // The publications before the slots: pgoutput reads them as of each change it decodes.
    progress.set_phase("publishing");
    objects::create_publication(ca, &opts.setup, tables)?;
    if bidirectional {
        objects::create_publication(cb, &opts.setup, tables)?;
    }
    check()?;

    progress.set_phase("slot");
    let (point_a, point_b) = match opts.from {
        Source::Snapshot | Source::Empty => {
            let created = slot::create(a.params, &slot_a, true)?;
            say(format!(
                "slot {} on A, consistent point {}",
                created.name, created.consistent_point
            ));
            let point = created.consistent_point.clone();
            if opts.from == Source::Snapshot {
                report.rows_copied = Some(if opts.schema == SchemaMode::Create {
                    // B's tables made from A's schema: a snapshot through files, applied.
                    copy(a, b, opts, progress, &created)?
                } else {
                    let snapshot = created
                        .snapshot
                        .clone()
                        .ok_or_else(|| anyhow!("the slot exported no snapshot"))?;
                    stream::stream(
                        a.connect,
                        b.connect,
                        &snapshot,
                        opts.parallel,
                        opts.chunk_bytes,
                        progress,
                    )?
                });
                drop(created);
            } else {
                let snapshot = created
                    .snapshot
                    .clone()
                    .ok_or_else(|| anyhow!("the slot exported no snapshot"))?;
                require_empty(a.connect, tables, Some(&snapshot), "A")?;
                drop(created);
                if opts.one_way {
                    require_empty(b.connect, tables, None, "B")?;
                }
            }
            check()?;
            // B's slot right after B's data is in place (the load must not flow back to A),
            // before anything replicates into B.
            let point_b = if bidirectional {
                let created = slot::create(b.params, &slot_b, opts.from == Source::Empty)?;
                if let Some(snapshot) = &created.snapshot {
                    require_empty(b.connect, tables, Some(snapshot), "B")?;
                }
                say(format!(
                    "slot {slot_b} on B, consistent point {}",
                    created.consistent_point
                ));
                Some(created.consistent_point.clone())
            } else {
                None
            };
            check()?;
            key_scheme(ca, cb, report)?;
            (point, point_b)
        }
        Source::Merge => {
            // The slots first: from here every write on either node is kept, and the merge's
            // own writes (under their origins) are left out of what the slots send.
            let pa = slot::create(a.params, &slot_a, false)?.consistent_point;
            let pb = if bidirectional {
                Some(slot::create(b.params, &slot_b, false)?.consistent_point)
            } else {
                None
            };
            say(format!("slots created at {pa} (A) and {pb:?} (B)"));
            check()?;
            report.merge = Some(merge(ca, a, b, ia, opts, progress)?);
            check()?;
            key_scheme(ca, cb, report)?;
            // Nobody wrote meanwhile, up to now (after the key scheme: an insert under the old
            // scheme could collide).
            let mut watched = vec![(&mut *ca, slot_a.as_str(), "A")];
            if bidirectional {
                watched.push((&mut *cb, slot_b.as_str(), "B"));
            }
            quiet_during_merge(watched, &publication)?;
            (pa, pb)
        }
    };
    check()?;

    progress.set_phase("subscribing");
    objects::create_subscription(
        cb,
        &SubscriptionSpec {
            name: &slot_a,
            conninfo: &opts.a_for_b,
            publication: &publication,
            slot: &slot_a,
            consistent_point: &point_a,
            origin_none,
        },
    )?;
    say(format!(
        "subscription {slot_a} on B takes A's changes from {point_a}"
    ));
    if let Some(point_b) = &point_b {
        check()?;
        objects::create_subscription(
            ca,
            &SubscriptionSpec {
                name: &slot_b,
                conninfo: &opts.b_for_a,
                publication: &publication,
                slot: &slot_b,
                consistent_point: point_b,
                origin_none: true,
            },
        )?;
        say(format!(
            "subscription {slot_b} on A takes B's changes from {point_b}"
        ));
    }
    check()?;

    progress.set_phase("checking");
    let ms = marker_check(ca, cb, ia, &opts.setup, opts.marker_timeout)?;
    report.directions.push(Direction {
        from: "A".into(),
        to: "B".into(),
        slot: slot_a.clone(),
        subscription: slot_a,
        consistent_point: point_a,
        marker_ms: ms,
    });
    if let Some(point_b) = point_b {
        let ms = marker_check(cb, ca, ib, &opts.setup, opts.marker_timeout)?;
        report.directions.push(Direction {
            from: "B".into(),
            to: "A".into(),
            slot: slot_b.clone(),
            subscription: slot_b,
            consistent_point: point_b,
            marker_ms: ms,
        });
    }
    Ok(())
}

/// --from merge: the nodes merged with the strategy (the merge recorded on A as `steep merge
/// run` records it), every write under the merge's origins.
fn merge(
    ca: &mut postgres::Client,
    a: &Node,
    b: &Node,
    ia: &NodeIdentity,
    opts: &InitOptions,
    progress: &Counters,
) -> Result<MergeReport> {
    let strategy = opts
        .merge_strategy
        .clone()
        .ok_or_else(|| anyhow!("--from merge needs --strategy"))?;
    progress.set_phase("merging");
    let mut mo = MergeOptions {
        merge_id: String::new(),
        tables: Vec::new(),
        strategy,
        per_table: Vec::new(),
        keep_one_sided: false,
        dry_run: false,
        role: ia.role.clone(),
    };
    mo.merge_id = ledger::record_start(ca, &b.params.redacted(), &mo, "replication init")?;
    let result = crate::engine::merge::apply::merge(
        &origin::Tagged(a.connect),
        &origin::Tagged(b.connect),
        &mo,
        progress,
    );
    let _ = ledger::record_end(ca, &mo.merge_id, &result);
    for c in [a, b] {
        if let Ok(mut c) = c.connect.connect() {
            let _ = origin::drop_unused(&mut c);
        }
    }
    let report = result?;
    let undecided = report.totals().undecided;
    if undecided > 0 {
        bail!(
            "the merge {} left {undecided} conflicts undecided: decide them with steep merge run \
             --resume {}, then run replication init again",
            mo.merge_id,
            mo.merge_id
        );
    }
    Ok(report)
}

/// Nobody wrote to the replicated tables on either node while the merge ran (between the slots'
/// consistent points and now): such a write could reach the other node both through the merge
/// and through replication. Refused, with what to do, when someone did.
fn quiet_during_merge(
    watched: Vec<(&mut postgres::Client, &str, &str)>,
    publication: &str,
) -> Result<()> {
    let mut busy = Vec::new();
    for (c, slot, label) in watched {
        let now: String = c
            .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])?
            .get(0);
        let n = origin::unmarked_changes(c, slot, &now, publication)?;
        if n > 0 {
            busy.push(format!("{n} changes on {label}"));
        }
    }
    if !busy.is_empty() {
        bail!(
            "rows of the replicated tables were written while the merge ran ({}): the \
             merge is kept (both nodes hold its rows), but replication cannot start from it \
             without losing or repeating those writes; stop writing to these tables on both \
             nodes and run replication init --from merge again (it merges only what differs)",
            busy.join(", ")
        );
    }
    Ok(())
}

/// The slot-consistent copy: A's tables at the slot's exported snapshot into a snapshot
/// directory, applied to B; the directory is removed afterwards. Returns the rows loaded.
fn copy(
    a: &Node,
    b: &Node,
    opts: &InitOptions,
    progress: &Counters,
    created: &slot::CreatedSlot,
) -> Result<u64> {
    let snapshot = created
        .snapshot
        .clone()
        .ok_or_else(|| anyhow!("the slot exported no snapshot"))?;
    let id = crate::engine::new_snapshot_id();
    let dir = opts.work_dir.join(&id);
    let result = (|| {
        progress.set_phase("copying");
        generate::generate(
            a.connect,
            &GenerateOptions {
                output: dir.clone(),
                snapshot_id: id.clone(),
                mode: "client".into(),
                run: format!("replication init pid {}", std::process::id()),
                compression: Compression::NONE,
                parallel: opts.parallel,
                pg_dump: opts.pg_dump.clone(),
                chunk_bytes: opts.chunk_bytes,
                selection: Selection::default(),
                slot: Some(SlotSnapshot {
                    slot: created.name.clone(),
                    consistent_point: created.consistent_point.clone(),
                    snapshot,
                }),
            },
            progress,
        )?;
        progress.set_phase("loading");
        let summary = apply::apply(
            b.connect,
            &ApplyOptions {
                input: dir.clone(),
                parallel: opts.parallel,
                verify_checksums: false,
                schema: opts.schema,
                resume: false,
                pg_restore: opts.pg_restore.clone(),
                fire_triggers: false,
                no_owner: false,
                no_privileges: false,
            },
            progress,
        )?;
        Ok(summary.rows_loaded)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Every replicated table is empty on this node (under `snapshot` when given: at a slot's
/// consistent point).
fn require_empty(
    node: &dyn Connect,
    tables: &[String],
    snapshot: Option<&str>,
    label: &str,
) -> Result<()> {
    let mut c = open(node, label)?;
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    if let Some(s) = snapshot {
        c.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", quote_literal(s)))
            .map_err(db_error)?;
    }
    let mut full = Vec::new();
    for t in tables {
        let any: bool = c
            .query_one(&format!("SELECT EXISTS (SELECT FROM {t})"), &[])
            .map_err(db_error)?
            .get(0);
        if any {
            full.push(t.clone());
        }
    }
    c.batch_execute("COMMIT")?;
    if !full.is_empty() {
        bail!(
            "--from empty: {} {} rows on {label}: use --from snapshot (A's rows replace B's) or \
             --from merge (both nodes' rows are kept)",
            full.join(", "),
            if full.len() == 1 { "holds" } else { "hold" }
        );
    }
    Ok(())
}

/// Write a marker row on `from` and wait until it arrives on `to`; returns the milliseconds it
/// took.
fn marker_check(
    from: &mut postgres::Client,
    to: &mut postgres::Client,
    from_node: &NodeIdentity,
    setup: &str,
    timeout: Duration,
) -> Result<u64> {
    let marker = (crate::engine::unique_bits(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos(),
    ) >> 1) as i64;
    from.execute(
        "INSERT INTO steep_repl.replication_markers (setup_name, node_tag, marker)
         VALUES ($1, $2, $3)",
        &[&setup, &from_node.tag, &marker],
    )
    .map_err(db_error)
    .context("writing a marker row")?;
    let started = Instant::now();
    loop {
        let arrived = to
            .query_opt(
                "SELECT FROM steep_repl.replication_markers
                  WHERE setup_name = $1 AND node_tag = $2 AND marker = $3",
                &[&setup, &from_node.tag, &marker],
            )
            .map_err(db_error)?
            .is_some();
        if arrived {
            return Ok(started.elapsed().as_millis() as u64);
        }
        if started.elapsed() > timeout {
            let errors: Option<String> = to
                .query_opt(
                    "SELECT string_agg(name || ': ' || coalesce(detail->>'apply_error_count', '?') \
                            || ' apply errors', '; ')
                       FROM steep_repl.replication_status() WHERE kind = 'subscription'",
                    &[],
                )
                .ok()
                .flatten()
                .and_then(|r| r.get(0));
            bail!(
                "a marker row written on {} did not arrive within {} s ({}): look at the \
                 subscriber's server log (connection refused by pg_hba.conf? a password the \
                 subscriber's server does not have?)",
                from_node.tag,
                timeout.as_secs(),
                errors.unwrap_or_else(|| "no subscription status".into())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
