//! The conflicts of two nodes with both row images — what the operator decides on, at a prompt
//! or in a decisions file — and the decisions file itself.
//!
//! A decisions file (format `steep-merge-decisions`, version 1) is JSON:
//!
//! ```json
//! { "format": "steep-merge-decisions", "version": 1, "created_at": "...",
//!   "local": "host=a dbname=app", "peer": "host=b dbname=app",
//!   "conflicts": [
//!     { "table": "public.customers", "key": "(42)", "pk": {"id": "42"},
//!       "local_hash": "-812...", "remote_hash": "1993...",
//!       "differing_columns": ["email"],
//!       "local_row": {"id": "42", "email": "a@x"}, "remote_row": {"id": "42", "email": "b@x"},
//!       "decision": null } ] }
//! ```
//!
//! `decision` is `"keep_local"`, `"keep_remote"`, `"skip"` or null (undecided). The hashes (64-bit
//! integers as strings, so tools that read JSON numbers as doubles keep them exact) bind the
//! decision to the rows it was made on: a row changed since is undecided again.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::catalog::TableInfo;
use crate::engine::counters::Counters;
use crate::engine::error::cancelled;
use crate::engine::merge::ledger::Decision;
use crate::engine::merge::overlap;
use crate::engine::merge::rows;
use crate::engine::merge::strategy::Resolution;
use crate::engine::merge::{open, preflight};
use crate::engine::Connect;

pub const FORMAT: &str = "steep-merge-decisions";
pub const VERSION: u32 = 1;

/// One conflict as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub table: String,
    pub key: String,
    pub pk: serde_json::Value,
    pub local_hash: String,
    pub remote_hash: String,
    pub differing_columns: Vec<String>,
    pub local_row: serde_json::Value,
    pub remote_row: serde_json::Value,
    #[serde(default)]
    pub decision: Option<String>,
}

/// What applying a decisions file reads of each conflict (its row images are for the reader).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    pub table: String,
    pub key: String,
    pub local_hash: String,
    pub remote_hash: String,
    #[serde(default)]
    pub decision: Option<String>,
}

