//! What must hold before two nodes' rows can be compared, each failure a blocking finding (the
//! CLI's exit 3) that names the cause and the fix: the same server encoding, the same digests on a
//! probe, the same table shapes where it matters to replication (the one schema comparison: column
//! order and defaults do not refuse), and a primary key on every table compared.

use anyhow::{Context, Result};

use crate::engine::catalog::{self, TableInfo};
use crate::engine::merge::{digest, Refused};
use crate::schema_shape::{self, Scope, TableShape};

/// The tables to compare, as the local node describes them (the peer's have the same shape).
pub struct Plan {
    pub tables: Vec<TableInfo>,
}

fn encoding(c: &mut postgres::Client) -> Result<String> {
    Ok(c.query_one(
        "SELECT pg_catalog.pg_encoding_to_char(encoding)::text FROM pg_catalog.pg_database
          WHERE datname = pg_catalog.current_database()",
        &[],
    )?
    .get(0))
}

/// Whether table `schema.name` is among the names asked for (`schema.table`, or `table` in any
/// schema); every table when none are.
pub fn chosen(schema: &str, name: &str, names: &[String]) -> bool {
    names.is_empty()
        || names.iter().any(|n| match n.split_once('.') {
            Some((s, t)) => s == schema && t == name,
            None => n == name,
        })
}

/// The tables (of those that exist there) the connected role may not SELECT from.
fn unreadable(c: &mut postgres::Client, tables: &[TableInfo]) -> Result<Vec<String>> {
    let names: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
    Ok(c.query(
        "SELECT n FROM unnest($1::text[]) AS n
          WHERE pg_catalog.to_regclass(n) IS NOT NULL
            AND NOT pg_catalog.has_table_privilege(pg_catalog.to_regclass(n), 'SELECT')
          ORDER BY 1",
        &[&names],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Check both nodes; the tables to compare, or every blocking finding at once.
pub fn check(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    names: &[String],
) -> Result<Plan> {
    let mut problems = Vec::new();
    let (le, pe) = (
        encoding(local).context("reading the local encoding")?,
        encoding(peer).context("reading the peer's encoding")?,
    );
    if le != pe {
        problems.push(format!(
            "the databases' encodings differ (local {le}, peer {pe}): rows cannot be compared \
             byte for byte; recreate one database with the other's encoding"
        ));
    }
    let (lp, pp): (String, String) = (
        local.query_one(digest::PROBE, &[])?.get(0),
        peer.query_one(digest::PROBE, &[])?.get(0),
    );
    if le == pe && lp != pp {
        problems.push(format!(
            "the two servers hash the same text differently (probe: local {lp}, peer {pp}; \
             PostgreSQL's hash is internal and may differ between platforms or versions): \
             overlap analysis needs servers of the same platform and major version"
        ));
    }
    let (local_shapes, local_tables) = catalog::shapes_and_tables(local)?;
    let (peer_shapes, _) = catalog::shapes_and_tables(peer)?;
    for n in names {
        if !local_shapes
            .iter()
            .any(|t| chosen(&t.schema, &t.name, std::slice::from_ref(n)))
        {
            problems.push(format!("no table {n} on the local node"));
        }
    }
    // A partitioned table named stands for its leaf partitions (which hold the rows).
    let parents: Vec<&TableShape> = local_shapes
        .iter()
        .filter(|s| s.partitioned && !names.is_empty() && chosen(&s.schema, &s.name, names))
        .collect();
    let mut names = names.to_vec();
    for s in parents {
        for r in local.query(
            "SELECT n.nspname::text || '.' || c.relname::text
               FROM pg_catalog.pg_partition_tree(pg_catalog.to_regclass($1)) t
               JOIN pg_catalog.pg_class c ON c.oid = t.relid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE t.isleaf",
            &[&s.qualified()],
        )? {
            names.push(r.get(0));
        }
    }
    let names = &names[..];
    let breaking: Vec<String> = schema_shape::diff(&local_shapes, &peer_shapes, Scope::Both)
        .into_iter()
        .filter(|d| d.breaks_replication && chosen(&d.schema, &d.table, names))
        .map(|d| {
            let column = d.column.map(|c| format!(" column {c}")).unwrap_or_default();
            format!(
                "{}.{}{column}: {} (local {}, peer {})",
                d.schema,
                d.table,
                d.difference.replace('_', " "),
                d.local.as_deref().unwrap_or("-"),
                d.peer.as_deref().unwrap_or("-")
            )
        })
        .collect();
    if !breaking.is_empty() {
        problems.push(format!(
            "the schemas differ where replication needs them equal (`steep schema compare` \
             shows the same): {}; make both sides alike first",
            breaking.join("; ")
        ));
    }
    let tables: Vec<TableInfo> = local_tables
        .into_iter()
        .filter(|t| chosen(&t.schema, &t.name, names))
        .collect();
    let keyless: Vec<String> = tables
        .iter()
        .filter(|t| t.primary_key.is_empty())
        .map(|t| t.qualified())
        .collect();
    if !keyless.is_empty() {
        problems.push(format!(
            "tables without a primary key (rows are matched by it): {}; add one, or leave them \
             out with --table",
            keyless.join(", ")
        ));
    }
    for (c, which) in [(&mut *local, "local node"), (&mut *peer, "peer")] {
        let unreadable = unreadable(c, &tables)?;
        if !unreadable.is_empty() {
            problems.push(format!(
                "tables this role may not read on the {which}: {}; get SELECT on them, or leave \
                 them out with --table",
                unreadable.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Refused(problems).into());
    }
    Ok(Plan { tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_choose_by_schema_and_table_or_table_alone() {
        let names = vec!["app.orders".to_string(), "items".to_string()];
        assert!(chosen("app", "orders", &names));
        assert!(!chosen("public", "orders", &names));
        assert!(chosen("x", "items", &names));
        assert!(chosen("x", "anything", &[]));
    }
}
