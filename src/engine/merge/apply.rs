//! Merge, part two: make both nodes hold the same rows, deciding every conflict.
//!
//! Tables go in foreign-key order (parents first; tables in a cycle together, one unit), each unit
//! in one transaction per node. Inside it, the unit's tables are locked against writes on both
//! nodes (SHARE ROW EXCLUSIVE: readers go on) before the transaction's snapshot is taken, and
//! then compared again: what is written is decided on the rows as they are under the lock, so a
//! change made since an earlier analysis is never overwritten — the table is simply analysed
//! again — and a rerun finds what an earlier run did (idempotent) or did not do (resumable).
//! Rows are upserted, never deleted (no cascade fires); user triggers are kept from firing by the
//! owner inside the transaction (`triggers`); foreign keys stay enforced, deferred inside a cycle.
//! A cycle whose keys are NOT DEFERRABLE needs `session_replication_role = replica` (a superuser,
//! or a role granted SET on it), with foreign keys then checked here before commit. Sequences
//! numbering a merged column are moved past its largest value on both nodes.
//!
//! The peer commits first, then the local node, whose transaction also marks the unit's tables
//! merged (`ledger`): a failure in between leaves the tables marked `committing`, reported as
//! merged on the peer only; the next run (`--resume`) completes them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::catalog::{self, TableInfo};
use crate::engine::counters::Counters;
use crate::engine::error::cancelled;
use crate::engine::fkorder::load_units;
use crate::engine::merge::ledger::{self, AuditRow, Decisions};
use crate::engine::merge::overlap::{self, Differing};
use crate::engine::merge::rows::{self, KeySet, Modified, Staged};
use crate::engine::merge::strategy::{remote_is_newer, Resolution, Strategy};
use crate::engine::merge::{open, preflight, Refused};
use crate::engine::triggers;
use crate::engine::Connect;

/// Each row's "last modified" value on one node, by key.
type Values = HashMap<String, Option<i64>>;

/// One table of a unit written: its report, audit rows, and the staging tables holding what
/// was written on the local node and on the peer.
type TableDone = (TableMerge, Vec<AuditRow>, Vec<Staged>, Vec<Staged>);

/// Keys of undecided conflicts kept per table for the report.
const UNDECIDED_SHOWN: usize = 100;

#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The merge's id: its `merges` row must exist on the local node.
    pub merge_id: String,
    /// `schema.table` or `table` names; none: every table of the local node.
    pub tables: Vec<String>,
    pub strategy: Strategy,
    /// Per-table strategies (a name as in `tables`), the last one given winning.
    pub per_table: Vec<(String, Strategy)>,
    /// Leave rows one node lacks where they are (default: copy them to the other node).
    pub keep_one_sided: bool,
    /// Count what would change, write nothing.
    pub dry_run: bool,
    /// Who decides in `decided_by` for a strategy (the role running the merge).
    pub role: String,
}

impl MergeOptions {
    /// The options as the merge's row keeps them (`merges.options`), which the job and a
    /// resume read back with `from_stored`.
    pub fn to_stored(&self) -> serde_json::Value {
        serde_json::json!({
            "strategy": self.strategy.to_string(),
            "per_table": self.per_table.iter()
                .map(|(t, s)| serde_json::json!({"table": t, "strategy": s.to_string()}))
                .collect::<Vec<_>>(),
            "keep_one_sided": self.keep_one_sided,
            "dry_run": self.dry_run,
        })
    }

    /// The options of merge `merge_id` from its row: its tables and `options`; `role` runs it.
    pub fn from_stored(
        merge_id: &str,
        tables: Vec<String>,
        options: &serde_json::Value,
        role: &str,
    ) -> Result<Self> {
        let strategy: Strategy = options["strategy"]
            .as_str()
            .unwrap_or("ask")
            .parse()
            .map_err(anyhow::Error::msg)?;
        let mut per_table = Vec::new();
        for e in options["per_table"].as_array().into_iter().flatten() {
            let (Some(t), Some(s)) = (e["table"].as_str(), e["strategy"].as_str()) else {
                bail!("options.per_table entries are {{\"table\": T, \"strategy\": S}}: {e}");
            };
            per_table.push((t.to_string(), s.parse().map_err(anyhow::Error::msg)?));
        }
        Ok(Self {
            merge_id: merge_id.to_string(),
            tables,
            strategy,
            per_table,
            keep_one_sided: options["keep_one_sided"].as_bool().unwrap_or(false),
            dry_run: options["dry_run"].as_bool().unwrap_or(false),
            role: role.to_string(),
        })
    }

