//! Resume markers on the target (steep_repl's `apply_markers`), committed with each table's rows.

use anyhow::{anyhow, Context, Result};

use super::SchemaMode;
use crate::engine::manifest::Table;

/// Resume markers on the target (steep_repl's `apply_markers`): one per loaded table, committed
/// in the transaction that loaded it. Absent when the target has no steep_repl 0.4.0+ or the role
/// may not use it; `--resume` then reloads every table (each load is whole or nothing, so that is
/// always correct) and post-data still resumes from the catalog.
pub(super) struct Markers {
    snapshot_id: String,
}

impl Markers {
    pub(super) fn detect(c: &mut postgres::Client, snapshot_id: &str) -> Result<Option<Markers>> {
        let usable: bool = c
            .query_one(
                "SELECT CASE WHEN NOT EXISTS (SELECT FROM pg_namespace n
                                              WHERE n.nspname = 'steep_repl'
                                                AND has_schema_privilege(n.oid, 'USAGE'))
                        THEN false
                        WHEN to_regclass('steep_repl.apply_markers') IS NULL
                          OR to_regprocedure('steep_repl.mark_applied(text,text,text,text)') IS NULL
                        THEN false
                        -- (a list of privileges asks for any one of them: each on its own)
                        ELSE has_table_privilege(to_regclass('steep_repl.apply_markers'), 'SELECT')
                         AND has_table_privilege(to_regclass('steep_repl.apply_markers'), 'INSERT')
                         AND has_table_privilege(to_regclass('steep_repl.apply_markers'), 'UPDATE')
                         AND has_table_privilege(to_regclass('steep_repl.apply_markers'), 'DELETE')
                         AND has_function_privilege(
                                 to_regprocedure('steep_repl.mark_applied(text,text,text,text)'),
                                 'EXECUTE')
                         AND has_function_privilege(
                                 to_regprocedure('steep_repl.apply_markers_of(text)'), 'EXECUTE')
                         AND has_function_privilege(
                                 to_regprocedure('steep_repl.forget_applied(text)'), 'EXECUTE')
                        END",
                &[],
            )
            .context("looking for steep_repl's resume markers on the target")?
            .get(0);
        Ok(usable.then(|| Markers {
            snapshot_id: snapshot_id.to_string(),
        }))
    }

    /// The tables this role's earlier apply of the snapshot loaded. An apply is resumed with the
    /// schema mode it was started with (a `--schema create` apply still owes its post-data).
    pub(super) fn loaded(
        &self,
        c: &mut postgres::Client,
        mode: SchemaMode,
    ) -> Result<Vec<(String, String)>> {
        let rows = c
            .query(
                "SELECT table_schema, table_name, schema_mode
                 FROM steep_repl.apply_markers_of($1)",
                &[&self.snapshot_id],
            )
            .context("reading the resume markers")?;
        if let Some(other) = rows
            .iter()
            .map(|r| r.get::<_, String>(2))
            .find(|m| m != mode.name())
        {
            return Err(anyhow!(
                "the interrupted apply of this snapshot used --schema {other}: resume it with \
                 --schema {other} --resume (or apply again without --resume to start over)"
            ));
        }
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(super) fn mark(
        &self,
        tx: &mut postgres::Transaction,
        mode: SchemaMode,
        t: &Table,
    ) -> Result<()> {
        tx.execute(
            "SELECT steep_repl.mark_applied($1, $2, $3, $4)",
            &[&self.snapshot_id, &mode.name(), &t.schema, &t.name],
        )
        .context("recording the table as loaded")?;
        Ok(())
    }

    pub(super) fn forget(&self, tx: &mut postgres::Transaction) -> Result<()> {
        tx.execute("SELECT steep_repl.forget_applied($1)", &[&self.snapshot_id])
            .context("clearing an earlier apply's resume markers")?;
        Ok(())
    }
}
