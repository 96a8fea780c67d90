//! Snapshot apply: verify every checksum before touching the target; check (or create) the
//! schema; load tables parents first, each unit (a table; tables in a foreign-key cycle; a parent
//! and child whose old rows reference each other) in one transaction (empty, COPY, row counts
//! checked, a resume marker committed with the rows), several units at once; restore sequences;
//! add post-data. A failure leaves every table fully loaded or untouched, and `resume` skips the
//! tables whose markers say they were loaded.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::db_error::db_error;
use crate::engine::catalog::{self, prepare_session, ForeignKey, TableInfo};
use crate::engine::files;
use crate::engine::fkorder::load_units;
use crate::engine::manifest::{copy_list, Manifest, Table};
use crate::engine::progress::Progress;
use crate::engine::scheduler::{self, Tasks};
use crate::engine::schema_archive::{self, Restore, Section};
use crate::engine::Connect;
use crate::schema_shape;
use crate::sql::{qualified, quote_ident};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SchemaMode {
    /// The target's tables must have the snapshot's columns, types, nullability and keys.
    Verify,
    /// Create the schema from the snapshot's DDL (pre-data before the data, post-data after).
    Create,
    /// Load without checking.
    Skip,
}

impl SchemaMode {
    const ALL: [SchemaMode; 3] = [Self::Verify, Self::Create, Self::Skip];

    /// The name start_apply() and the job parameters use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Create => "create",
            Self::Skip => "skip",
        }
    }
}

impl std::str::FromStr for SchemaMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| anyhow!("invalid schema mode {s:?}: use verify, create or skip"))
    }
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub input: PathBuf,
    pub parallel: usize,
    /// Check every file's checksum before loading (false skips only that pass).
    pub verify_checksums: bool,
    pub schema: SchemaMode,
    /// Skip tables whose row count already equals the snapshot's (after a failed apply).
    pub resume: bool,
    /// The pg_restore that restores the schema archive (needed for `SchemaMode::Create`).
    pub pg_restore: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplySummary {
    pub snapshot_id: String,
    /// Where the source was when the snapshot was taken.
    pub lsn: String,
    /// How the snapshot's files are compressed.
    pub compression: String,
    pub tables_loaded: usize,
    pub tables_skipped: usize,
    pub rows_loaded: u64,
    pub sequences: usize,
}

/// The target's schema differs from the snapshot's (the CLI reports it as a blocking finding).
#[derive(Debug)]
pub struct SchemaMismatch(pub Vec<String>);

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the target's schema differs from the snapshot's, nothing was changed ({}); fix the \
             target, or apply with --schema create into an empty database",
            self.0.join("; ")
        )
    }
}

impl std::error::Error for SchemaMismatch {}

