//! A merge's statements against one node for one table: key sets, row images, "last modified"
//! values, moving rows from one node to the other, and what writing needs (triggers off,
//! sequences ahead). Every statement names the table and its columns quoted, and values travel
//! as parameters or COPY data, never as SQL text.
//!
//! Keys arrive as the text of `ROW(primary key)` (what the digests compare). Where the session
//! may create temporary tables, they are turned back into typed values by casting that text to the
//! row type of a temporary table shaped like the primary key (PostgreSQL's own record input
//! reverses its output under the same settings), so every lookup uses the primary key's index,
//! and rows move by COPY into a temporary staging table. A direct-mode job's sessions on its own
//! server run as a security-restricted operation, where PostgreSQL allows no temporary table:
//! there keys are matched as text (`= ANY`, one hashed scan of the table) and rows travel as the
//! text of the target table's own row type, cast back by record input — exact for every type.

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

/// Whether this session may create temporary tables (not a security-restricted operation, and
/// TEMP on the database).
pub fn temp_allowed(c: &mut postgres::Client) -> bool {
    c.batch_execute("CREATE TEMP TABLE steep_probe (); DROP TABLE pg_temp.steep_probe")
        .is_ok()
}

/// A set of keys of a table on one node: a temporary key table, or the key texts themselves.
pub enum KeySet {
    Table(String),
    Texts(Vec<String>),
}

impl KeySet {
    /// `keys` on the node of `c`, as a key table `name` where `temp` allows.
    pub fn new(
        c: &mut postgres::Client,
        t: &TableInfo,
        name: &str,
        keys: &[&str],
        temp: bool,
    ) -> Result<Self> {
        if temp {
            load_keys(c, t, name, keys)?;
            Ok(KeySet::Table(name.to_string()))
        } else {
            Ok(KeySet::Texts(keys.iter().map(|k| k.to_string()).collect()))
        }
    }

    /// `ONLY t AS r` restricted to the keys (a `Texts` set takes its keys as `$1`).
    fn from(&self, t: &TableInfo) -> String {
        match self {
            KeySet::Table(name) => joined(t, name),
            KeySet::Texts(_) => format!(
                "ONLY {} AS r WHERE ROW({})::text = ANY($1::text[])",
                t.qualified(),
                idents(&t.primary_key, "r.")
            ),
        }
    }

    fn query(
        &self,
        c: &mut postgres::Client,
        sql: &str,
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        match self {
            KeySet::Table(_) => c.query(sql, &[]),
            KeySet::Texts(k) => c.query(sql, &[k]),
        }
    }
}