    /// The tables (names as given) whose strategy is ask: an empty list is every table.
    pub fn ask_tables(&self) -> Option<Vec<String>> {
        if self.strategy == Strategy::Ask {
            Some(self.tables.clone())
        } else {
            let v: Vec<String> = self
                .per_table
                .iter()
                .filter(|(_, s)| *s == Strategy::Ask)
                .map(|(t, _)| t.clone())
                .collect();
            (!v.is_empty()).then_some(v)
        }
    }

    /// The strategy of table `schema`.`table`: its own (the last one given), else the merge's.
    pub fn strategy_for(&self, schema: &str, table: &str) -> &Strategy {
        self.per_table
            .iter()
            .rev()
            .find(|(n, _)| preflight::chosen(schema, table, std::slice::from_ref(n)))
            .map_or(&self.strategy, |(_, s)| s)
    }

    /// Whether the strategy of table `schema`.`table` is ask.
    pub fn asks_for(&self, schema: &str, table: &str) -> bool {
        self.strategy_for(schema, table) == &Strategy::Ask
    }
}

/// What a merge did (or, in a dry run, would do) to one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableMerge {
    pub schema: String,
    pub table: String,
    pub strategy: String,
    /// `merged`, `unchanged` (nothing differed), `already merged` (an earlier run of this
    /// merge did it), or `dry run`.
    pub state: String,
    #[serde(rename = "match")]
    pub matched: u64,
    pub conflict: u64,
    pub local_only: u64,
    pub remote_only: u64,
    /// Rows written on the local node: new keys, and conflicts the peer's row won.
    pub local_inserted: u64,
    pub local_updated: u64,
    /// Rows written on the peer.
    pub remote_inserted: u64,
    pub remote_updated: u64,
    /// Conflicts (or one-sided rows) left as they are, and recorded.
    pub skipped: u64,
    /// Conflicts nobody decided (ask without an answer, or a decision made on rows that changed
    /// since): left as they are on both nodes, and not recorded.
    pub undecided: u64,
    pub undecided_keys: Vec<String>,
    /// Sequences moved past the merged keys, on either node.
    pub sequences: Vec<String>,
}