pub fn apply(dst: &dyn Connect, opts: &ApplyOptions, progress: &Progress) -> Result<ApplySummary> {
    let m = Manifest::read(&opts.input)?;
    let parallel = opts.parallel.clamp(1, 64);
    if opts.verify_checksums {
        progress.set_phase("verifying");
        let problems = files::check(&opts.input, &m, false, parallel, progress);
        if let Some(p) = problems.first() {
            bail!(
                "the snapshot is damaged, nothing was changed on the target: {p}{}",
                if problems.len() > 1 {
                    format!(" (and {} more)", problems.len() - 1)
                } else {
                    String::new()
                }
            );
        }
        if progress.cancelled() {
            return Err(crate::engine::error::cancelled("nothing was changed"));
        }
    }
    let mut coord = dst.connect().context("connecting to the target")?;
    prepare_session(&mut coord)?;

    // Which tables an earlier, interrupted apply of this snapshot loaded (resume markers, when
    // the target has steep_repl 0.4.0+ and the role may use them).
    let markers = Markers::detect(&mut coord, &m.snapshot_id)?;
    let loaded_before = match (&markers, opts.resume) {
        (Some(mk), true) => mk.loaded(&mut coord, opts.schema)?,
        _ => Vec::new(),
    };

    let archive = if opts.schema == SchemaMode::Create {
        Some(schema_archive_of(&m, opts)?)
    } else {
        None
    };
    if let Some((archive, pg_restore, pg_dump)) = &archive {
        // After a failed apply whose pre-data went through (it is one transaction), the tables
        // are all there: a resume goes on to the data.
        let done_before = opts.resume && all_tables_exist(&mut coord, &m)?;
        if !done_before {
            progress.set_phase("schema");
            schema_archive::restore(
                dst,
                Section::PreData,
                Restore {
                    pg_restore,
                    archive,
                    pg_dump,
                    parallel: 1,
                    skip_existing: None,
                },
                &|| progress.cancelled(),
            )
            .context("creating the schema (pre-data); the target is unchanged")?;
        }
    }
    let (target_shapes, target) = catalog::shapes_and_tables(&mut coord)?;
    let by_name: HashMap<(String, String), &TableInfo> = target
        .iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t))
        .collect();
    if opts.schema == SchemaMode::Verify {
        // The one shape comparison `steep schema compare` makes: what breaks replication
        // breaks a load into existing tables too.
        let diffs: Vec<String> = schema_shape::diff(
            &m.table_shapes(),
            &target_shapes,
            schema_shape::Scope::LocalTables,
        )
        .iter()
        .filter(|d| d.breaks_replication)
        .map(describe_for_apply)
        .collect();
        if !diffs.is_empty() {
            return Err(SchemaMismatch(diffs).into());
        }
        check_sequences(&mut coord, &m)?;
    }
    let oids: Vec<i64> = m
        .tables
        .iter()
        .map(|t| {
            by_name
                .get(&(t.schema.clone(), t.name.clone()))
                .map(|i| i.oid)
                .ok_or_else(|| anyhow!("table {} does not exist on the target", t.qualified()))
        })
        .collect::<Result<_>>()?;
    let fks = catalog::foreign_keys(&mut coord)?;
    let index_of: HashMap<i64, usize> = oids.iter().enumerate().map(|(i, o)| (*o, i)).collect();
    let edges: Vec<(usize, usize)> = fks
        .iter()
        .filter_map(|f| Some((*index_of.get(&f.child)?, *index_of.get(&f.parent)?)))
        .collect();

    let mut done: Vec<bool> = m
        .tables
        .iter()
        .map(|t| {
            loaded_before
                .iter()
                .any(|(s, n)| *s == t.schema && *n == t.name)
        })
        .collect();
    // Reloading a parent removes the rows the tables referencing it point at: they are
    // reloaded too.
    while let Some(&(child, _)) = edges.iter().find(|(c, p)| done[*c] && !done[*p]) {
        done[child] = false;
    }
    // A parent whose old rows are referenced by old rows of a child can only be emptied
    // together with that child: both go into one transaction (one unit), so a failure still
    // leaves each table whole — its old rows or the snapshot's.
    let has_rows = tables_with_rows(&mut coord, &m, &done)?;
    let together: Vec<(usize, usize)> = edges
        .iter()
        .filter(|(c, p)| c != p && has_rows[*c] && has_rows[*p])
        .map(|&(c, p)| (p, c))
        .collect();
    let units = load_units(
        m.tables.len(),
        &edges.iter().chain(&together).copied().collect::<Vec<_>>(),
    );
    if let Some(mk) = markers.as_ref().filter(|_| !opts.resume) {
        // A new apply starts over: an earlier one's markers say nothing about this one.
        let mut tx = coord.transaction()?;
        mk.forget(&mut tx)?;
        tx.commit()?;
    }
    let skipped = done.iter().filter(|d| **d).count();
    progress
        .tables_total
        .store(m.tables.len() as u64, Ordering::Relaxed);
    progress
        .tables_done
        .store(skipped as u64, Ordering::Relaxed);
    progress.bytes_done.store(0, Ordering::Relaxed);
    progress.bytes_total.store(
        m.tables
            .iter()
            .zip(&done)
            .filter(|(_, d)| !**d)
            .map(|(t, _)| t.raw_bytes)
            .sum::<u64>()
            .max(1),
        Ordering::Relaxed,
    );

    progress.set_phase("loading");
    let plan = Plan {
        m: &m,
        dir: &opts.input,
        markers: markers.as_ref(),
        schema: opts.schema,
        oids: &oids,
        fks: &fks,
        units: &units,
        edges: &edges,
        index_of: &index_of,
    };
    let rows = plan.run(dst, parallel, &done, progress)?;

    progress.set_phase("sequences");
    for s in &m.sequences {
        coord
            .execute(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&qualified(&s.schema, &s.name), &s.last_value, &s.is_called],
            )
            .with_context(|| format!("restoring sequence {}.{}", s.schema, s.name))?;
    }
    if let Some((archive, pg_restore, pg_dump)) = &archive {
        progress.set_phase("post-data");
        schema_archive::restore(
            dst,
            Section::PostData,
            Restore {
                pg_restore,
                archive,
                pg_dump,
                parallel,
                skip_existing: opts.resume.then_some(&mut coord),
            },
            &|| progress.cancelled(),
        )
        .context(
            "adding indexes and constraints (post-data); the data is loaded: fix the cause, then \
             apply again with --resume",
        )?;
    }
    progress.set_phase("complete");
    Ok(ApplySummary {
        snapshot_id: m.snapshot_id.clone(),
        lsn: m.lsn.clone(),
        compression: m.compression.name().to_string(),
        tables_loaded: m.tables.len() - skipped,
        tables_skipped: skipped,
        rows_loaded: rows,
        sequences: m.sequences.len(),
    })
}

