//! Repair: reinstall the extension at its version, keeping its tables' rows.

use anyhow::{Context, Result};

use crate::cli::embedded::EXTENSION;
use crate::sql::quote_literal;

/// Drop and recreate the extension at its installed version in one transaction, carrying the
/// rows of its tables across. Fails (changing nothing) if other objects depend on it.
pub fn reinstall(client: &mut postgres::Client, version: &str) -> Result<u64> {
    let mut tx = client.transaction()?;
    // The configuration tables, in the order they were registered: parents before children.
    let tables: Vec<(String, String)> = tx
        .query(
            "SELECT c.relname::text, format('%I.%I', n.nspname, c.relname)
             FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS x(oid, ord)
             JOIN pg_class c ON c.oid = x.oid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE e.extname = $1 AND c.relkind IN ('r', 'p')
             ORDER BY x.ord",
            &[&EXTENSION],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (i, (_, qualified)) in tables.iter().enumerate() {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE steep_keep_{i} ON COMMIT DROP AS SELECT * FROM {qualified}"
        ))?;
    }
    tx.batch_execute(&format!("DROP EXTENSION {EXTENSION}"))
        .context("dropping the extension (objects outside steep that depend on it block this)")?;
    tx.batch_execute(&format!(
        "CREATE EXTENSION {EXTENSION} VERSION {}",
        quote_literal(version)
    ))?;
    let mut rows = 0;
    for (i, (_, qualified)) in tables.iter().enumerate() {
        let cols: Vec<String> = tx
            .query(
                "SELECT quote_ident(attname) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                 ORDER BY attnum",
                &[&format!("pg_temp.steep_keep_{i}")],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let list = cols.join(", ");
        rows += tx.execute(
            &format!(
                "INSERT INTO {qualified} ({list}) OVERRIDING SYSTEM VALUE \
                 SELECT {list} FROM pg_temp.steep_keep_{i}"
            ),
            &[],
        )?;
    }
    // Identity and serial sequences continue after the restored rows.
    for (_, qualified) in &tables {
        let seqs: Vec<(String, String)> = tx
            .query(
                "SELECT pg_get_serial_sequence($1, attname), quote_ident(attname) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                   AND pg_get_serial_sequence($1, attname) IS NOT NULL",
                &[qualified],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (seq, col) in seqs {
            tx.execute(
                &format!(
                    "SELECT setval($1::text::regclass, \
                     coalesce((SELECT max({col}) FROM {qualified}), 0) + 1, false)"
                ),
                &[&seq],
            )?;
        }
    }
    tx.commit().context("committing the reinstall")?;
    Ok(rows)
}
