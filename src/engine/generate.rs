//! Snapshot generate: every table from one MVCC snapshot (exported by a coordinating transaction
//! and imported by each parallel connection), large tables split into ctid ranges, COPY streamed
//! straight into compression and SHA-256, schema DDL from pg_dump at the same snapshot, sequences,
//! and the manifest written last.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::catalog::{self, prepare_session, TableInfo};
use crate::engine::checksum::HashingWriter;
use crate::engine::compress::Compression;
use crate::engine::counters::Counters;
use crate::engine::manifest::{self, DataFile, Manifest, Needs, Sequence, Source, Table};
use crate::engine::needs;
use crate::engine::partial_output;
use crate::engine::scheduler::{self, Stop, Tasks};
use crate::engine::schema_archive;
use crate::engine::wire::Session;
use crate::engine::Connect;
use crate::sql::quote_literal;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub output: PathBuf,
    pub snapshot_id: String,
    /// "direct" or "client".
    pub mode: String,
    /// Who writes it ("job 42", "client pid 123"), named in the partial-output marker: a dead
    /// job's sweep removes only what that very job wrote.
    pub run: String,
    pub compression: Compression,
    pub parallel: usize,
    /// The pg_dump that writes the schema archive (None: the snapshot has no schema DDL).
    pub pg_dump: Option<PathBuf>,
    /// Tables larger than this are read in several ctid ranges (in parallel).
    pub chunk_bytes: u64,
    /// Which tables, with pg_dump's patterns and semantics (empty: every table).
    pub selection: Selection,
    /// Take the snapshot at this logical replication slot's consistent point (its exported
    /// snapshot, which the replication connection that created the slot keeps valid while
    /// `generate` runs); None: at the moment the snapshot starts.
    pub slot: Option<SlotSnapshot>,
}

/// A slot created with `SNAPSHOT 'export'`: its name, consistent point and exported snapshot.
#[derive(Debug, Clone)]
pub struct SlotSnapshot {
    pub slot: String,
    pub consistent_point: String,
    pub snapshot: String,
}

/// pg_dump's `-t`, `-T`, `-n`, `-N`: pg_dump itself resolves them (the schema archive is dumped
/// with them, and the tables copied are the ones its table of contents lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub tables: Vec<String>,
    pub exclude_tables: Vec<String>,
    pub schemas: Vec<String>,
    pub exclude_schemas: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
            && self.exclude_tables.is_empty()
            && self.schemas.is_empty()
            && self.exclude_schemas.is_empty()
    }

    /// As pg_dump's arguments.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        for (flag, values) in [
            ("--table", &self.tables),
            ("--exclude-table", &self.exclude_tables),
            ("--schema", &self.schemas),
            ("--exclude-schema", &self.exclude_schemas),
        ] {
            for v in values {
                out.push(format!("{flag}={v}").into());
            }
        }
        out
    }
}

impl GenerateOptions {
    pub const DEFAULT_CHUNK_BYTES: u64 = 256 << 20;
}

/// One COPY into one file.
pub(crate) struct Item {
    pub(crate) table: usize,
    pub(crate) part: usize,
    /// Block range [start, end); None = the whole table.
    pub(crate) range: Option<(i64, Option<i64>)>,
    pub(crate) file: String,
    pub(crate) estimate: u64,
}

/// Removes what a failed or cancelled run created.
struct OutputGuard {
    dir: PathBuf,
    created_dir: bool,
    armed: bool,
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.created_dir {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            for sub in ["data", "schema"] {
                let _ = fs::remove_dir_all(self.dir.join(sub));
            }
            let _ = fs::remove_file(self.dir.join(format!("{}.tmp", manifest::FILE)));
            partial_output::unmark(&self.dir);
        }
    }
}

fn prepare_output(dir: &Path, snapshot_id: &str, run: &str) -> Result<OutputGuard> {
    let created_dir = if dir.exists() {
        if !dir.is_dir() {
            bail!("{} exists and is not a directory", dir.display());
        }
        if fs::read_dir(dir)?.next().is_some() {
            bail!("{}", partial_output::refusal(dir));
        }
        false
    } else {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        true
    };
    let guard = OutputGuard {
        dir: dir.to_path_buf(),
        created_dir,
        armed: true,
    };
    partial_output::mark(dir, snapshot_id, run)?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.join("data"))
        .with_context(|| format!("creating {}/data", dir.display()))?;
    Ok(guard)
}

