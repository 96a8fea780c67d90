//! The copy of `--from snapshot` into existing tables (`--schema verify`): A's tables at the
//! slot's exported snapshot streamed straight into B's — no files, as PostgreSQL's own table sync
//! does — in parallel (large tables in block ranges, as `snapshot generate` splits them). B's
//! sessions write with `session_replication_role = replica`, as logical replication applies rows:
//! only triggers enabled REPLICA or ALWAYS fire, and foreign keys are not checked (the copy is
//! one consistent snapshot). B's tables are emptied first in a transaction of their own: a failed
//! copy leaves them partly loaded, and the init is run again (B's rows are being replaced).

use std::io::Write;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};

use crate::db_error::db_error;
use crate::engine::apply::schema_check::describe_for_apply;
use crate::engine::apply::SchemaMismatch;
use crate::engine::catalog::{self, prepare_session};
use crate::engine::compress::Compression;
use crate::engine::counters::Counters;
use crate::engine::generate::{
    copy_counted, copy_out_sql, expect, plan, read_sequences, snapshot_session,
};
use crate::engine::manifest::copy_list;
use crate::engine::scheduler::{self, Tasks};
use crate::engine::Connect;
use crate::schema_shape;
use crate::sql::{qualified, quote_literal};

/// Stream A's replicated tables, as `snapshot` (exported by the slot's replication connection,
/// which stays open meanwhile) shows them, into B. Returns the rows copied.
pub fn stream(
    a: &dyn Connect,
    b: &dyn Connect,
    snapshot: &str,
    parallel: usize,
    chunk_bytes: u64,
    progress: &Counters,
) -> Result<u64> {
    let parallel = parallel.clamp(1, 64);
    let mut coord = a.connect().context("connecting to the first node")?;
    progress.watch_client(&coord);
    prepare_session(&mut coord)?;
    coord.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    coord
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        ))
        .map_err(db_error)
        .context("importing the slot's snapshot")?;
    // Exported again from this transaction: the parallel sessions need only it.
    let exported: String = coord
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])?
        .get(0);
    let (shapes, tables) = catalog::shapes_and_tables(&mut coord)?;
    let sequence_names = catalog::sequences(&mut coord)?;
    let sequences = read_sequences(&mut coord, sequence_names)?;
    let block_size: i32 = coord
        .query_one("SELECT current_setting('block_size')::int", &[])?
        .get(0);

    // B's tables must take A's rows: the one shape comparison, as `apply --schema verify`.
    let mut target = b.connect().context("connecting to the second node")?;
    progress.watch_client(&target);
    prepare_session(&mut target)?;
    let (target_shapes, _) = catalog::shapes_and_tables(&mut target)?;
    let mut diffs: Vec<String> =
        schema_shape::diff(&shapes, &target_shapes, schema_shape::Scope::LocalTables)
            .iter()
            .filter(|d| d.breaks_replication)
            .map(describe_for_apply)
            .collect();
    let have = catalog::sequences(&mut target)?;
    diffs.extend(
        sequences
            .iter()
            .filter(|s| !have.iter().any(|(n, r)| *n == s.schema && *r == s.name))
            .map(|s| format!("sequence {} is missing", qualified(&s.schema, &s.name))),
    );
    if !diffs.is_empty() {
        return Err(SchemaMismatch(diffs).into());
    }

    // A table only B has that references a replicated one would stop the TRUNCATE (and its
    // rows would lose their parents): refused before anything is emptied.
    let names: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
    let outside: Vec<String> = target
        .query(
            "SELECT DISTINCT pg_catalog.format('%s references %s', c.conrelid::pg_catalog.regclass,
                                                c.confrelid::pg_catalog.regclass)
               FROM pg_catalog.pg_constraint c
              WHERE c.contype = 'f'
                AND c.confrelid = ANY($1::text[]::pg_catalog.regclass[])
                AND NOT c.conrelid = ANY($1::text[]::pg_catalog.regclass[])
              ORDER BY 1",
            &[&names],
        )
        .map_err(db_error)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !outside.is_empty() {
        return Err(SchemaMismatch(
            outside
                .into_iter()
                .map(|o| format!("{o}, a table the first node does not have"))
                .collect(),
        )
        .into());
    }
    progress.set_phase("emptying");
    if !names.is_empty() {
        // Bounded: an idle transaction on B must fail the init, not hold every query on B's
        // tables behind the TRUNCATE's lock.
        target
            .batch_execute(&format!(
                "BEGIN; SET LOCAL session_replication_role = replica;
                 SET LOCAL lock_timeout = '30s'; TRUNCATE ONLY {}; COMMIT",
                names.join(", ")
            ))
            .map_err(db_error)
            .context("emptying the second node's tables")?;
    }
    let plan_of = |tables: &[crate::engine::catalog::TableInfo]| {
        plan(
            tables,
            parallel,
            chunk_bytes,
            block_size,
            &Compression::NONE,
        )
    };
    load(a, b, &tables, &exported, &plan_of(&tables), parallel, progress).context(
        "the second node's tables were emptied and are partly loaded; the next init loads them again",
    )?;
    coord.batch_execute("COMMIT")?;
    progress.set_table(None);
    progress.set_phase("sequences");
    for s in &sequences {
        target
            .execute(
                "SELECT pg_catalog.setval($1::text::pg_catalog.regclass, $2, $3)",
                &[&qualified(&s.schema, &s.name), &s.last_value, &s.is_called],
            )
            .map_err(db_error)
            .with_context(|| format!("restoring sequence {}.{}", s.schema, s.name))?;
    }
    Ok(progress.rows_done.load(Ordering::Relaxed))
}

