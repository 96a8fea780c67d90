//! Snapshot apply: verify every checksum before touching the target; check (or create) the
//! schema; load tables parents first, each unit (a table; tables in a foreign-key cycle; a parent
//! and child whose old rows reference each other) in one transaction (empty, COPY, row counts
//! checked, a resume marker committed with the rows), several units at once; restore sequences;
//! add post-data. A failure leaves every table fully loaded or untouched, and `resume` skips the
//! tables whose markers say they were loaded.

mod markers;
pub(crate) mod schema_check;
mod units;

use markers::Markers;
use schema_check::{check_sequences, describe_for_apply};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use units::Plan;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::engine::catalog::{self, prepare_session, TableInfo};
use crate::engine::counters::Counters;
use crate::engine::file_check;
use crate::engine::fkorder::load_units;
use crate::engine::manifest::Manifest;
use crate::engine::needs;
use crate::engine::schema_archive::{self, Restore, Section};
use crate::engine::triggers;
use crate::engine::Connect;
use crate::schema_shape;
use crate::sql::qualified;

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
    /// Finish a failed apply: skip the tables its resume markers say were loaded (with the schema
    /// mode it was started with).
    pub resume: bool,
    /// The pg_restore that restores the schema archive (needed for `SchemaMode::Create`).
    pub pg_restore: Option<PathBuf>,
    /// Let the target's user triggers fire during the load (by default they do not, as in
    /// replication; the table's owner keeps them from firing).
    pub fire_triggers: bool,
    /// `--schema create`: leave out the objects' owners / privileges (pg_restore's options).
    pub no_owner: bool,
    pub no_privileges: bool,
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