pub fn generate(
    src: &dyn Connect,
    opts: &GenerateOptions,
    progress: &Counters,
) -> Result<Manifest> {
    let parallel = opts.parallel.clamp(1, 64);
    let mut guard = prepare_output(&opts.output, &opts.snapshot_id, &opts.run)?;
    progress.set_phase("preparing");

    let mut coord = src.connect().context("connecting to the source")?;
    progress.watch_client(&coord);
    prepare_session(&mut coord)?;
    coord.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    if let Some(slot) = &opts.slot {
        // The coordinator imports the slot's snapshot and exports it again for pg_dump and the
        // parallel sessions: the copy then does not depend on the replication connection beyond
        // this statement.
        coord
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT {}",
                quote_literal(&slot.snapshot)
            ))
            .map_err(crate::db_error::db_error)
            .with_context(|| format!("importing the snapshot of slot {}", slot.slot))?;
    }
    let exported: String = coord
        .query_one("SELECT pg_export_snapshot()", &[])
        .context("exporting a snapshot (is the source a standby? use its primary)")?
        .get(0);
    let info = catalog::server_info(&mut coord)?;
    let owner: String = coord.query_one("SELECT current_user::text", &[])?.get(0);
    let (shapes, tables) = catalog::shapes_and_tables(&mut coord)?;
    let seq_names = catalog::sequences(&mut coord)?;
    // As pg_dump: a table the role may not read is named (with the way to leave it out) rather
    // than copied in part or skipped.
    if opts.selection.is_empty() {
        let oids: Vec<i64> = tables.iter().map(|t| t.oid).collect();
        let sequences: Vec<String> = seq_names
            .iter()
            .map(|(s, n)| crate::sql::qualified(s, n))
            .collect();
        let unreadable: Vec<String> = coord
            .query(
                "SELECT c.oid::regclass::text FROM pg_class c
                 WHERE (c.oid::int8 = ANY($1) OR c.oid = ANY($2::text[]::regclass[]))
                   AND NOT has_table_privilege(c.oid, 'SELECT')
                 ORDER BY 1",
                &[&oids, &sequences],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !unreadable.is_empty() {
            bail!(
                "the role may not read {}: nothing was written; leave them out with -T/--exclude-table \
                 (as pg_dump), or snapshot as a role that may read them",
                unreadable.join(", ")
            );
        }
    }
    // The schema first (the same exported snapshot): with patterns, pg_dump's own resolution of
    // them says which tables the snapshot holds.
    // Large objects travel in pg_dump's archive: without pg_dump they would be lost silently.
    // (With patterns pg_dump leaves them out, and so does the snapshot.)
    let large_objects: bool = opts.selection.is_empty()
        && coord
            .query_one("SELECT EXISTS (SELECT FROM pg_largeobject_metadata)", &[])?
            .get::<_, bool>(0);
    let schema = match &opts.pg_dump {
        Some(pg_dump) => {
            progress.set_phase("schema");
            let files = schema_archive::dump(
                src,
                pg_dump,
                &exported,
                &opts.output,
                large_objects,
                &opts.selection,
                &|| progress.cancelled(),
            )?;
            private_file(&opts.output.join(&files.archive.name))?;
            if let Some(lo) = &files.large_objects {
                private_file(&opts.output.join(&lo.name))?;
            }
            Some(files)
        }
        None if !opts.selection.is_empty() => bail!(
            "choosing tables (-t, -T, -n, -N) needs pg_dump, which resolves the patterns, and none \
             was found (or the schema was not asked for): install pg_dump or drop the patterns"
        ),
        None if large_objects => bail!(
            "the source has large objects, which a snapshot carries in pg_dump's archive, and \
             this snapshot has none (no pg_dump was found, or the schema was not asked for): \
             generate it with pg_dump available and the schema included"
        ),
        None => None,
    };
    // The objects pg_dump's table of contents lists (by oid: the same catalog, the same
    // snapshot), and what they need on a target that the archive does not create.
    let (objects, needs) = match &schema {
        Some(files) => {
            let objects = schema_archive::catalog_objects(
                opts.pg_dump.as_deref().expect("pg_dump ran"),
                &opts.output.join(&files.archive.name),
            )?;
            let pairs: Vec<(i64, i64)> = objects.iter().map(|(c, o, _)| (*c, *o)).collect();
            let includes = !opts.selection.tables.is_empty() || !opts.selection.schemas.is_empty();
            let needs = needs::of_source(&mut coord, &pairs, includes)?;
            (objects, needs)
        }
        None => (Vec::new(), Needs::default()),
    };
    let (shapes, tables, seq_names) = match (&schema, opts.selection.is_empty()) {
        (Some(_), false) => {
            // The relations the table of contents lists, by name.
            let oids = schema_archive::relation_oids(&objects);
            let chosen: std::collections::HashSet<(String, String)> = coord
                .query(
                    "SELECT n.nspname::text, c.relname::text
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid::int8 = ANY($1)",
                    &[&oids],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let has =
                |schema: &str, name: &str| chosen.contains(&(schema.to_string(), name.to_string()));
            (
                shapes
                    .into_iter()
                    .filter(|t| has(&t.schema, &t.name))
                    .collect(),
                tables
                    .into_iter()
                    .filter(|t| has(&t.schema, &t.name))
                    .collect::<Vec<_>>(),
                seq_names.into_iter().filter(|(s, n)| has(s, n)).collect(),
            )
        }
        _ => (shapes, tables, seq_names),
    };
    if tables.is_empty() && !opts.selection.is_empty() {
        bail!("the patterns (-t, -T, -n, -N) match no table");
    }
    let (block_size, created_at): (i32, String) = {
        let r = coord.query_one(
            "SELECT current_setting('block_size')::int,
                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            &[],
        )?;
        (r.get(0), r.get(1))
    };

    let items = plan(
        &tables,
        parallel,
        opts.chunk_bytes,
        block_size,
        &opts.compression,
    );
    expect(progress, tables.len(), &items);
    let parts_left: Vec<AtomicUsize> = tables
        .iter()
        .enumerate()
        .map(|(t, _)| AtomicUsize::new(items.iter().filter(|i| i.table == t).count()))
        .collect();

    progress.set_phase("copying");
    // Largest first, so the long copies start early and the pool ends together.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|a, b| items[*b].estimate.cmp(&items[*a].estimate).then(a.cmp(b)));
    let mut rank = vec![0; items.len()];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r;
    }
    let ran = scheduler::run(
        Tasks {
            count: items.len(),
            after: &[],
            rank: Some(&rank),
        },
        parallel,
        &|| progress.cancelled(),
        || snapshot_session(src, &exported, progress),
        |c, i, stop| {
            let item = &items[i];
            let t = &tables[item.table];
            progress.set_table(Some(format!("{}.{}", t.schema, t.name)));
            let f = copy_out(c, t, item, &opts.output, &opts.compression, progress, stop)
                .with_context(|| format!("copying {}", t.qualified()))?;
            if parts_left[item.table].fetch_sub(1, Ordering::AcqRel) == 1 {
                progress.tables_done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(f)
        },
    );
    if let Some(e) = ran.error {
        return Err(e);
    }
    let mut results = ran.results;
    if progress.cancelled() {
        return Err(crate::engine::error::cancelled(
            "the partial snapshot was removed",
        ));
    }
    progress.set_table(None);

    progress.set_phase("sequences");
    let sequences = read_sequences(&mut coord, seq_names)?;
    coord.batch_execute("COMMIT")?;

    let mut out_tables = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        let mut files: Vec<(usize, DataFile)> = Vec::new();
        for (i, item) in items.iter().enumerate().filter(|(_, it)| it.table == ti) {
            let f = results[i]
                .take()
                .ok_or_else(|| anyhow!("{} was not copied", item.file))?;
            files.push((item.part, f));
        }
        files.sort_by_key(|(p, _)| *p);
        let files: Vec<DataFile> = files.into_iter().map(|(_, f)| f).collect();
        out_tables.push(Table {
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: t.columns.clone(),
            primary_key: t.primary_key.clone(),
            rows: files.iter().map(|f| f.rows).sum(),
            raw_bytes: files.iter().map(|f| f.raw_bytes).sum(),
            stored_bytes: files.iter().map(|f| f.stored_bytes).sum(),
            files,
        });
    }
    let m = Manifest {
        format: manifest::FORMAT,
        snapshot_id: opts.snapshot_id.clone(),
        mode: opts.mode.clone(),
        created_at,
        source: Source {
            node_id: info.node_id,
            database: info.database,
            server_version: info.server_version,
            system_identifier: info.system_identifier,
        },
        // At a slot's consistent point the data is exactly there (what the slot streams begins
        // after it); otherwise where the source's WAL was while the snapshot began.
        lsn: opts
            .slot
            .as_ref()
            .map_or(info.lsn, |s| s.consistent_point.clone()),
        slot: opts.slot.as_ref().map(|s| s.slot.clone()),
        compression: opts.compression,
        parallel,
        tables: out_tables,
        sequences,
        schema,
        generator: format!("steep {}", env!("CARGO_PKG_VERSION")),
        owner: Some(owner),
        shapes,
        needs,
    };
    progress.set_phase("manifest");
    m.write(&opts.output)?;
    guard.armed = false;
    partial_output::unmark(&opts.output);
    progress.set_phase("complete");
    Ok(m)
}