/// Every item of every table from A (at `exported`) into B, `parallel` at a time.
fn load(
    a: &dyn Connect,
    b: &dyn Connect,
    tables: &[crate::engine::catalog::TableInfo],
    exported: &str,
    items: &[crate::engine::generate::Item],
    parallel: usize,
    progress: &Counters,
) -> Result<()> {
    expect(progress, tables.len(), items);
    progress.set_phase("copying");
    let ran = scheduler::run(
        Tasks {
            count: items.len(),
            after: &[],
            rank: None,
        },
        parallel,
        &|| progress.cancelled(),
        || {
            let from = snapshot_session(a, exported, progress)?;
            let mut to = b.connect().context("opening a loading connection")?;
            progress.watch_client(&to);
            prepare_session(&mut to)?;
            to.batch_execute("SET session_replication_role = replica")
                .map_err(db_error)?;
            Ok((from, to))
        },
        |(from, to), i, stop| {
            let item = &items[i];
            let t = &tables[item.table];
            progress.set_table(Some(format!("{}.{}", t.schema, t.name)));
            let mut tx = to.transaction()?;
            let mut writer = tx
                .copy_in(&format!(
                    "COPY {}{} FROM STDIN",
                    t.qualified(),
                    copy_list(&t.columns)
                ))
                .map_err(db_error)?;
            let (rows, _) = copy_counted(from, &copy_out_sql(t, item), progress, stop, |buf| {
                Ok(writer.write_all(buf)?)
            })
            .with_context(|| format!("reading {}", t.qualified()))?;
            let loaded = writer
                .finish()
                .map_err(db_error)
                .with_context(|| format!("loading {}", t.qualified()))?;
            if loaded != rows {
                bail!("{}: {rows} rows read, {loaded} loaded", t.qualified());
            }
            tx.commit().map_err(db_error)?;
            progress.rows_done.fetch_add(loaded, Ordering::Relaxed);
            Ok(loaded)
        },
    );
    // A cancel stops the sessions mid-COPY: that is the cancel, not their errors.
    if progress.cancelled() {
        return Err(crate::engine::error::cancelled(
            "the init removes what it made",
        ));
    }
    if let Some(e) = ran.error {
        return Err(e);
    }
    Ok(())
}
