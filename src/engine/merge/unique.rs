//! One-sided rows that would collide when copied: their value of a secondary unique key (a
//! unique constraint or index other than the primary key) already exists on the other node
//! under another primary key. Merge run refuses them unless resolved.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::catalog::TableInfo;
use crate::engine::merge::digest::Digest;
use crate::engine::merge::Keys;
use crate::sql::quote_ident;

/// The one-sided rows of one side whose value of one unique key the other side holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniqueCollision {
    /// The unique index (schema-qualified).
    pub index: String,
    pub columns: Vec<String>,
    /// `local_only` (rows of the local node that would collide on the peer) or `remote_only`.
    pub category: String,
    /// Primary keys of the colliding one-sided rows, and of the rows they collide with.
    pub keys: Vec<String>,
    pub other_keys: Vec<String>,
}

struct UniqueKey {
    index: String,
    columns: Vec<String>,
    nulls_not_distinct: bool,
}

/// The table's secondary unique keys on plain columns (unique indexes with expressions or a
/// WHERE clause are left out: what they cover is not a column tuple).
fn unique_keys(c: &mut postgres::Client, t: &TableInfo) -> Result<Vec<UniqueKey>> {
    let nnd = if c
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 150000",
            &[],
        )?
        .get(0)
    {
        "i.indnullsnotdistinct"
    } else {
        "false"
    };
    let rows = c.query(
        &format!(
            "SELECT i.indexrelid::regclass::text,
                    (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
                       -- the key columns, not INCLUDE ones
                       FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1])
                            WITH ORDINALITY k(attnum, ord)
                       JOIN pg_catalog.pg_attribute a
                         ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
                    {nnd}
               FROM pg_catalog.pg_index i
              WHERE i.indrelid = pg_catalog.to_regclass($1) AND i.indisunique
                AND NOT i.indisprimary AND i.indisvalid AND i.indexprs IS NULL
                AND i.indpred IS NULL
              ORDER BY 1"
        ),
        &[&t.qualified()],
    )?;
    Ok(rows
        .iter()
        .map(|r| UniqueKey {
            index: r.get(0),
            columns: r.get(1),
            nulls_not_distinct: r.get(2),
        })
        .collect())
}

/// For the rows with `keys` on `from`: their unique-key values (rows with a NULL in it left out
/// where NULLs are distinct).
fn values_of(
    from: &mut postgres::Client,
    d: &Digest,
    uk: &UniqueKey,
    value: &str,
    keys: &[String],
) -> Result<HashMap<String, String>> {
    let not_null = if uk.nulls_not_distinct {
        String::new()
    } else {
        uk.columns
            .iter()
            .map(|c| format!(" AND {} IS NOT NULL", quote_ident(c)))
            .collect()
    };
    let rows = from.query(
        &format!(
            "SELECT {value}, {key} FROM {from} WHERE {key} = ANY($1){not_null}",
            key = d.key,
            from = d.from
        ),
        &[&keys],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Which of `values` the node holds, with the primary key that holds each.
fn holders(
    on: &mut postgres::Client,
    d: &Digest,
    value: &str,
    values: &[String],
) -> Result<HashMap<String, String>> {
    let rows = on.query(
        &format!(
            "SELECT {value}, {key} FROM {from} WHERE {value} = ANY($1)",
            key = d.key,
            from = d.from
        ),
        &[&values],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Every collision of the one-sided rows in `keys`, per unique key and side.
pub fn collisions(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    t: &TableInfo,
    d: &Digest,
    keys: &Keys,
) -> Result<Vec<UniqueCollision>> {
    if keys.local_only.is_empty() && keys.remote_only.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for uk in unique_keys(local, t).context("reading the table's unique keys")? {
        let value = format!(
            "ROW({})::text",
            uk.columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for category in ["local_only", "remote_only"] {
            let (one_sided, from, other) = if category == "local_only" {
                (&keys.local_only, &mut *local, &mut *peer)
            } else {
                (&keys.remote_only, &mut *peer, &mut *local)
            };
            if one_sided.is_empty() {
                continue;
            }
            let mine = values_of(from, d, &uk, &value, one_sided)?;
            let wanted: Vec<String> = mine.keys().cloned().collect();
            let theirs = holders(other, d, &value, &wanted)?;
            let mut hits: Vec<(String, String)> = mine
                .iter()
                .filter_map(|(v, k)| theirs.get(v).map(|o| (k.clone(), o.clone())))
                .collect();
            if hits.is_empty() {
                continue;
            }
            hits.sort();
            out.push(UniqueCollision {
                index: uk.index.clone(),
                columns: uk.columns.clone(),
                category: category.into(),
                keys: hits.iter().map(|(k, _)| k.clone()).collect(),
                other_keys: hits.into_iter().map(|(_, o)| o).collect(),
            });
        }
    }
    Ok(out)
}