/// The snapshot's schema archive (no symbolic link; its checksum checked here unless the
/// checksum pass over every file already did), the pg_restore to restore it with, and the
/// pg_dump version that wrote it.
fn schema_archive_of(m: &Manifest, opts: &ApplyOptions) -> Result<(PathBuf, PathBuf, String)> {
    let s = m.schema.as_ref().ok_or_else(|| {
        anyhow!(
            "the snapshot has no schema DDL (pg_dump was not available when it was made): apply \
             with --schema verify into an existing schema"
        )
    })?;
    let pg_restore = opts.pg_restore.clone().ok_or_else(|| {
        anyhow!(
            "--schema create needs pg_restore {} or newer, and none was found (in client mode: \
             STEEP_PG_RESTORE, PATH, steep's PostgreSQL; in direct mode: next to the server's \
             postgres): install it, or create the schema yourself and apply with --schema verify",
            schema_archive::tool_major(&s.pg_dump)
        )
    })?;
    let file = crate::engine::paths::open_inside(&opts.input, &s.archive.name)
        .with_context(|| format!("opening {}", s.archive.name))?;
    if !opts.verify_checksums && crate::engine::checksum::sha256_of(file)?.0 != s.archive.sha256 {
        bail!(
            "{}: checksum mismatch, the file is damaged or was changed",
            s.archive.name
        );
    }
    Ok((
        opts.input.join(&s.archive.name),
        pg_restore,
        s.pg_dump.clone(),
    ))
}

/// Whether every table of the snapshot exists on the target.
fn all_tables_exist(c: &mut postgres::Client, m: &Manifest) -> Result<bool> {
    for t in &m.tables {
        let found: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.qualified()])?
            .get(0);
        if !found {
            return Ok(false);
        }
    }
    Ok(!m.tables.is_empty())
}

/// A blocking difference in the words of an apply (the snapshot is the local side).
fn describe_for_apply(d: &schema_shape::Difference) -> String {
    let name = qualified(&d.schema, &d.table);
    let col = d
        .column
        .as_ref()
        .map(|c| format!("{name}.{}", quote_ident(c)))
        .unwrap_or_else(|| name.clone());
    let v = |x: &Option<String>| x.clone().unwrap_or_default();
    match d.difference.as_str() {
        "table_missing_on_peer" => format!("table {name} is missing"),
        "missing_on_peer" => format!("{col}: column missing"),
        "missing_locally" => format!("{col}: column only on the target"),
        "type" => format!(
            "{col}: type {} in the snapshot, {} on the target",
            v(&d.local),
            v(&d.peer)
        ),
        "primary_key" => format!(
            "{name}: primary key ({}) in the snapshot, ({}) on the target",
            v(&d.local),
            v(&d.peer)
        ),
        _ => format!(
            "{col}: {} in the snapshot, {} on the target",
            v(&d.local),
            v(&d.peer)
        ),
    }
}