/// Create `pg_temp.name` shaped like `t`'s primary key and fill it with `keys`.
fn load_keys(c: &mut postgres::Client, t: &TableInfo, name: &str, keys: &[&str]) -> Result<()> {
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
    keys: &KeySet,
) -> Result<HashMap<String, Image>> {
    let sql = format!(
        "SELECT ROW({})::text, ({})::text, ({})::text FROM {}",
        idents(&t.primary_key, "r."),
        json_object(&t.primary_key),
        json_object(&columns(t)),
        keys.from(t)
    );
    Ok(keys
        .query(c, &sql)
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
    keys: &KeySet,
    how: &Modified,
) -> Result<HashMap<String, Option<i64>>> {
    let sql = format!(
        "SELECT ROW({})::text, {} FROM {}",
        idents(&t.primary_key, "r."),
        modified_expr(t, how)?,
        keys.from(t)
    );
    Ok(keys
        .query(c, &sql)
        .with_context(|| format!("reading last-modified values of {}", t.qualified()))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Rows of a table moved to the node that writes them: a temporary staging table there, or the
/// rows as the text of that node's row type of the table.
pub enum Staged {
    Table(String),
    Rows(Vec<String>),
}

/// Rows cast back from the text of the table's row type, per statement.
const ROWS_PER_STATEMENT: usize = 10_000;

impl Staged {
    /// `FROM` the staged rows as `r`, and their parameter batches (one statement each).
    fn sources(&self, t: &TableInfo) -> Vec<(String, Option<&[String]>)> {
        match self {
            Staged::Table(name) => vec![(format!("{} AS r", temp(name)), None)],
            Staged::Rows(rows) => rows
                .chunks(ROWS_PER_STATEMENT)
                .map(|chunk| {
                    (
                        // One record input per row (`(x::t).*` would run it once per column).
                        format!("pg_catalog.unnest($1::text[]::{}[]) AS r", t.qualified()),
                        Some(chunk),
                    )
                })
                .collect(),
        }
    }
}

/// The columns of `t` on this node in their order, and whether each is generated.
fn row_type(c: &mut postgres::Client, t: &TableInfo) -> Result<Vec<(String, bool)>> {
    Ok(c.query(
        "SELECT a.attname::text, a.attgenerated <> ''
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
        &[&t.qualified()],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

/// Move the rows of `t` with the keys `keys` (on `src`) to `dst`: COPY into a temporary staging
/// table where both sessions allow them (streamed), else as the text of `dst`'s row type of the
/// table (generated columns empty: `dst` computes its own). Returns them and how many.
pub fn stage(
    src: &mut postgres::Client,
    keys: &KeySet,
    dst: &mut postgres::Client,
    dst_temp: bool,
    t: &TableInfo,
    stage: &str,
) -> Result<(Staged, u64)> {
    let cols = columns(t);
    if dst_temp {
        dst.batch_execute(&format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM ONLY {} WITH NO DATA",
            quote_ident(stage),
            idents(&cols, ""),
            t.qualified()
        ))
        .with_context(|| format!("creating a staging table for {}", t.qualified()))?;
    }
    if let (true, KeySet::Table(_)) = (dst_temp, keys) {
        let mut out = src
            .copy_out(&format!(
                "COPY (SELECT {} FROM {}) TO STDOUT",
                idents(&cols, "r."),
                keys.from(t)
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
        let n = into
            .finish()
            .with_context(|| format!("staging rows of {}", t.qualified()))?;
        return Ok((Staged::Table(stage.to_string()), n));
    }
    // The text of dst's row type: its columns in its order (the nodes' orders may differ).
    let fields: Vec<String> = row_type(dst, t)?
        .into_iter()
        .map(|(name, generated)| {
            if generated || !cols.contains(&name) {
                "NULL".to_string()
            } else {
                format!("r.{}", quote_ident(&name))
            }
        })
        .collect();
    let rows: Vec<String> = keys
        .query(
            src,
            &format!(
                "SELECT ROW({})::text FROM {}",
                fields.join(", "),
                keys.from(t)
            ),
        )
        .with_context(|| format!("reading rows of {}", t.qualified()))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let n = rows.len() as u64;
    if !dst_temp {
        return Ok((Staged::Rows(rows), n));
    }
    let staged = Staged::Rows(rows);
    for (from, batch) in staged.sources(t) {
        dst.execute(
            &format!(
                "INSERT INTO {} ({}) SELECT {} FROM {from}",
                temp(stage),
                idents(&cols, ""),
                idents(&cols, "r.")
            ),
            &[&batch.unwrap_or_default()],
        )
        .with_context(|| format!("staging rows of {}", t.qualified()))?;
    }
    Ok((Staged::Table(stage.to_string()), n))
}

/// Write the staged rows into `t`: inserted, or (`update`) existing rows of the same key set to
/// the staged row; never deleted (no foreign key cascades). Identity values are kept as they are.
/// Returns the rows written: fewer than staged means keys collided.
pub fn upsert(
    c: &mut postgres::Client,
    t: &TableInfo,
    staged: &Staged,
    update: bool,
) -> Result<u64> {
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
    let mut written = 0;
    for (from, batch) in staged.sources(t) {
        let sql = format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {from} \
             ON CONFLICT ({}) DO {action}",
            t.qualified(),
            idents(&cols, ""),
            idents(&cols, "r."),
            idents(&t.primary_key, "")
        );
        written += match batch {
            Some(b) => c.execute(&sql, &[&b]),
            None => c.execute(&sql, &[]),
        }
        .with_context(|| format!("writing rows of {}", t.qualified()))?;
    }
    Ok(written)
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
    staged: &Staged,
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
        for (from, batch) in staged.sources(t) {
            let sql = format!(
                "SELECT ROW({})::text FROM {from} WHERE {not_null}
                    AND NOT EXISTS (SELECT FROM {parent} AS p WHERE {same} FOR KEY SHARE)
                  LIMIT 1",
                idents(&t.primary_key, "r.")
            );
            let row = match batch {
                Some(b) => c.query_opt(&sql, &[&b]),
                None => c.query_opt(&sql, &[]),
            }
            .with_context(|| format!("checking foreign key {name} of {}", t.qualified()))?;
            if let Some(r) = row {
                return Ok(Some((name, r.get(0))));
            }
        }
    }
    Ok(None)
}
