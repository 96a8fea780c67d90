//! Loading: units of tables in foreign-key order on the scheduler, each in one transaction (empty,
//! COPY, counts checked, marker committed).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};

use super::markers::Markers;
use super::SchemaMode;
use crate::db_error::db_error;
use crate::engine::catalog::{prepare_session, ForeignKey};
use crate::engine::counters::Counters;
use crate::engine::fkorder::load_units;
use crate::engine::manifest::{copy_list, Manifest, Table};
use crate::engine::scheduler::{self, Tasks};
use crate::engine::triggers;
use crate::engine::Connect;
use crate::sql::quote_ident;

pub(super) struct Plan<'a> {
    pub(super) m: &'a Manifest,
    pub(super) dir: &'a Path,
    pub(super) markers: Option<&'a Markers>,
    /// Let the target's user triggers fire during the load.
    pub(super) fire_triggers: bool,
    pub(super) schema: SchemaMode,
    pub(super) oids: &'a [i64],
    pub(super) fks: &'a [ForeignKey],
    pub(super) units: &'a [Vec<usize>],
    /// (child, parent) foreign keys between the snapshot's tables.
    pub(super) edges: &'a [(usize, usize)],
    pub(super) index_of: &'a HashMap<i64, usize>,
}

impl Plan<'_> {
    /// Load the units, each once its parents are in, `parallel` at a time. Returns rows loaded.
    pub(super) fn run(
        &self,
        dst: &dyn Connect,
        parallel: usize,
        done: &[bool],
        progress: &Counters,
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
                progress.watch_client(&c);
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
    fn load_unit(&self, c: &mut postgres::Client, unit: usize, progress: &Counters) -> Result<u64> {
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
        // User triggers (DELETE and TRUNCATE ones included) do not fire unless asked to.
        let mut held = Vec::new();
        if !self.fire_triggers {
            for &t in tables {
                held.push(triggers::hold(&mut tx, &self.m.tables[t].qualified())?);
            }
        }
        let holding = held.iter().any(|h| !h.is_empty());
        // Foreign keys inside a cycle: deferrable ones are checked at commit, non-deferrable ones
        // are dropped and added back (which validates every row). Held triggers are enabled
        // again before commit, which ALTER TABLE refuses while checks are pending (and a
        // restricted session may not run them early): then every key inside the cycle is set
        // aside, and checks stay immediate.
        let cyclic = order.iter().any(|u| u.len() > 1);
        tx.batch_execute(if cyclic && !holding {
            "SET CONSTRAINTS ALL DEFERRED"
        } else {
            "SET CONSTRAINTS ALL IMMEDIATE"
        })?;
        let unit_oids: Vec<i64> = tables.iter().map(|t| self.oids[*t]).collect();
        let internal: Vec<&ForeignKey> = self
            .fks
            .iter()
            .filter(|f| {
                (!f.deferrable || holding)
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
        for h in held {
            triggers::release(&mut tx, h)?;
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
        progress: &Counters,
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
            // At most one byte more than the manifest says: a file that expands further (a
            // small compressed file can expand to gigabytes) is stopped there, not sent.
            let mut dec = self
                .m
                .compression
                .decoder(BufReader::with_capacity(1 << 20, file))?
                .take(f.raw_bytes.saturating_add(1));
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
                if raw > f.raw_bytes {
                    bail!(
                        "{} decompresses to more than the {} bytes the manifest says: the \
                         snapshot is damaged",
                        f.name,
                        f.raw_bytes
                    );
                }
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