/// Only the snapshot's maker (its OS user) may read what it writes: pg_dump creates files with
/// the process umask.
fn private_file(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Split tables into COPY items: large tables into block ranges when reading in parallel.
pub(crate) fn plan(
    tables: &[TableInfo],
    parallel: usize,
    chunk_bytes: u64,
    block_size: i32,
    compression: &Compression,
) -> Vec<Item> {
    let mut items = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        let size = t.size_bytes.max(0) as u64;
        let blocks = size / block_size.max(1) as u64;
        let chunks = if parallel > 1 && size > chunk_bytes && chunk_bytes > 0 {
            size.div_ceil(chunk_bytes).min(1024).min(blocks.max(1))
        } else {
            1
        };
        let step = blocks.div_ceil(chunks).max(1) as i64;
        for part in 0..chunks as usize {
            let range = if chunks == 1 {
                None
            } else {
                let start = part as i64 * step;
                // The last range is open: rows of pages added since the size was read are not
                // in our snapshot anyway, and nothing can be missed.
                let end = (part + 1 < chunks as usize).then_some(start + step);
                Some((start, end))
            };
            items.push(Item {
                table: ti,
                part,
                range,
                file: format!("data/t{ti:05}.{part:03}.copy{}", compression.extension()),
                estimate: (size / chunks).max(1),
            });
        }
    }
    items
}