pub fn apply(dst: &dyn Connect, opts: &ApplyOptions, progress: &Counters) -> Result<ApplySummary> {
    let m = Manifest::read(&opts.input)?;
    let parallel = opts.parallel.clamp(1, 64);
    if opts.verify_checksums {
        progress.set_phase("verifying");
        let problems = file_check::check(&opts.input, &m, false, parallel, progress);
        if progress.cancelled() {
            return Err(crate::engine::error::cancelled("nothing was changed"));
        }
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
    }
    let mut coord = dst.connect().context("connecting to the target")?;
    progress.watch_client(&coord);
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
    let large_objects = large_objects_of(&m, opts)?;
    // The large objects' owners are restored in every schema mode (their archive's table of
    // contents names them): missing ones are refused before anything changes, too.
    let lo_owners = match (&large_objects, opts.no_owner) {
        (Some((lo, pg_restore, _)), false) => schema_archive::large_object_owners(pg_restore, lo)?,
        _ => Vec::new(),
    };
    if archive.is_none() && !lo_owners.is_empty() {
        needs::check(
            &mut coord,
            needs::FromArchive {
                extensions: &[],
                owners: &lo_owners,
            },
            &Default::default(),
            opts.no_owner,
            opts.no_privileges,
        )?;
    }
    if let Some((archive, pg_restore, pg_dump)) = &archive {
        // After a failed apply whose pre-data went through (it is one transaction), the tables
        // are all there: a resume goes on to the data.
        let done_before = opts.resume && all_tables_exist(&mut coord, &m)?;
        let from_archive = schema_archive::prerequisites(pg_restore, archive)?;
        let mut owners = from_archive.owners.clone();
        owners.extend(lo_owners.iter().cloned());
        owners.sort();
        owners.dedup();
        needs::check(
            &mut coord,
            needs::FromArchive {
                extensions: &from_archive.extensions,
                owners: &owners,
            },
            &m.needs,
            opts.no_owner,
            opts.no_privileges,
        )?;
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
                    no_owner: opts.no_owner,
                    no_privileges: opts.no_privileges,
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
    let has_rows = tables_with_rows(&mut coord, &m, &done, &edges)?;
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
    if !opts.fire_triggers {
        let to_load: Vec<String> = m
            .tables
            .iter()
            .zip(&done)
            .filter(|(_, d)| !**d)
            .map(|(t, _)| t.qualified())
            .collect();
        let unowned = triggers::unowned_with_triggers(&mut coord, &to_load)?;
        if !unowned.is_empty() {
            bail!(
                "user triggers would fire during the load and only a table's owner can keep \
                 them from firing: {}; nothing was changed: apply as the owner, or with \
                 --fire-triggers to let them fire",
                unowned.join("; ")
            );
        }
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
        fire_triggers: opts.fire_triggers,
        schema: opts.schema,
        oids: &oids,
        fks: &fks,
        units: &units,
        edges: &edges,
        index_of: &index_of,
    };
    let rows = plan.run(dst, parallel, &done, progress)?;

    if let Some((lo_archive, pg_restore, pg_dump)) = &large_objects {
        progress.set_phase("large objects");
        schema_archive::restore_large_objects(
            dst,
            Restore {
                pg_restore,
                archive: lo_archive,
                pg_dump,
                parallel: 1,
                skip_existing: None,
                no_owner: opts.no_owner,
                no_privileges: opts.no_privileges,
            },
            &|| progress.cancelled(),
        )
        .context(
            "restoring the large objects; the tables are loaded: fix the cause, then apply again \
             with --resume",
        )?;
    }
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
                no_owner: opts.no_owner,
                no_privileges: opts.no_privileges,
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

/// The snapshot's large objects' archive (checked like the schema's), the pg_restore to restore
/// it with, and the pg_dump that wrote it; None when the snapshot has none. Missing pg_restore is
/// refused before anything changes: the large objects would otherwise be lost.
fn large_objects_of(
    m: &Manifest,
    opts: &ApplyOptions,
) -> Result<Option<(PathBuf, PathBuf, String)>> {
    let Some((s, lo)) = m
        .schema
        .as_ref()
        .and_then(|s| s.large_objects.as_ref().map(|lo| (s, lo)))
    else {
        return Ok(None);
    };
    let pg_restore = opts.pg_restore.clone().ok_or_else(|| {
        anyhow!(
            "the snapshot holds large objects, and restoring them needs pg_restore {} or newer, \
             which was not found (in client mode: STEEP_PG_RESTORE, PATH, steep's PostgreSQL; in \
             direct mode: next to the server's postgres); nothing was changed",
            schema_archive::tool_major(&s.pg_dump)
        )
    })?;
    let file = crate::engine::paths::open_inside(&opts.input, &lo.name)
        .with_context(|| format!("opening {}", lo.name))?;
    if !opts.verify_checksums && crate::engine::checksum::sha256_of(file)?.0 != lo.sha256 {
        bail!(
            "{}: checksum mismatch, the file is damaged or was changed",
            lo.name
        );
    }
    Ok(Some((
        opts.input.join(&lo.name),
        pg_restore,
        s.pg_dump.clone(),
    )))
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

/// Which of the tables to load hold rows on the target now (those already loaded do not count).
/// Only tables on a foreign key between the snapshot's tables are asked (the answer matters only
/// there); the others count as empty.
fn tables_with_rows(
    c: &mut postgres::Client,
    m: &Manifest,
    done: &[bool],
    edges: &[(usize, usize)],
) -> Result<Vec<bool>> {
    m.tables
        .iter()
        .zip(done)
        .enumerate()
        .map(|(i, (t, done))| {
            if *done || !edges.iter().any(|(c, p)| c != p && (*c == i || *p == i)) {
                return Ok(false);
            }
            // A loader may TRUNCATE and INSERT without SELECT: then assume rows (the table only
            // loads together with the tables referencing it).
            let readable: bool = c
                .query_one(
                    "SELECT has_table_privilege($1::text::regclass, 'SELECT')",
                    &[&t.qualified()],
                )?
                .get(0);
            if !readable {
                return Ok(true);
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
