//! A merge's statements against one node for one table: key sets, row images, "last modified"
//! values, moving rows from one node to the other, and what writing needs (triggers off,
//! sequences ahead). Every statement names the table and its columns quoted, and values travel
//! as parameters or COPY data, never as SQL text.
//!
//! Keys arrive as the text of `ROW(primary key)` (what the digests compare). They are turned back
//! into typed values by casting that text to the row type of a temporary table shaped like the
//! primary key (PostgreSQL's own record input reverses its output under the same settings), so
//! every lookup uses the primary key's index.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

use crate::engine::catalog::TableInfo;
use crate::sql::{quote_ident, quote_literal};

/// Columns per `jsonb_build_object` call (a function takes at most 100 arguments).
const COLUMNS_PER_OBJECT: usize = 40;

fn idents(cols: &[String], prefix: &str) -> String {
    cols.iter()
        .map(|c| format!("{prefix}{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn columns(t: &TableInfo) -> Vec<String> {
    t.columns.iter().map(|c| c.name.clone()).collect()
}

/// A temporary table's qualified name (dropped at the end of the transaction).
pub fn temp(name: &str) -> String {
    format!("pg_temp.{}", quote_ident(name))
}

/// Create `pg_temp.name` shaped like `t`'s primary key and fill it with `keys`.
pub fn load_keys(c: &mut postgres::Client, t: &TableInfo, name: &str, keys: &[&str]) -> Result<()> {
    let tmp = temp(name);
    c.batch_execute(&format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM ONLY {} WITH NO DATA",
        quote_ident(name),
        idents(&t.primary_key, ""),
        t.qualified()
    ))
    .with_context(|| format!("creating a key table for {}", t.qualified()))?;
    if keys.is_empty() {
        return Ok(());
    }
    c.execute(
        &format!("INSERT INTO {tmp} SELECT (k::{tmp}).* FROM pg_catalog.unnest($1::text[]) AS k"),
        &[&keys],
    )
    .with_context(|| format!("loading the keys of {}", t.qualified()))?;
    c.batch_execute(&format!("ANALYZE {tmp}"))?;
    Ok(())
}

/// `FROM ONLY t AS r JOIN pg_temp.keys USING (primary key)`.
fn joined(t: &TableInfo, keys: &str) -> String {
    format!(
        "ONLY {} AS r JOIN {} USING ({})",
        t.qualified(),
        temp(keys),
        idents(&t.primary_key, "")
    )
}

/// A JSON object of columns as text (each through its type's output function: no cast to json,
/// which a type's owner could define, ever runs).
fn json_object(cols: &[String]) -> String {
    if cols.is_empty() {
        return "'{}'::jsonb".into();
    }
    cols.chunks(COLUMNS_PER_OBJECT)
        .map(|chunk| {
            let args = chunk
                .iter()
                .map(|c| {
                    let v = format!("r.{}", quote_ident(c));
                    format!(
                        "{}, CASE WHEN {v} IS NULL THEN NULL ELSE pg_catalog.format('%s', {v}) END",
                        quote_literal(c)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("pg_catalog.jsonb_build_object({args})")
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

/// A row as a merge shows and records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The primary key's columns (JSON text).
    pub pk: String,
    /// Every column (JSON text).
    pub row: String,
}

/// The rows of `t` whose keys are in `pg_temp.keys`, by key text.
pub fn images(
    c: &mut postgres::Client,
    t: &TableInfo,
    keys: &str,
) -> Result<HashMap<String, Image>> {
    let sql = format!(
        "SELECT ROW({})::text, ({})::text, ({})::text FROM {}",
        idents(&t.primary_key, "r."),
        json_object(&t.primary_key),
        json_object(&columns(t)),
        joined(t, keys)
    );
    Ok(c.query(&sql, &[])
        .with_context(|| format!("reading rows of {}", t.qualified()))?
        .iter()
        .map(|r| {
            (
                r.get(0),
                Image {
                    pk: r.get(1),
                    row: r.get(2),
                },
            )
        })
        .collect())
}

/// What "last modified" compares.
#[derive(Debug, Clone)]
pub enum Modified<'a> {
    Column(&'a str),
    CommitTimestamp,
}

/// A column's value as an int8 that orders like it: microseconds for timestamps and dates
/// (±infinity at the ends), the value for integers.
fn modified_expr(t: &TableInfo, how: &Modified) -> Result<String> {
    let to_micros = |v: &str| {
        format!(
            "CASE WHEN {v} IS NULL THEN NULL WHEN {v} = 'infinity' THEN 9223372036854775807 \
             WHEN {v} = '-infinity' THEN -9223372036854775807 \
             ELSE (EXTRACT(epoch FROM {v}) * 1000000)::int8 END"
        )
    };
    Ok(match how {
        Modified::CommitTimestamp => to_micros("pg_catalog.pg_xact_commit_timestamp(r.xmin)"),
        Modified::Column(name) => {
            let Some(col) = t.columns.iter().find(|c| c.name == *name) else {
                bail!(
                    "{} has no column {name:?} for last-modified:{name}: name a timestamp, date \
                     or integer column of the table (--table {}:STRATEGY sets one per table)",
                    t.qualified(),
                    t.qualified()
                );
            };
            let v = format!("r.{}", quote_ident(name));
            let ty = col.type_name.as_str();
            if ty.starts_with("timestamp") || ty == "date" {
                to_micros(&v)
            } else if matches!(ty, "smallint" | "integer" | "bigint") {
                format!("{v}::int8")
            } else {
                bail!(
                    "column {name} of {} is {ty}: last-modified needs a timestamp, date or \
                     integer column",
                    t.qualified()
                );
            }
        }
    })
}

/// Check that `how` can be used on `t` (before anything is read).
pub fn check_modified(t: &TableInfo, how: &Modified) -> Result<()> {
    modified_expr(t, how).map(|_| ())
}

/// The "last modified" value of each row of `t` whose key is in `pg_temp.keys`.
pub fn modified(
    c: &mut postgres::Client,
    t: &TableInfo,
    keys: &str,
    how: &Modified,
) -> Result<HashMap<String, Option<i64>>> {
    // pg_xact_commit_timestamp's date_part is numeric from PostgreSQL 14: exact microseconds.
    let sql = format!(
        "SELECT ROW({})::text, {} FROM {}",
        idents(&t.primary_key, "r."),
        modified_expr(t, how)?,
        joined(t, keys)
    );
    Ok(c.query(&sql, &[])
        .with_context(|| format!("reading last-modified values of {}", t.qualified()))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Copy the rows of `t` whose keys are in `src`'s `pg_temp.keys` into a new `pg_temp.stage` on
/// `dst` (COPY text out of one, into the other, streamed). Returns the rows copied.
pub fn stage(
    src: &mut postgres::Client,
    dst: &mut postgres::Client,
    t: &TableInfo,
    keys: &str,
    stage: &str,
) -> Result<u64> {
    let cols = columns(t);
    dst.batch_execute(&format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM ONLY {} WITH NO DATA",
        quote_ident(stage),
        idents(&cols, ""),
        t.qualified()
    ))
    .with_context(|| format!("creating a staging table for {}", t.qualified()))?;
    let mut out = src
        .copy_out(&format!(
            "COPY (SELECT {} FROM {}) TO STDOUT",
            idents(&cols, "r."),
            joined(t, keys)
        ))
        .with_context(|| format!("reading rows of {}", t.qualified()))?;
    let mut into = dst
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN",
            temp(stage),
            idents(&cols, "")
        ))
        .with_context(|| format!("staging rows of {}", t.qualified()))?;
    std::io::copy(&mut out, &mut into)
        .with_context(|| format!("moving rows of {}", t.qualified()))?;
    drop(out);
    into.finish()
        .with_context(|| format!("staging rows of {}", t.qualified()))
}

/// Write the staged rows into `t`: inserted, or (`update`) existing rows of the same key set to
/// the staged row; never deleted (no foreign key cascades). Identity values are kept as they are.
/// Returns the rows written: fewer than staged means keys collided.
pub fn upsert(c: &mut postgres::Client, t: &TableInfo, stage: &str, update: bool) -> Result<u64> {
    let cols = columns(t);
    let rest: Vec<&String> = cols.iter().filter(|c| !t.primary_key.contains(c)).collect();
    let action = if rest.is_empty() || !update {
        "NOTHING".to_string()
    } else {
        format!(
            "UPDATE SET {}",
            rest.iter()
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    c.execute(
        &format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} \
             ON CONFLICT ({}) DO {action}",
            t.qualified(),
            idents(&cols, ""),
            idents(&cols, ""),
            temp(stage),
            idents(&t.primary_key, "")
        ),
        &[],
    )
    .with_context(|| format!("writing rows of {}", t.qualified()))
}

/// Move every sequence that numbers a column of `t` (serial or identity, of the table or of the
/// partitioned table it belongs to) past the largest value the column holds, so the next
/// insert on this node does not reuse a merged key. Returns the sequences moved.
pub fn sequences_past_keys(c: &mut postgres::Client, t: &TableInfo) -> Result<Vec<String>> {
    let owned = c.query(
        "SELECT root::text, a.attname::text, s.seqrelid::regclass::text
           FROM (SELECT coalesce(pg_catalog.pg_partition_root($1::text::regclass),
                                 $1::text::regclass) AS root) x
           JOIN pg_catalog.pg_attribute a ON a.attrelid = x.root AND a.attnum > 0
                AND NOT a.attisdropped
           JOIN pg_catalog.pg_depend d ON d.refobjid = x.root AND d.refobjsubid = a.attnum
                AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
           JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.objid AND s.seqincrement > 0",
        // By name: the oid is the local node's, and this may be the peer.
        &[&t.qualified()],
    )?;
    let mut moved = Vec::new();
    for r in &owned {
        let (root, col, seq): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let n = c
            .execute(
                &format!(
                    "SELECT pg_catalog.setval({lit}, m::int8)
                       FROM (SELECT max({col}) AS m FROM {root}) x, {seq} s
                      WHERE m IS NOT NULL AND (m > s.last_value OR (m = s.last_value AND NOT s.is_called))",
                    lit = quote_literal(&seq),
                    col = quote_ident(&col),
                ),
                &[],
            )
            .with_context(|| format!("moving sequence {seq} past the keys of {root}"))?;
        if n > 0 {
            moved.push(seq);
        }
    }
    Ok(moved)
}

/// A foreign key of `t` as a check of staged rows: the first staged row (its key text) whose
/// referenced row is missing. For writes made with foreign keys not enforced
/// (`session_replication_role = replica`).
pub fn missing_parent(
    c: &mut postgres::Client,
    t: &TableInfo,
    stage: &str,
) -> Result<Option<(String, String)>> {
    let fks = c.query(
        "SELECT k.conname::text, k.confrelid::regclass::text,
                ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY u(n, i)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                       ORDER BY u.i),
                ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY u(n, i)
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                       ORDER BY u.i)
           FROM pg_catalog.pg_constraint k
          WHERE k.contype = 'f' AND k.conrelid = $1::text::regclass",
        &[&t.qualified()],
    )?;
    for fk in &fks {
        let (name, parent, mine, theirs): (String, String, Vec<String>, Vec<String>) =
            (fk.get(0), fk.get(1), fk.get(2), fk.get(3));
        let not_null = mine
            .iter()
            .map(|m| format!("r.{} IS NOT NULL", quote_ident(m)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let same = mine
            .iter()
            .zip(&theirs)
            .map(|(m, p)| format!("p.{} = r.{}", quote_ident(p), quote_ident(m)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let row = c
            .query_opt(
                &format!(
                    "SELECT ROW({})::text FROM {} AS r WHERE {not_null}
                        AND NOT EXISTS (SELECT FROM {parent} AS p WHERE {same} FOR KEY SHARE)
                      LIMIT 1",
                    idents(&t.primary_key, "r."),
                    temp(stage)
                ),
                &[],
            )
            .with_context(|| format!("checking foreign key {name} of {}", t.qualified()))?;
        if let Some(r) = row {
            return Ok(Some((name, r.get(0))));
        }
    }
    Ok(None)
}