/// What a copy of `tables` tables in `items` will count to, for the progress record.
pub(crate) fn expect(progress: &Counters, tables: usize, items: &[Item]) {
    progress
        .tables_total
        .store(tables as u64, Ordering::Relaxed);
    progress.bytes_total.store(
        items.iter().map(|i| i.estimate).sum::<u64>().max(1),
        Ordering::Relaxed,
    );
}

/// A parallel reading session: the fast path when possible, watched for cancel, in a
/// transaction that imported `exported`.
pub(crate) fn snapshot_session(
    src: &dyn Connect,
    exported: &str,
    progress: &Counters,
) -> Result<Session> {
    let mut c = src.session().context("opening a parallel connection")?;
    if let Some(cancel) = c.canceller() {
        progress.watch(cancel);
    }
    c.simple(catalog::SESSION_SETTINGS)?;
    c.simple(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
         SET TRANSACTION SNAPSHOT {}",
        quote_literal(exported)
    ))
    .context("importing the exported snapshot")?;
    Ok(c)
}

/// The sequences' values, as the session's snapshot sees them.
pub(crate) fn read_sequences(
    coord: &mut postgres::Client,
    names: Vec<(String, String)>,
) -> Result<Vec<Sequence>> {
    let mut sequences = Vec::new();
    for (schema_name, name) in names {
        let r = coord
            .query_one(
                &format!(
                    "SELECT last_value, is_called FROM {}",
                    crate::sql::qualified(&schema_name, &name)
                ),
                &[],
            )
            .with_context(|| format!("reading sequence {schema_name}.{name}"))?;
        sequences.push(Sequence {
            schema: schema_name,
            name,
            last_value: r.get(0),
            is_called: r.get(1),
        });
    }
    Ok(sequences)
}

