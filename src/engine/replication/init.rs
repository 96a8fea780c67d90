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
use super::{origin, slot};
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
    let mut ca = a
        .connect
        .connect()
        .context("connecting to the first node")?;
    let mut cb = b
        .connect
        .connect()
        .context("connecting to the second node")?;
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

    // A setup that is complete is left as it is (after proving it still carries changes); what
    // an unfinished one left is removed, and the init starts over.
    let pa = objects::present(&mut ca, &opts.setup)?;
    let pb = objects::present(&mut cb, &opts.setup)?;
    let complete = pb.0 == 1 && pa.3 && (opts.one_way || (pa.0 == 1 && pb.3));
    if complete {
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
        report.directions = vec![existing_direction(
            "A",
            "B",
            &names::slot_for(&opts.setup, &ib),
            dirs[0],
        )];
        if bidirectional {
            report.directions.push(existing_direction(
                "B",
                "A",
                &names::slot_for(&opts.setup, &ia),
                dirs[1],
            ));
        }
        return Ok(report);
    }
    if pa.1 + pa.2 + pb.1 + pb.2 > 0 || pa.3 || pb.3 {
        let mut removed = objects::remove_setup(&mut ca, &opts.setup, "A")?;
        removed.extend(objects::remove_setup(&mut cb, &opts.setup, "B")?);
        if !removed.is_empty() {
            say(format!(
                "removed what an earlier init of {} left: {}",
                opts.setup,
                removed.join(", ")
            ));
        }
        report.removed_first = removed;
    }

    let run = steps(
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
    );
    match run {
        Ok(()) => {
            progress.set_phase("complete");
            Ok(report)
        }
        Err(e) => {
            // The slots above all: an orphaned slot keeps the publisher's WAL forever.
            let mut removed = Vec::new();
            let mut left = Vec::new();
            for (c, node, label) in [(a, &ia, "A"), (b, &ib, "B")] {
                let _ = node;
                match c
                    .connect
                    .connect()
                    .map_err(anyhow::Error::from)
                    .and_then(|mut c| objects::remove_setup(&mut c, &opts.setup, label))
                {
                    Ok(r) => removed.extend(r),
                    Err(err) => left.push(format!(
                        "could not clean up on {label} ({}): run steep replication drop",
                        format!("{err:#}")
                    )),
                }
            }
            let mut what = if removed.is_empty() {
                "nothing was left behind".to_string()
            } else {
                format!("removed {}", removed.join(", "))
            };
            if !left.is_empty() {
                what = format!("{what}; {}", left.join("; "));
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
                    reasons.push(format!("node {label}: {}", format!("{e:#}")));
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

    progress.set_phase("publishing");
    objects::create_publication(ca, &opts.setup, tables)?;
    check()?;

    progress.set_phase("slot");
    let mut point_b = None;
    let point_a = match opts.from {
        Source::Snapshot => {
            let created = slot::create(a.params, &slot_a, true)?;
            say(format!(
                "slot {} on A, consistent point {}",
                created.name, created.consistent_point
            ));
            let point = created.consistent_point.clone();
            report.rows_copied = Some(copy(a, b, opts, progress, &created)?);
            point
        }
        Source::Empty => {
            let created = slot::create(a.params, &slot_a, true)?;
            let snapshot = created
                .snapshot
                .clone()
                .ok_or_else(|| anyhow!("the slot exported no snapshot"))?;
            require_empty(a.connect, tables, Some(&snapshot), "A")?;
            let point = created.consistent_point.clone();
            drop(created);
            require_empty(b.connect, tables, None, "B")?;
            point
        }
        Source::Merge => {
            // Both slots first: from here every write on either node is kept, and the merge's
            // own writes (under its origin) are left out of what they send.
            objects::create_publication(cb, &opts.setup, tables)?;
            let pa = slot::create(a.params, &slot_a, false)?.consistent_point;
            let pb = slot::create(b.params, &slot_b, false)?.consistent_point;
            say(format!(
                "slots {slot_a} on A ({pa}) and {slot_b} on B ({pb})"
            ));
            check()?;
            report.merge = Some(merge(ca, a, b, ia, opts, progress)?);
            check()?;
            quiet_during_merge(ca, cb, &slot_a, &slot_b, &publication)?;
            point_b = Some(pb);
            pa
        }
    };
    check()?;

    if bidirectional {
        progress.set_phase("keys");
        let seqs = keys::owned_sequences(ca, oids)?;
        for (node, assigned) in keys::apply(ca, cb, &opts.setup, &seqs, opts.key_step)? {
            report.key_scheme.push(KeyAssignment { node, assigned });
        }
        check()?;
    }

    progress.set_phase("subscribing");
    objects::create_subscription(
        cb,
        &SubscriptionSpec {
            name: &slot_a,
            conninfo: &opts.a_for_b,
            publication: &publication,
            slot: &slot_a,
            consistent_point: &point_a,
            origin_none: bidirectional,
        },
    )?;
    say(format!(
        "subscription {slot_a} on B takes A's changes from {point_a}"
    ));
    let mut points = vec![point_a];
    if bidirectional {
        check()?;
        let point_b = match point_b {
            Some(p) => p,
            None => {
                objects::create_publication(cb, &opts.setup, tables)?;
                // Only now, with B's copy loaded: the load itself must not flow back to A.
                let created_b = slot::create(b.params, &slot_b, opts.from == Source::Empty)?;
                if let Some(snapshot) = &created_b.snapshot {
                    require_empty(b.connect, tables, Some(snapshot), "B")?;
                }
                created_b.consistent_point.clone()
            }
        };
        say(format!("slot {slot_b} on B, consistent point {point_b}"));
        objects::create_subscription(
            ca,
            &SubscriptionSpec {
                name: &slot_b,
                conninfo: &opts.b_for_a,
                publication: &publication,
                slot: &slot_b,
                consistent_point: &point_b,
                origin_none: true,
            },
        )?;
        say(format!(
            "subscription {slot_b} on A takes B's changes from {point_b}"
        ));
        points.push(point_b);
    }
    check()?;

    progress.set_phase("checking");
    let ms = marker_check(ca, cb, ia, &opts.setup, opts.marker_timeout)?;
    report.directions.push(Direction {
        from: "A".into(),
        to: "B".into(),
        slot: slot_a.clone(),
        subscription: slot_a,
        consistent_point: points[0].clone(),
        marker_ms: ms,
    });
    if bidirectional {
        let ms = marker_check(cb, ca, ib, &opts.setup, opts.marker_timeout)?;
        report.directions.push(Direction {
            from: "B".into(),
            to: "A".into(),
            slot: slot_b.clone(),
            subscription: slot_b,
            consistent_point: points[1].clone(),
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
    let undecided: u64 = report.tables.iter().map(|t| t.undecided).sum();
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
    ca: &mut postgres::Client,
    cb: &mut postgres::Client,
    slot_a: &str,
    slot_b: &str,
    publication: &str,
) -> Result<()> {
    let mut busy = Vec::new();
    for (c, slot, label) in [(ca, slot_a, "A"), (cb, slot_b, "B")] {
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
                chunk_bytes: GenerateOptions::DEFAULT_CHUNK_BYTES,
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
    let mut c = node.connect()?;
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
    let marker: i64 = from
        .query_one(
            "INSERT INTO steep_repl.replication_markers (setup_name, node_tag, marker)
             VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000000)::int8)
             RETURNING marker",
            &[&setup, &from_node.tag],
        )
        .map_err(db_error)
        .context("writing a marker row")?
        .get(0);
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