impl Entry {
    /// Its decision, bound to its row hashes; None when undecided.
    pub fn decided(&self, by: &str) -> Result<Option<Decision>> {
        let Some(d) = &self.decision else {
            return Ok(None);
        };
        let resolution = match Resolution::parse(d) {
            Some(r @ (Resolution::KeepLocal | Resolution::KeepRemote | Resolution::Skip)) => r,
            _ => bail!(
                "{} {}: decision {d:?} is not one of keep_local, keep_remote, skip (or null)",
                self.table,
                self.key
            ),
        };
        let hash = |h: &str, which: &str| -> Result<i64> {
            h.parse().with_context(|| {
                format!(
                    "{} {}: {which} {h:?} is not a 64-bit integer",
                    self.table, self.key
                )
            })
        };
        Ok(Some(Decision {
            local_hash: Some(hash(&self.local_hash, "local_hash")?),
            remote_hash: Some(hash(&self.remote_hash, "remote_hash")?),
            resolution,
            decided_by: by.to_string(),
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionsFile {
    pub format: String,
    pub version: u32,
    pub created_at: String,
    pub local: String,
    pub peer: String,
    pub conflicts: Vec<Conflict>,
}

impl DecisionsFile {
    /// The decisions of a file (without building its row images: a file of 100 000 conflicts
    /// is tens of MiB).
    pub fn read(path: &std::path::Path) -> Result<Vec<Entry>> {
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            version: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Body {
            conflicts: Vec<Entry>,
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading decisions file {}", path.display()))?;
        let v: Header = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object", path.display()))?;
        if v.format.as_deref() != Some(FORMAT) {
            bail!(
                "{} is not a steep decisions file (no \"format\": \"{FORMAT}\"): write one with \
                 steep merge analyze --decisions-out FILE",
                path.display()
            );
        }
        match v.version {
            Some(n) if n == VERSION as u64 => {}
            other => bail!(
                "{} is a version {} decisions file; this steep reads version {VERSION}",
                path.display(),
                other
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "(none)".into())
            ),
        }
        Ok(serde_json::from_str::<Body>(&text)
            .with_context(|| format!("reading {}", path.display()))?
            .conflicts)
    }
}

/// The columns whose values differ between two row images.
pub fn differing_columns(local: &serde_json::Value, remote: &serde_json::Value) -> Vec<String> {
    let (Some(l), Some(r)) = (local.as_object(), remote.as_object()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = l
        .iter()
        .filter(|(k, v)| r.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(r.keys().filter(|k| !l.contains_key(*k)).cloned());
    out
}

/// Every conflict of `t`, with both images, read in one snapshot of each node (the caller's
/// REPEATABLE READ transactions).
pub fn of_table(
    l: &mut postgres::Client,
    p: &mut postgres::Client,
    temp: (bool, bool),
    t: &TableInfo,
) -> Result<Vec<Conflict>> {
    let (_, diff) = overlap::compare_rows(l, p, t)?;
    let conflicts: Vec<&overlap::Differing> = diff
        .iter()
        .filter(|d| d.local.is_some() && d.remote.is_some())
        .collect();
    if conflicts.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = conflicts.iter().map(|d| d.key.as_str()).collect();
    let (kl, kp) = (
        rows::KeySet::new(l, t, "steep_c", &keys, temp.0)?,
        rows::KeySet::new(p, t, "steep_c", &keys, temp.1)?,
    );
    let (li, ri) = (rows::images(l, t, &kl)?, rows::images(p, t, &kp)?);
    let mut out = Vec::new();
    for d in conflicts {
        let (Some(a), Some(b)) = (li.get(&d.key), ri.get(&d.key)) else {
            continue;
        };
        let local_row: serde_json::Value = serde_json::from_str(&a.row)?;
        let remote_row: serde_json::Value = serde_json::from_str(&b.row)?;
        out.push(Conflict {
            table: t.qualified(),
            key: d.key.clone(),
            pk: serde_json::from_str(&a.pk)?,
            local_hash: d.local.unwrap_or_default().to_string(),
            remote_hash: d.remote.unwrap_or_default().to_string(),
            differing_columns: differing_columns(&local_row, &remote_row),
            local_row,
            remote_row,
            decision: None,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Every conflict of the tables named (none: every table) that `keep` accepts, both nodes
/// compared table by table.
pub fn collect(
    local: &dyn Connect,
    peer: &dyn Connect,
    names: &[String],
    keep: &dyn Fn(&TableInfo) -> bool,
    progress: &Counters,
) -> Result<Vec<Conflict>> {
    progress.set_phase("preflight");
    let mut l = open(local, progress, "local node")?;
    let mut p = open(peer, progress, "peer")?;
    let mut tables = preflight::check(&mut l, &mut p, names)?.tables;
    tables.retain(|t| keep(t));
    let temp = (rows::temp_allowed(&mut l), rows::temp_allowed(&mut p));
    progress.set_phase("reading conflicts");
    let mut out = Vec::new();
    for t in &tables {
        if progress.cancelled() {
            return Err(cancelled("nothing was changed"));
        }
        progress.set_table(Some(t.qualified()));
        for c in [&mut l, &mut p] {
            // Not READ ONLY: the keys go into temporary tables. Rolled back at the end.
            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
        }
        let r = of_table(&mut l, &mut p, temp, t);
        for c in [&mut l, &mut p] {
            let _ = c.batch_execute("ROLLBACK");
        }
        out.extend(r.with_context(|| format!("reading the conflicts of {}", t.qualified()))?);
    }
    progress.set_table(None);
    Ok(out)
}

/// The conflicts a merge asks the operator about: those of the tables whose strategy is ask
/// (none in a dry run, which decides nothing).
pub fn asked(
    local: &dyn Connect,
    peer: &dyn Connect,
    opts: &crate::engine::merge::apply::MergeOptions,
    progress: &Counters,
) -> Result<Vec<Conflict>> {
    match (opts.ask_tables(), opts.dry_run) {
        (Some(names), false) => collect(
            local,
            peer,
            &names,
            &|t| opts.asks_for(&t.schema, &t.name),
            progress,
        ),
        _ => Ok(Vec::new()),
    }
}

/// The conflicts of a merge as the server keeps them for the operator while its job waits
/// (`merge_conflicts`): $1 merge_id, then per conflict schema, table, key, local_hash,
/// remote_hash, pk, local_row, remote_row (JSON text), differing_columns (JSON text).
pub const STORE: &str = "INSERT INTO steep_repl.merge_conflicts
        (merge_id, schema_name, table_name, key, local_hash, remote_hash, pk, local_row,
         remote_row, differing_columns)
    SELECT $1, s, t, k, lh, rh, pk::jsonb, l::jsonb, r::jsonb,
           ARRAY(SELECT pg_catalog.jsonb_array_elements_text(d::jsonb))
      FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]),
                      pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::int8[]),
                      pg_catalog.unnest($6::int8[]), pg_catalog.unnest($7::text[]),
                      pg_catalog.unnest($8::text[]), pg_catalog.unnest($9::text[]),
                      pg_catalog.unnest($10::text[])) AS u(s, t, k, lh, rh, pk, l, r, d)
    ON CONFLICT (merge_id, schema_name, table_name, key) DO UPDATE
       SET local_hash = EXCLUDED.local_hash, remote_hash = EXCLUDED.remote_hash, pk = EXCLUDED.pk,
           local_row = EXCLUDED.local_row, remote_row = EXCLUDED.remote_row,
           differing_columns = EXCLUDED.differing_columns";

/// How many of a merge's stored conflicts have no decision made on their rows as stored (the
/// count `merge_progress` shows).
pub const UNDECIDED_COUNT: &str = "SELECT p.undecided FROM steep_repl.merge_progress($1) AS p";

/// A conflict's `schema.table` (as `sql::qualified` writes it) back into its parts.
pub fn split_table(qualified: &str) -> Result<(String, String)> {
    let (s, t) = crate::sql::parse_qualified_name(qualified)?;
    Ok((s.unwrap_or_else(|| "public".into()), t))
}

/// A merge's stored conflicts, read back by the CLI to ask about them.
pub fn stored(c: &mut postgres::Client, merge_id: &str) -> Result<Vec<Conflict>> {
    let rows = c
        .query(
            "SELECT schema_name, table_name, key, local_hash, remote_hash, pk::text,
                    local_row::text, remote_row::text, differing_columns
               FROM steep_repl.merge_conflicts WHERE merge_id = $1
              ORDER BY schema_name, table_name, key",
            &[&merge_id],
        )
        .context("reading the merge's conflicts")?;
    rows.iter()
        .map(|r| {
            Ok(Conflict {
                table: crate::sql::qualified(&r.get::<_, String>(0), &r.get::<_, String>(1)),
                key: r.get(2),
                local_hash: r.get::<_, Option<i64>>(3).unwrap_or_default().to_string(),
                remote_hash: r.get::<_, Option<i64>>(4).unwrap_or_default().to_string(),
                pk: serde_json::from_str(&r.get::<_, String>(5))?,
                local_row: serde_json::from_str(&r.get::<_, String>(6))?,
                remote_row: serde_json::from_str(&r.get::<_, String>(7))?,
                differing_columns: r.get(8),
                decision: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differing_columns_are_those_whose_values_differ() {
        let l = json!({"id": "1", "a": "x", "b": null});
        let r = json!({"id": "1", "a": "y", "b": "z"});
        assert_eq!(differing_columns(&l, &r), ["a", "b"]);
    }

    #[test]
    fn decisions_bind_to_hashes_and_refuse_unknown_words() {
        let mut c = Entry {
            table: "public.t".into(),
            key: "(1)".into(),
            local_hash: "-5".into(),
            remote_hash: "7".into(),
            decision: None,
        };
        assert_eq!(c.decided("me").unwrap(), None);
        c.decision = Some("keep_remote".into());
        let d = c.decided("me").unwrap().unwrap();
        assert_eq!((d.local_hash, d.remote_hash), (Some(-5), Some(7)));
        assert_eq!(d.resolution, Resolution::KeepRemote);
        c.decision = Some("copied_to_local".into());
        assert!(c.decided("me").is_err());
    }
}