/// Run a COPY out, handing its data to `write`: returns the rows and bytes read, counted into
/// `progress` as they come; `stop` ends it.
pub(crate) fn copy_counted(
    c: &mut Session,
    sql: &str,
    progress: &Counters,
    stop: &Stop,
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<(u64, u64)> {
    let (mut rows, mut raw, mut pending) = (0u64, 0u64, 0u64);
    c.copy_out(sql, |buf| {
        // In COPY text a row ends with a newline; newlines inside values are escaped.
        rows += memchr::memchr_iter(b'\n', buf).count() as u64;
        raw += buf.len() as u64;
        write(buf)?;
        // Shared counters and the stop flags are touched every 64 KiB, not every row.
        pending += buf.len() as u64;
        if pending >= 64 * 1024 {
            progress.bytes_done.fetch_add(pending, Ordering::Relaxed);
            pending = 0;
            if stop.stopping() {
                bail!("stopped");
            }
        }
        Ok(())
    })?;
    progress.bytes_done.fetch_add(pending, Ordering::Relaxed);
    Ok((rows, raw))
}

/// The COPY that reads one item: the whole table, or a block range of it.
pub(crate) fn copy_out_sql(t: &TableInfo, item: &Item) -> String {
    match item.range {
        None => format!(
            "COPY {}{} TO STDOUT",
            t.qualified(),
            manifest::copy_list(&t.columns)
        ),
        Some((start, end)) => format!(
            "COPY (SELECT {} FROM ONLY {} WHERE ctid >= '({start},0)'::tid{}) TO STDOUT",
            manifest::select_list(&t.columns),
            t.qualified(),
            end.map(|e| format!(" AND ctid < '({e},0)'::tid"))
                .unwrap_or_default()
        ),
    }
}

fn copy_out(
    c: &mut Session,
    t: &TableInfo,
    item: &Item,
    dir: &Path,
    compression: &Compression,
    progress: &Counters,
    stop: &Stop,
) -> Result<DataFile> {
    let sql = copy_out_sql(t, item);
    let path = dir.join(&item.file);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut enc =
        compression.encoder(HashingWriter::new(BufWriter::with_capacity(1 << 20, file)))?;
    let (rows, raw) = copy_counted(c, &sql, progress, stop, |buf| {
        enc.write_all(buf)
            .with_context(|| format!("writing {}", path.display()))
    })?;
    progress.rows_done.fetch_add(rows, Ordering::Relaxed);
    let (buf, sha256, stored) = enc.finish()?.finish();
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(DataFile {
        name: item.file.clone(),
        rows,
        raw_bytes: raw,
        stored_bytes: stored,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(size: i64) -> TableInfo {
        TableInfo {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![],
            primary_key: vec![],
            size_bytes: size,
        }
    }

    #[test]
    fn large_tables_split_into_contiguous_ranges_small_ones_do_not() {
        let c = Compression::NONE;
        let items = plan(&[table(8192 * 1000), table(8192)], 4, 8192 * 300, 8192, &c);
        let big: Vec<_> = items.iter().filter(|i| i.table == 0).collect();
        assert_eq!(big.len(), 4);
        assert_eq!(big[0].range, Some((0, Some(250))));
        assert_eq!(big[1].range, Some((250, Some(500))));
        assert_eq!(big[3].range, Some((750, None)));
        assert_eq!(items.iter().filter(|i| i.table == 1).count(), 1);
        assert_eq!(items.last().unwrap().range, None);
        // One connection: no split at all.
        assert_eq!(plan(&[table(8192 * 1000)], 1, 8192, 8192, &c).len(), 1);
        assert_eq!(items[0].file, "data/t00000.000.copy");
    }
}