fn check_sequences(c: &mut postgres::Client, m: &Manifest) -> Result<()> {
    let have: Vec<(String, String)> = catalog::sequences(c)?;
    let missing: Vec<String> = m
        .sequences
        .iter()
        .filter(|s| !have.iter().any(|(a, b)| *a == s.schema && *b == s.name))
        .map(|s| format!("sequence {} is missing", qualified(&s.schema, &s.name)))
        .collect();
    if !missing.is_empty() {
        return Err(SchemaMismatch(missing).into());
    }
    Ok(())
}

/// Resume markers on the target (steep_repl's `apply_markers`): one per loaded table, committed
/// in the transaction that loaded it. Absent when the target has no steep_repl 0.4.0+ or the role
/// may not use it; `--resume` then reloads every table (each load is whole or nothing, so that is
/// always correct) and post-data still resumes from the catalog.
struct Markers {
    snapshot_id: String,
}

impl Markers {
    fn detect(c: &mut postgres::Client, snapshot_id: &str) -> Result<Option<Markers>> {
        let usable: bool = c
            .query_one(
                "SELECT CASE WHEN to_regclass('steep_repl.apply_markers') IS NULL
                          OR to_regprocedure('steep_repl.mark_applied(text,text,text,text)') IS NULL
                        THEN false
                        ELSE has_table_privilege(to_regclass('steep_repl.apply_markers'),
                                                 'SELECT, INSERT, UPDATE, DELETE')
                         AND has_function_privilege(
                                 to_regprocedure('steep_repl.mark_applied(text,text,text,text)'),
                                 'EXECUTE')
                         AND has_function_privilege(
                                 to_regprocedure('steep_repl.apply_markers_of(text)'), 'EXECUTE')
                         AND has_function_privilege(
                                 to_regprocedure('steep_repl.forget_applied(text)'), 'EXECUTE')
                        END",
                &[],
            )
            .context("looking for steep_repl's resume markers on the target")?
            .get(0);
        Ok(usable.then(|| Markers {
            snapshot_id: snapshot_id.to_string(),
        }))
    }

    /// The tables this role's earlier apply of the snapshot loaded. An apply is resumed with the
    /// schema mode it was started with (a `--schema create` apply still owes its post-data).
    fn loaded(&self, c: &mut postgres::Client, mode: SchemaMode) -> Result<Vec<(String, String)>> {
        let rows = c
            .query(
                "SELECT table_schema, table_name, schema_mode
                 FROM steep_repl.apply_markers_of($1)",
                &[&self.snapshot_id],
            )
            .context("reading the resume markers")?;
        if let Some(other) = rows
            .iter()
            .map(|r| r.get::<_, String>(2))
            .find(|m| m != mode.name())
        {
            return Err(anyhow!(
                "the interrupted apply of this snapshot used --schema {other}: resume it with \
                 --schema {other} --resume (or apply again without --resume to start over)"
            ));
        }
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn mark(&self, tx: &mut postgres::Transaction, mode: SchemaMode, t: &Table) -> Result<()> {
        tx.execute(
            "SELECT steep_repl.mark_applied($1, $2, $3, $4)",
            &[&self.snapshot_id, &mode.name(), &t.schema, &t.name],
        )
        .context("recording the table as loaded")?;
        Ok(())
    }

    fn forget(&self, tx: &mut postgres::Transaction) -> Result<()> {
        tx.execute("SELECT steep_repl.forget_applied($1)", &[&self.snapshot_id])
            .context("clearing an earlier apply's resume markers")?;
        Ok(())
    }
}

/// Which of the tables to load hold rows on the target now (those already loaded do not count).
fn tables_with_rows(c: &mut postgres::Client, m: &Manifest, done: &[bool]) -> Result<Vec<bool>> {
    m.tables
        .iter()
        .zip(done)
        .map(|(t, done)| {
            if *done {
                return Ok(false);
            }
            Ok(c.query_one(
                &format!("SELECT EXISTS (SELECT FROM ONLY {})", t.qualified()),
                &[],
            )
            .with_context(|| format!("looking at {} on the target", t.qualified()))?
            .get(0))
        })
        .collect()
}

struct Plan<'a> {
    m: &'a Manifest,
    dir: &'a Path,
    markers: Option<&'a Markers>,
    schema: SchemaMode,
    oids: &'a [i64],
    fks: &'a [ForeignKey],
    units: &'a [Vec<usize>],
    /// (child, parent) foreign keys between the snapshot's tables.
    edges: &'a [(usize, usize)],
    index_of: &'a HashMap<i64, usize>,
}