impl TableMerge {
    pub fn qualified(&self) -> String {
        crate::sql::qualified(&self.schema, &self.table)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeReport {
    pub merge_id: String,
    pub dry_run: bool,
    pub tables: Vec<TableMerge>,
    /// Tables an earlier run of this merge left merged on the peer only (now completed).
    pub completed_from_peer_only: Vec<String>,
}

/// A merge's totals, as its `merges` row keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rows written on either node.
    pub rows: u64,
    pub conflicts: u64,
    /// Conflicts left for a decision.
    pub undecided: u64,
}

impl MergeReport {
    pub fn totals(&self) -> Totals {
        self.tables.iter().fold(Totals::default(), |t, m| Totals {
            rows: t.rows
                + m.local_inserted
                + m.local_updated
                + m.remote_inserted
                + m.remote_updated,
            conflicts: t.conflicts + m.conflict,
            undecided: t.undecided + m.undecided,
        })
    }
}

/// Whether the role may set `session_replication_role` on this node.
fn may_replica(c: &mut postgres::Client) -> Result<bool> {
    Ok(c.query_one(
        "SELECT pg_catalog.current_setting('is_superuser')::bool
             OR pg_catalog.has_parameter_privilege('session_replication_role', 'SET')",
        &[],
    )?
    .get(0))
}

/// A unit of tables merged together, and how.
struct Unit {
    tables: Vec<usize>,
    /// A cycle with NOT DEFERRABLE foreign keys: written with foreign keys off, checked here.
    replica: bool,
    /// Tables that reference each other: constraints deferred to the end of the transaction.
    cycle: bool,
}

/// Everything decided before the first write: refusals listed together, so a refusal changes
/// nothing.
fn plan(
    l: &mut postgres::Client,
    p: &mut postgres::Client,
    opts: &MergeOptions,
) -> Result<(Vec<TableInfo>, Vec<Strategy>, Vec<Unit>)> {
    let tables = preflight::check(l, p, &opts.tables)?.tables;
    let strategies: Vec<Strategy> = tables
        .iter()
        .map(|t| opts.strategy_for(&t.schema, &t.name).clone())
        .collect();
    let mut problems = Vec::new();
    for (n, _) in &opts.per_table {
        if !tables
            .iter()
            .any(|t| preflight::chosen(&t.schema, &t.name, std::slice::from_ref(n)))
        {
            problems.push(format!(
                "--table {n}:STRATEGY names no table this merge covers"
            ));
        }
    }
    let mut commit_ts = false;
    for (t, s) in tables.iter().zip(&strategies) {
        match s {
            Strategy::LastModifiedColumn(c) => {
                if let Err(e) = rows::check_modified(t, &Modified::Column(c)) {
                    problems.push(e.to_string());
                }
            }
            Strategy::LastModified => commit_ts = true,
            _ => {}
        }
    }
    if commit_ts {
        for (c, which) in [(&mut *l, "local node"), (&mut *p, "peer")] {
            let on: String = c
                .query_one(
                    "SELECT pg_catalog.current_setting('track_commit_timestamp')",
                    &[],
                )?
                .get(0);
            if on != "on" {
                problems.push(format!(
                    "last-modified without a column compares commit timestamps, and the {which} \
                     does not keep them: set track_commit_timestamp = on there and restart it \
                     (rows written before have none), or use last-modified:COLUMN"
                ));
            }
        }
    }
    let names: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
    if !opts.dry_run {
        for (c, which) in [(&mut *l, "local node"), (&mut *p, "peer")] {
            let mut cannot: Vec<String> = c
                .query(
                    "SELECT n FROM pg_catalog.unnest($1::text[]) AS n
                      WHERE NOT (pg_catalog.has_table_privilege(n, 'INSERT')
                                 AND pg_catalog.has_table_privilege(n, 'UPDATE'))
                      ORDER BY 1",
                    &[&names],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !cannot.is_empty() {
                cannot.sort();
                problems.push(format!(
                    "this role may not write (INSERT and UPDATE) on the {which}: {}; get those \
                     privileges, or leave the tables out with --table",
                    cannot.join(", ")
                ));
            }
            let unowned = triggers::unowned_with_triggers(c, &names)?;
            if !unowned.is_empty() {
                problems.push(format!(
                    "user triggers would fire on the {which} while the merge writes, and only a \
                     table's owner can keep them from firing: {}; merge as the owner",
                    unowned.join("; ")
                ));
            }
        }
    }
    // Foreign keys between the tables (a partitioned table stands for its partitions).
    let fks = catalog::foreign_keys(l)?;
    let leaves: HashMap<i64, Vec<i64>> = {
        let mut m: HashMap<i64, Vec<i64>> = HashMap::new();
        for r in l.query(
            "SELECT p.oid::int8, t.relid::int8 FROM pg_catalog.pg_class p,
                    pg_catalog.pg_partition_tree(p.oid) t
              WHERE p.relkind = 'p' AND t.isleaf",
            &[],
        )? {
            m.entry(r.get(0)).or_default().push(r.get(1));
        }
        m
    };
    let index_of: HashMap<i64, usize> =
        tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    let expand = |oid: i64| -> Vec<usize> {
        leaves
            .get(&oid)
            .map(|v| v.as_slice())
            .unwrap_or(std::slice::from_ref(&oid))
            .iter()
            .filter_map(|o| index_of.get(o).copied())
            .collect()
    };
    let mut edges = Vec::new();
    let mut fk_edges = Vec::new();
    for f in &fks {
        for c in expand(f.child) {
            for pa in expand(f.parent) {
                edges.push((c, pa));
                fk_edges.push((c, pa, f));
            }
        }
    }
    let mut units = Vec::new();
    let mut need_replica = Vec::new();
    for u in load_units(tables.len(), &edges) {
        let cycle = u.len() > 1;
        let rigid: Vec<String> = fk_edges
            .iter()
            .filter(|(c, pa, f)| {
                cycle && c != pa && u.contains(c) && u.contains(pa) && !f.deferrable
            })
            .map(|(c, _, f)| format!("{} on {}", f.name, tables[*c].qualified()))
            .collect();
        let replica = !rigid.is_empty() && !opts.dry_run;
        if replica {
            need_replica.push(rigid);
        }
        units.push(Unit {
            tables: u,
            replica,
            cycle,
        });
    }
    if !need_replica.is_empty() {
        let allowed = may_replica(l)? && may_replica(p)?;
        if !allowed {
            for rigid in need_replica {
                problems.push(format!(
                    "foreign keys {} form a cycle and are NOT DEFERRABLE: merging the cycle \
                     needs them deferred, or session_replication_role (a superuser); make them \
                     deferrable (ALTER TABLE ... ALTER CONSTRAINT ... DEFERRABLE) on both nodes",
                    rigid.join(", ")
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Refused(problems).into());
    }
    Ok((tables, strategies, units))
}

/// Merge the tables of `local` and `peer`.
pub fn merge(
    local: &dyn Connect,
    peer: &dyn Connect,
    opts: &MergeOptions,
    progress: &Counters,
) -> Result<MergeReport> {
    progress.set_phase("preflight");
    let mut l = open(local, progress, "local node")?;
    let mut p = open(peer, progress, "peer")?;
    let (tables, strategies, units) = plan(&mut l, &mut p, opts)?;
    // steep_repl's own tables are read and written under their row security (the engine's
    // sessions otherwise turn it off, so a user table it would hide fails loudly).
    l.batch_execute("SET row_security = on")?;
    let decisions = ledger::decisions(&mut l, &opts.merge_id)?;
    let states = ledger::table_states(&mut l, &opts.merge_id)?;
    l.batch_execute("SET row_security = off")?;
    // Marks a unit's tables `committing` outside its transactions.
    let mut ctl = open(local, progress, "local node")?;
    ctl.batch_execute("SET row_security = on")?;
    let temp = (rows::temp_allowed(&mut l), rows::temp_allowed(&mut p));
    progress.set_phase("merging");
    progress
        .tables_total
        .store(tables.len() as u64, Ordering::Relaxed);
    let mut report = MergeReport {
        merge_id: opts.merge_id.clone(),
        dry_run: opts.dry_run,
        tables: Vec::new(),
        completed_from_peer_only: Vec::new(),
    };
    for unit in &units {
        if progress.cancelled() {
            return Err(cancelled(
                "tables merged so far stay merged on both nodes; the rest are untouched: \
                 rerun with --resume to finish",
            ));
        }
        let members: Vec<&TableInfo> = unit.tables.iter().map(|&i| &tables[i]).collect();
        if !opts.dry_run
            && members
                .iter()
                .all(|t| states.get(&t.qualified()).map(String::as_str) == Some(ledger::MERGED))
        {
            for (t, &i) in members.iter().zip(&unit.tables) {
                report.tables.push(TableMerge {
                    schema: t.schema.clone(),
                    table: t.name.clone(),
                    strategy: strategies[i].to_string(),
                    state: "already merged".into(),
                    ..Default::default()
                });
            }
            progress
                .tables_done
                .fetch_add(members.len() as u64, Ordering::Relaxed);
            continue;
        }
        for t in &members {
            if states.get(&t.qualified()).map(String::as_str) == Some(ledger::COMMITTING) {
                report.completed_from_peer_only.push(t.qualified());
            }
        }
        let strats: Vec<&Strategy> = unit.tables.iter().map(|&i| &strategies[i]).collect();
        let mut run = UnitRun {
            l: &mut l,
            p: &mut p,
            ctl: &mut ctl,
            opts,
            decisions: &decisions,
            progress,
            peer_committed: false,
            temp,
        };
        let done = run.run(unit, &members, &strats);
        let peer_committed = run.peer_committed;
        match done {
            Ok(r) => report.tables.extend(r),
            Err(e) => {
                for c in [&mut l, &mut p] {
                    let _ = c.batch_execute("ROLLBACK");
                }
                if !peer_committed {
                    for t in &members {
                        let _ = ctl.execute(
                            "DELETE FROM steep_repl.merge_tables WHERE merge_id = $1
                                AND schema_name = $2 AND table_name = $3 AND state = $4",
                            &[&opts.merge_id, &t.schema, &t.name, &ledger::COMMITTING],
                        );
                    }
                }
                if progress.cancelled() {
                    return Err(cancelled(
                        "the table being merged was rolled back on both nodes; tables merged \
                         before it stay merged: rerun with --resume to finish",
                    ));
                }
                let names: Vec<String> = members.iter().map(|t| t.qualified()).collect();
                return Err(e.context(format!(
                    "merging {} (rolled back; tables merged before it stay merged: fix the \
                     cause and rerun with --resume {})",
                    names.join(", "),
                    opts.merge_id
                )));
            }
        }
        progress
            .tables_done
            .fetch_add(members.len() as u64, Ordering::Relaxed);
    }
    progress.set_table(None);
    progress.set_phase("complete");
    Ok(report)
}

struct UnitRun<'a> {
    l: &'a mut postgres::Client,
    p: &'a mut postgres::Client,
    ctl: &'a mut postgres::Client,
    opts: &'a MergeOptions,
    decisions: &'a Decisions,
    progress: &'a Counters,
    /// The unit's peer transaction committed (a failure after it leaves it merged there only).
    peer_committed: bool,
    /// Whether the local node's and the peer's sessions may create temporary tables.
    temp: (bool, bool),
}

/// One table's differing rows and what happens to each.
struct Decided<'a> {
    d: &'a Differing,
    /// None: undecided.
    how: Option<(Resolution, String)>,
}

impl UnitRun<'_> {
    fn both(&mut self, sql: &str) -> Result<()> {
        self.l.batch_execute(sql).context("on the local node")?;
        self.p.batch_execute(sql).context("on the peer")?;
        Ok(())
    }

    fn run(
        &mut self,
        unit: &Unit,
        members: &[&TableInfo],
        strategies: &[&Strategy],
    ) -> Result<Vec<TableMerge>> {
        let names: Vec<String> = members.iter().map(|t| t.qualified()).collect();
        if !self.opts.dry_run {
            // `committing` before the unit's transactions begin (so the local one sees the row
            // it turns into `merged`); removed again if the peer never commits.
            for t in members {
                self.ctl.execute(
                    ledger::MARK_TABLE,
                    &[
                        &self.opts.merge_id,
                        &t.schema,
                        &t.name,
                        &ledger::COMMITTING,
                        &"{}",
                    ],
                )?;
            }
        }
        // Not READ ONLY: a dry run's keys go into temporary tables (rolled back at the end).
        self.both("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
        if !self.opts.dry_run {
            // The lock comes before the transaction's snapshot (LOCK takes none): the rows
            // compared are the rows written over.
            // Two merges started from opposite nodes at once would wait on each other across two
            // servers, where no deadlock detector sees them: a wait has a bound.
            self.both("SET LOCAL lock_timeout = '30s'")?;
            self.both(&format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                names.join(", ")
            ))?;
            if unit.replica {
                self.both("SET LOCAL session_replication_role = replica")?;
            } else if unit.cycle {
                self.both("SET CONSTRAINTS ALL DEFERRED")?;
            }
        }
        let mut out = Vec::new();
        let mut audits = Vec::new();
        let mut staged: Vec<(usize, bool, Staged)> = Vec::new();
        for (i, (t, s)) in members.iter().zip(strategies).enumerate() {
            self.progress.set_table(Some(t.qualified()));
            let (tm, audit, wrote_local, wrote_remote) = self.table(i, t, s)?;
            audits.push(audit);
            staged.extend(wrote_local.into_iter().map(|st| (i, true, st)));
            staged.extend(wrote_remote.into_iter().map(|st| (i, false, st)));
            out.push(tm);
        }
        if self.opts.dry_run {
            self.both("ROLLBACK")?;
            return Ok(out);
        }
        if unit.replica {
            for (i, local, stage) in &staged {
                let (i, c) = (*i, if *local { &mut *self.l } else { &mut *self.p });
                if let Some((fk, key)) = rows::missing_parent(c, members[i], stage)? {
                    bail!(
                        "row {key} of {} references a row that neither node has (foreign key \
                         {fk}); nothing of this cycle was written",
                        members[i].qualified()
                    );
                }
            }
        } else {
            // Deferred checks (a cycle's, and any INITIALLY DEFERRED key or constraint) now, on
            // both nodes, before either commits: a violation then leaves both untouched instead
            // of failing the local commit after the peer's.
            self.both("SET CONSTRAINTS ALL IMMEDIATE")?;
        }
        // The unit's user tables are done with: steep_repl's tables under their row security.
        self.l.batch_execute("SET LOCAL row_security = on")?;
        for (t, audit) in members.iter().zip(&audits) {
            ledger::audit(self.l, &self.opts.merge_id, &t.schema, &t.name, audit)?;
        }
        for (t, tm) in members.iter().zip(&out) {
            if tm.undecided > 0 {
                // Not done: a resume must compare it again (its decided rows are written).
                self.l.execute(
                    "DELETE FROM steep_repl.merge_tables
                      WHERE merge_id = $1 AND schema_name = $2 AND table_name = $3",
                    &[&self.opts.merge_id, &t.schema, &t.name],
                )?;
                continue;
            }
            let result = serde_json::to_string(tm)?;
            self.l.execute(
                ledger::MARK_TABLE,
                &[
                    &self.opts.merge_id,
                    &t.schema,
                    &t.name,
                    &ledger::MERGED,
                    &result,
                ],
            )?;
        }
        self.p
            .batch_execute("COMMIT")
            .context("committing on the peer")?;
        self.peer_committed = true;
        self.l.batch_execute("COMMIT").map_err(|e| {
            anyhow!(
                "{} merged on the peer only: committing on the local node failed ({}); rerun \
                 with --resume {} to complete them",
                names.join(", "),
                crate::db_error::describe(&e),
                self.opts.merge_id
            )
        })?;
        Ok(out)
    }

    /// Compare, decide and (unless a dry run) write one table: its report, audit rows, and what
    /// was staged on the local node and on the peer.
    fn table(&mut self, i: usize, t: &TableInfo, strategy: &Strategy) -> Result<TableDone> {
        let (ov, diff) = overlap::compare_rows(self.l, self.p, t)?;
        if !ov.unique_collisions.is_empty() {
            let list: Vec<String> = ov
                .unique_collisions
                .iter()
                .map(|u| {
                    format!(
                        "{} on {} ({} rows)",
                        u.category.replace('_', " "),
                        u.index,
                        u.keys.len()
                    )
                })
                .collect();
            return Err(Refused(vec![format!(
                "rows of {} on one side only collide with the other node's secondary unique \
                 keys: {}; resolve them first (steep merge analyze lists the keys)",
                t.qualified(),
                list.join("; ")
            )])
            .into());
        }
        self.progress
            .rows_done
            .fetch_add(ov.local_rows + ov.remote_rows, Ordering::Relaxed);
        let mut tm = TableMerge {
            schema: t.schema.clone(),
            table: t.name.clone(),
            strategy: strategy.to_string(),
            state: if self.opts.dry_run {
                "dry run".into()
            } else if diff.is_empty() {
                "unchanged".into()
            } else {
                "merged".into()
            },
            matched: ov.matched,
            conflict: ov.conflict,
            local_only: ov.local_only,
            remote_only: ov.remote_only,
            ..Default::default()
        };
        if diff.is_empty() {
            if !self.opts.dry_run {
                self.sequences(t, &mut tm)?;
            }
            return Ok((tm, Vec::new(), Vec::new(), Vec::new()));
        }
        let seen = format!("steep_d{i}");
        let here: Vec<&str> = diff
            .iter()
            .filter(|d| d.local.is_some())
            .map(|d| d.key.as_str())
            .collect();
        let there: Vec<&str> = diff
            .iter()
            .filter(|d| d.remote.is_some())
            .map(|d| d.key.as_str())
            .collect();
        let seen_l = KeySet::new(self.l, t, &seen, &here, self.temp.0)?;
        let seen_p = KeySet::new(self.p, t, &seen, &there, self.temp.1)?;
        let modified = match strategy {
            Strategy::LastModifiedColumn(c) => Some(Modified::Column(c)),
            Strategy::LastModified => Some(Modified::CommitTimestamp),
            _ => None,
        };
        let values = match &modified {
            Some(how) => Some((
                rows::modified(self.l, t, &seen_l, how)?,
                rows::modified(self.p, t, &seen_p, how)?,
            )),
            None => None,
        };
        let qualified = t.qualified();
        let decided: Vec<Decided> = diff
            .iter()
            .map(|d| Decided {
                d,
                how: self.decide(&qualified, d, strategy, values.as_ref()),
            })
            .collect();
        for x in &decided {
            match x.how.as_ref().map(|(r, _)| *r) {
                None => {
                    tm.undecided += 1;
                    if tm.undecided_keys.len() < UNDECIDED_SHOWN {
                        tm.undecided_keys.push(x.d.key.clone());
                    }
                }
                Some(Resolution::Skip) => tm.skipped += 1,
                Some(Resolution::KeepLocal) => tm.remote_updated += 1,
                Some(Resolution::KeepRemote) => tm.local_updated += 1,
                Some(Resolution::CopiedToLocal) => tm.local_inserted += 1,
                Some(Resolution::CopiedToRemote) => tm.remote_inserted += 1,
            }
        }
        if self.opts.dry_run {
            return Ok((tm, Vec::new(), Vec::new(), Vec::new()));
        }
        // Both images of every decided row, for the audit (read before anything is written).
        let (li, ri) = (
            rows::images(self.l, t, &seen_l)?,
            rows::images(self.p, t, &seen_p)?,
        );
        let keys = |want: Resolution| -> Vec<&str> {
            decided
                .iter()
                .filter(|x| x.how.as_ref().is_some_and(|(r, _)| *r == want))
                .map(|x| x.d.key.as_str())
                .collect()
        };
        let wrote_local = self.write(
            i,
            t,
            &keys(Resolution::CopiedToLocal),
            &keys(Resolution::KeepRemote),
            true,
        )?;
        let wrote_remote = self.write(
            i,
            t,
            &keys(Resolution::CopiedToRemote),
            &keys(Resolution::KeepLocal),
            false,
        )?;
        self.sequences(t, &mut tm)?;
        let audit: Vec<AuditRow> = decided
            .iter()
            .filter_map(|x| {
                let (resolution, by) = x.how.clone()?;
                let (l, r) = (li.get(&x.d.key), ri.get(&x.d.key));
                Some(AuditRow {
                    pk: l.or(r)?.pk.clone(),
                    category: match (x.d.local, x.d.remote) {
                        (Some(_), Some(_)) => "conflict",
                        (Some(_), None) => "local_only",
                        _ => "remote_only",
                    },
                    resolution,
                    local_row: l.map(|i| i.row.clone()),
                    remote_row: r.map(|i| i.row.clone()),
                    decided_by: by,
                })
            })
            .collect();
        Ok((tm, audit, wrote_local, wrote_remote))
    }

    /// Either node may have numbered rows past its sequences (explicit keys); after the merge
    /// both hold every key, so both nodes' sequences go past them.
    fn sequences(&mut self, t: &TableInfo, tm: &mut TableMerge) -> Result<()> {
        for c in [&mut *self.l, &mut *self.p] {
            tm.sequences.extend(rows::sequences_past_keys(c, t)?);
        }
        tm.sequences.sort();
        tm.sequences.dedup();
        Ok(())
    }

    /// What happens to one differing row: a decision made on these very rows, else the
    /// strategy (`ask` decides nothing by itself).
    fn decide(
        &self,
        table: &str,
        d: &Differing,
        strategy: &Strategy,
        values: Option<&(Values, Values)>,
    ) -> Option<(Resolution, String)> {
        let one_sided = |r: Resolution| {
            if self.opts.keep_one_sided {
                (Resolution::Skip, "--keep-one-sided".to_string())
            } else {
                (r, "one-sided rows are copied".to_string())
            }
        };
        match (d.local, d.remote) {
            (Some(_), None) => return Some(one_sided(Resolution::CopiedToRemote)),
            (None, Some(_)) => return Some(one_sided(Resolution::CopiedToLocal)),
            _ => {}
        }
        if let Some(dec) = self.decisions.get(&(table.to_string(), d.key.clone())) {
            // Decided on rows that have changed since: undecided again, never overwritten.
            return dec
                .holds_for(d)
                .then(|| (dec.resolution, dec.decided_by.clone()));
        }
        let by = format!("strategy {strategy} ({})", self.opts.role);
        let r = match strategy {
            Strategy::PreferLocal => Resolution::KeepLocal,
            Strategy::PreferRemote => Resolution::KeepRemote,
            Strategy::LastModified | Strategy::LastModifiedColumn(_) => {
                let (lv, rv) = values?;
                let l = lv.get(&d.key).copied().flatten();
                let r = rv.get(&d.key).copied().flatten();
                if remote_is_newer(l, r) {
                    Resolution::KeepRemote
                } else {
                    Resolution::KeepLocal
                }
            }
            Strategy::Ask => return None,
        };
        Some((r, by))
    }

    /// Copy the rows of `keys` from the other node and write them on this one (`local`: the
    /// local node), its user triggers held. Returns what was staged (for the foreign-key checks).
    fn write(
        &mut self,
        i: usize,
        t: &TableInfo,
        new: &[&str],
        updated: &[&str],
        local: bool,
    ) -> Result<Vec<Staged>> {
        let mut stages = Vec::new();
        if new.is_empty() && updated.is_empty() {
            return Ok(stages);
        }
        let (dst, src, dst_temp, src_temp) = if local {
            (&mut *self.l, &mut *self.p, self.temp.0, self.temp.1)
        } else {
            (&mut *self.p, &mut *self.l, self.temp.1, self.temp.0)
        };
        let held = triggers::hold(dst, &t.qualified())?;
        for (keys, update, what) in [(new, false, "n"), (updated, true, "u")] {
            if keys.is_empty() {
                continue;
            }
            let want = format!("steep_w{i}_{}{what}", side(local));
            let stage = format!("steep_s{i}_{}{what}", side(local));
            let want = KeySet::new(src, t, &want, keys, src_temp)?;
            let (staged, moved) = rows::stage(src, &want, dst, dst_temp, t, &stage)?;
            // New rows never overwrite: a key the other node holds under another text (citext,
            // numeric 1.0 and 1.00) is a collision to resolve, not a row to replace.
            let written = rows::upsert(dst, t, &staged, update)?;
            if moved != keys.len() as u64 || written != moved {
                bail!(
                    "{}: {} {} rows to write on the {}, {moved} read, {written} written \
                     (keys equal by their type but not as text — citext, numeric 1.0 and 1.00, \
                     case-insensitive collations — collide this way); nothing of the table was \
                     committed",
                    t.qualified(),
                    keys.len(),
                    if update { "updated" } else { "new" },
                    if local { "local node" } else { "peer" },
                );
            }
            stages.push(staged);
        }
        triggers::release(dst, held)?;
        Ok(stages)
    }
}

fn side(local: bool) -> &'static str {
    if local {
        "l"
    } else {
        "r"
    }
}
