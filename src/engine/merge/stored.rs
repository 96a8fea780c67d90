//! An analysis as the server keeps it (`merge_overlap`, `merge_keys`, steep_repl 0.5.0): the one
//! set of statements the job worker and `analyze_overlap` write it with (through SPI) and the CLI
//! reads it back with, so direct mode reports exactly what client mode does.

use anyhow::{Context, Result};

use crate::engine::merge::{Analysis, Cost, Keys, TableOverlap};

/// $1 merge_id, $2 schema, $3 table, $4..$7 match, conflict, local_only, remote_only,
/// $8 local_rows, $9 remote_rows, $10 suspect_serial_keys, $11 unique_collisions (JSON text),
/// $12 cost (JSON text).
pub const INSERT_TABLE: &str = "INSERT INTO steep_repl.merge_overlap
    (merge_id, schema_name, table_name, match, conflict, local_only, remote_only, local_rows,
     remote_rows, suspect_serial_keys, unique_collisions, cost)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb)";

/// $1 merge_id, $2 schema, $3 table, $4 category, $5 the keys (text[]).
pub const INSERT_KEYS: &str = "INSERT INTO steep_repl.merge_keys
    (merge_id, schema_name, table_name, category, key)
    SELECT $1, $2, $3, $4, k FROM pg_catalog.unnest($5::text[]) AS k";

/// The numbers of a table as INSERT_TABLE's parameters $4..$9.
pub fn counts(t: &TableOverlap) -> [i64; 6] {
    [
        t.matched,
        t.conflict,
        t.local_only,
        t.remote_only,
        t.local_rows,
        t.remote_rows,
    ]
    .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The key lists of a table as (category, keys), for INSERT_KEYS.
pub fn key_lists(t: &TableOverlap) -> [(&'static str, &Vec<String>); 3] {
    [
        ("conflict", &t.keys.conflict),
        ("local_only", &t.keys.local_only),
        ("remote_only", &t.keys.remote_only),
    ]
}

/// Read an analysis back (what the caller may see of it: row security).
pub fn load(c: &mut postgres::Client, merge_id: &str) -> Result<Analysis> {
    let rows = c
        .query(
            "SELECT schema_name, table_name, match, conflict, local_only, remote_only,
                    local_rows, remote_rows, suspect_serial_keys, unique_collisions::text,
                    cost::text
               FROM steep_repl.merge_overlap WHERE merge_id = $1
              ORDER BY schema_name, table_name",
            &[&merge_id],
        )
        .context("reading the analysis")?;
    // Every key of the analysis in one read, by table.
    let mut all_keys: std::collections::HashMap<(String, String), Keys> = Default::default();
    for k in c.query(
        "SELECT schema_name, table_name, category, key FROM steep_repl.merge_keys
          WHERE merge_id = $1",
        &[&merge_id],
    )? {
        let keys = all_keys.entry((k.get(0), k.get(1))).or_default();
        let (category, key): (String, String) = (k.get(2), k.get(3));
        match category.as_str() {
            "conflict" => keys.conflict.push(key),
            "local_only" => keys.local_only.push(key),
            _ => keys.remote_only.push(key),
        }
    }
    let mut tables = Vec::new();
    for r in &rows {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let mut keys = all_keys
            .remove(&(schema.clone(), table.clone()))
            .unwrap_or_default();
        keys.sort();
        let n = |i: usize| r.get::<_, i64>(i) as u64;
        let kept = (keys.conflict.len() + keys.local_only.len() + keys.remote_only.len()) as u64;
        tables.push(TableOverlap {
            keys_complete: kept == n(3) + n(4) + n(5),
            matched: n(2),
            conflict: n(3),
            local_only: n(4),
            remote_only: n(5),
            local_rows: n(6),
            remote_rows: n(7),
            suspect_serial_keys: r.get(8),
            unique_collisions: serde_json::from_str(&r.get::<_, String>(9))?,
            cost: serde_json::from_str::<Cost>(&r.get::<_, String>(10))?,
            keys,
            schema,
            table,
        });
    }
    Ok(Analysis { tables })
}