impl Plan<'_> {
    /// Load the units, each once its parents are in, `parallel` at a time. Returns rows loaded.
    fn run(
        &self,
        dst: &dyn Connect,
        parallel: usize,
        done: &[bool],
        progress: &Progress,
    ) -> Result<u64> {
        let unit_of: Vec<usize> = {
            let mut v = vec![0; self.m.tables.len()];
            for (u, tables) in self.units.iter().enumerate() {
                for &t in tables {
                    v[t] = u;
                }
            }
            v
        };
        // A unit waits for the units of its tables' parents.
        let after: Vec<(usize, usize)> = self
            .edges
            .iter()
            .map(|&(c, p)| (unit_of[c], unit_of[p]))
            .filter(|(uc, up)| uc != up)
            .collect();
        let rows = std::sync::atomic::AtomicU64::new(0);
        let ran = scheduler::run(
            Tasks {
                count: self.units.len(),
                after: &after,
                rank: None,
            },
            parallel,
            &|| progress.cancelled(),
            || {
                let mut c = dst.connect().context("opening a loading connection")?;
                prepare_session(&mut c)?;
                Ok(c)
            },
            |c, unit, _| {
                if self.units[unit].iter().all(|t| done[*t]) {
                    return Ok(());
                }
                let n = self.load_unit(c, unit, progress)?;
                rows.fetch_add(n, Ordering::Relaxed);
                Ok(())
            },
        );
        if let Some(e) = ran.error {
            return Err(e.context(format!(
                "{} of {} table groups were loaded before this; every other table is \
                 untouched: fix the cause and rerun with --resume",
                ran.finished,
                self.units.len()
            )));
        }
        if progress.cancelled() {
            return Err(crate::engine::error::cancelled(
                "the tables loaded so far keep the snapshot's rows, the others are untouched",
            ));
        }
        Ok(rows.load(Ordering::Relaxed))
    }

    /// One unit in one transaction: clear, COPY each table, check the counts, commit.
    fn load_unit(&self, c: &mut postgres::Client, unit: usize, progress: &Progress) -> Result<u64> {
        let tables = &self.units[unit];
        let names: Vec<String> = tables
            .iter()
            .map(|t| self.m.tables[*t].qualified())
            .collect();
        // Inside the unit, tables in foreign-key order: a unit may join a parent and a child
        // whose old rows reference each other, and only a real cycle needs keys set aside.
        let local: HashMap<usize, usize> =
            tables.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        let local_edges: Vec<(usize, usize)> = self
            .edges
            .iter()
            .filter_map(|(c, p)| Some((*local.get(c)?, *local.get(p)?)))
            .collect();
        let order: Vec<Vec<usize>> = load_units(tables.len(), &local_edges)
            .into_iter()
            .map(|u| u.into_iter().map(|i| tables[i]).collect())
            .collect();
        let cycle_of = |oid: i64| {
            self.index_of
                .get(&oid)
                .and_then(|i| order.iter().position(|u| u.len() > 1 && u.contains(i)))
        };
        let mut tx = c.transaction()?;
        // Foreign keys inside a cycle are checked at commit when they are deferrable;
        // non-deferrable ones are dropped and added back (which validates every row).
        tx.batch_execute("SET CONSTRAINTS ALL DEFERRED")?;
        let unit_oids: Vec<i64> = tables.iter().map(|t| self.oids[*t]).collect();
        let internal: Vec<&ForeignKey> = self
            .fks
            .iter()
            .filter(|f| {
                !f.deferrable
                    && cycle_of(f.child).is_some()
                    && cycle_of(f.child) == cycle_of(f.parent)
            })
            .collect();
        for f in &internal {
            let child = self.m.tables[self.index_of[&f.child]].qualified();
            tx.batch_execute(&format!(
                "ALTER TABLE {child} DROP CONSTRAINT {}",
                quote_ident(&f.name)
            ))
            .with_context(|| {
                format!("setting aside foreign key {} of {child} (a cycle)", f.name)
            })?;
        }
        // TRUNCATE when no table outside the unit references these (it lets COPY FREEZE skip
        // later freezing); otherwise DELETE, children first, which the target's own references
        // may refuse.
        let outside_refs = self
            .fks
            .iter()
            .any(|f| unit_oids.contains(&f.parent) && !unit_oids.contains(&f.child));
        let frozen = !outside_refs;
        if frozen {
            tx.batch_execute(&format!("TRUNCATE ONLY {}", names.join(", ")))
                .with_context(|| format!("emptying {}", names.join(", ")))?;
        } else {
            for &t in order.iter().rev().flatten() {
                let n = self.m.tables[t].qualified();
                tx.batch_execute(&format!("DELETE FROM ONLY {n}"))
                    .with_context(|| format!("emptying {n} (other tables reference it)"))?;
            }
        }
        let mut total = 0;
        for &t in order.iter().flatten() {
            let table = &self.m.tables[t];
            progress.set_table(Some(format!("{}.{}", table.schema, table.name)));
            total += self
                .copy_in(&mut tx, table, frozen, progress)
                .with_context(|| format!("loading {}", table.qualified()))?;
        }
        if let Some(mk) = self.markers {
            for &t in tables {
                mk.mark(&mut tx, self.schema, &self.m.tables[t])?;
            }
        }
        for f in &internal {
            let child = self.m.tables[self.index_of[&f.child]].qualified();
            tx.batch_execute(&format!(
                "ALTER TABLE {child} ADD CONSTRAINT {} {}",
                quote_ident(&f.name),
                f.definition
            ))
            .with_context(|| format!("restoring foreign key {} of {child}", f.name))?;
        }
        tx.commit()
            .with_context(|| format!("committing {}", names.join(", ")))?;
        progress
            .tables_done
            .fetch_add(tables.len() as u64, Ordering::Relaxed);
        Ok(total)
    }

    fn copy_in(
        &self,
        tx: &mut postgres::Transaction,
        t: &Table,
        frozen: bool,
        progress: &Progress,
    ) -> Result<u64> {
        let sql = format!(
            "COPY {}{} FROM STDIN{}",
            t.qualified(),
            copy_list(&t.columns),
            if frozen { " WITH (FREEZE)" } else { "" }
        );
        let mut writer = tx.copy_in(&sql)?;
        let mut buf = vec![0u8; 1 << 20];
        for f in &t.files {
            let file = crate::engine::paths::open_inside(self.dir, &f.name)
                .with_context(|| format!("opening {}", f.name))?;
            let mut dec = self
                .m
                .compression
                .decoder(BufReader::with_capacity(1 << 20, file))?;
            let (mut raw, mut rows) = (0u64, 0u64);
            loop {
                if progress.cancelled() {
                    return Err(crate::engine::error::cancelled("this table is rolled back"));
                }
                let n = dec
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", f.name))?;
                if n == 0 {
                    break;
                }
                raw += n as u64;
                rows += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                writer.write_all(&buf[..n])?;
                progress.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
            }
            if raw != f.raw_bytes || rows != f.rows {
                bail!(
                    "{} holds {raw} bytes / {rows} rows, the manifest says {} / {}: the snapshot is damaged",
                    f.name,
                    f.raw_bytes,
                    f.rows
                );
            }
        }
        let loaded = writer.finish().map_err(db_error)?;
        let expected = t.rows;
        if loaded != expected {
            bail!("loaded {loaded} rows, the snapshot has {expected}");
        }
        progress.rows_done.fetch_add(loaded, Ordering::Relaxed);
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_modes_parse() {
        assert_eq!("create".parse::<SchemaMode>().unwrap(), SchemaMode::Create);
        for m in SchemaMode::ALL {
            assert_eq!(m.name().parse::<SchemaMode>().unwrap(), m);
        }
        assert!("drop".parse::<SchemaMode>().is_err());
    }
}
