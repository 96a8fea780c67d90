//! What a merge keeps on the local node (steep_repl 0.6.0): which tables it has merged
//! (`merge_tables`, written in the same transaction as the table's rows, so a table counts as
//! merged exactly when its rows are), the operator's decisions bound to both row hashes
//! (`merge_decisions`), and one audit row per decided row (`merge_audit_log`). The one set of
//! statements the CLI and the job use.

use std::collections::HashMap;

use anyhow::{Context, Result};

use crate::engine::error::ErrorKind;
use crate::engine::merge::apply::{MergeOptions, MergeReport};
use crate::engine::merge::overlap::Differing;
use crate::engine::merge::strategy::Resolution;

/// A table's state in `merge_tables`: its rows were written to the peer and the local commit
/// has not been seen yet (a failure in between leaves it merged on the peer only), or merged on
/// both nodes.
pub const COMMITTING: &str = "committing";
pub const MERGED: &str = "merged";

/// $1 merge_id, $2 schema, $3 table, $4 state, $5 result (JSON text).
pub const MARK_TABLE: &str = "INSERT INTO steep_repl.merge_tables
        (merge_id, schema_name, table_name, state, result)
    VALUES ($1, $2, $3, $4, $5::text::jsonb)
    ON CONFLICT (merge_id, schema_name, table_name)
    DO UPDATE SET state = EXCLUDED.state, result = EXCLUDED.result, updated_at = pg_catalog.now()";

/// Record a new merge run by the CLI (`mode` client) or replication init in its `merges` row
/// on the local node; returns its id.
pub fn record_start(
    c: &mut postgres::Client,
    peer: &str,
    opts: &MergeOptions,
    mode: &str,
) -> Result<String> {
    let mut options = opts.to_stored();
    options["mode"] = mode.into();
    Ok(c.query_one(
        "INSERT INTO steep_repl.merges (merge_id, peer, tables, strategy, dry_run, status,
                                            kind, options, started_at)
             VALUES (steep_repl._new_merge_id(), $1, $2, $3, $4, 'running', 'merge', $5,
                     pg_catalog.now())
             RETURNING merge_id",
        &[
            &peer,
            &opts.tables,
            &opts.strategy.family(),
            &opts.dry_run,
            &options,
        ],
    )
    .map_err(crate::db_error::db_error)
    .context("recording the merge in steep_repl.merges")?
    .get(0))
}

/// Record how a merge run here ended in its `merges` row: undecided conflicts leave it
/// awaiting decisions.
pub fn record_end(
    c: &mut postgres::Client,
    merge_id: &str,
    result: &Result<MergeReport>,
) -> std::result::Result<(), postgres::Error> {
    let (status, error) = match result {
        Ok(r) if r.tables.iter().any(|t| t.undecided > 0) => ("awaiting_decisions", None),
        Ok(_) => ("complete", None),
        Err(e) if ErrorKind::of(e) == Some(ErrorKind::Cancelled) => {
            ("cancelled", Some(format!("{e:#}")))
        }
        Err(e) => ("failed", Some(format!("{e:#}"))),
    };
    let report = result
        .as_ref()
        .ok()
        .and_then(|r| serde_json::to_value(r).ok());
    let totals = result.as_ref().map(MergeReport::totals).unwrap_or_default();
    let (rows, conflicts) = (totals.rows as i64, totals.conflicts as i64);
    c.execute(
        "UPDATE steep_repl.merges SET status = $2, error_message = $3, result = $4,
                rows_merged = $5, conflict_count = $6, completed_at = pg_catalog.now(),
                tables_completed = coalesce(pg_catalog.jsonb_array_length($4::jsonb -> 'tables'), 0)
          WHERE merge_id = $1",
        &[&merge_id, &status, &error, &report, &rows, &conflicts],
    )?;
    Ok(())
}

/// The state of every table of a merge, by `schema.table` as `sql::qualified` writes it.
pub fn table_states(c: &mut postgres::Client, merge_id: &str) -> Result<HashMap<String, String>> {
    Ok(c.query(
        "SELECT schema_name, table_name, state FROM steep_repl.merge_tables WHERE merge_id = $1",
        &[&merge_id],
    )
    .context("reading which tables the merge has done")?
    .iter()
    .map(|r| {
        (
            crate::sql::qualified(&r.get::<_, String>(0), &r.get::<_, String>(1)),
            r.get(2),
        )
    })
    .collect())
}

/// A decision on one conflict, valid while both rows still have the hashes it was made on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub local_hash: Option<i64>,
    pub remote_hash: Option<i64>,
    pub resolution: Resolution,
    pub decided_by: String,
}

/// Decisions by (schema.table, key).
pub type Decisions = HashMap<(String, String), Decision>;

impl Decision {
    /// Whether it still applies to the row as it is now.
    pub fn holds_for(&self, d: &Differing) -> bool {
        self.local_hash == d.local && self.remote_hash == d.remote
    }
}

/// Every decision of a merge.
pub fn decisions(c: &mut postgres::Client, merge_id: &str) -> Result<Decisions> {
    let rows = c
        .query(
            "SELECT schema_name, table_name, key, local_hash, remote_hash, resolution, decided_by
               FROM steep_repl.merge_decisions WHERE merge_id = $1",
            &[&merge_id],
        )
        .context("reading the merge's decisions")?;
    let mut out = Decisions::new();
    for r in &rows {
        let res: String = r.get(5);
        let Some(resolution) = Resolution::parse(&res) else {
            continue;
        };
        out.insert(
            (
                crate::sql::qualified(&r.get::<_, String>(0), &r.get::<_, String>(1)),
                r.get(2),
            ),
            Decision {
                local_hash: r.get(3),
                remote_hash: r.get(4),
                resolution,
                decided_by: r.get(6),
            },
        );
    }
    Ok(out)
}

/// A decision on the conflict of `key` in `schema`.`table`.
pub struct Decided<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub key: &'a str,
    pub decision: &'a Decision,
}

/// Save decisions in one statement (the prompt saves each answer the moment it is given: one
/// at a time; a decisions file all at once).
pub fn save_decisions(
    c: &mut impl postgres::GenericClient,
    merge_id: &str,
    all: &[Decided],
) -> Result<()> {
    let schemas: Vec<&str> = all.iter().map(|d| d.schema).collect();
    let tables: Vec<&str> = all.iter().map(|d| d.table).collect();
    let keys: Vec<&str> = all.iter().map(|d| d.key).collect();
    let local: Vec<Option<i64>> = all.iter().map(|d| d.decision.local_hash).collect();
    let remote: Vec<Option<i64>> = all.iter().map(|d| d.decision.remote_hash).collect();
    let resolutions: Vec<&str> = all.iter().map(|d| d.decision.resolution.name()).collect();
    let by: Vec<&str> = all.iter().map(|d| d.decision.decided_by.as_str()).collect();
    c.execute(
        "INSERT INTO steep_repl.merge_decisions
                (merge_id, schema_name, table_name, key, local_hash, remote_hash, resolution,
                 decided_by)
         SELECT $1, s, t, k, lh, rh, r, b
           FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]),
                           pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::int8[]),
                           pg_catalog.unnest($6::int8[]), pg_catalog.unnest($7::text[]),
                           pg_catalog.unnest($8::text[])) AS u(s, t, k, lh, rh, r, b)
         ON CONFLICT (merge_id, schema_name, table_name, key)
         DO UPDATE SET local_hash = EXCLUDED.local_hash, remote_hash = EXCLUDED.remote_hash,
                       resolution = EXCLUDED.resolution, decided_by = EXCLUDED.decided_by,
                       decided_at = pg_catalog.now()",
        &[
            &merge_id,
            &schemas,
            &tables,
            &keys,
            &local,
            &remote,
            &resolutions,
            &by,
        ],
    )
    .context("saving decisions")?;
    Ok(())
}

/// One audit row's values.
pub struct AuditRow {
    pub pk: String,
    pub category: &'static str,
    pub resolution: Resolution,
    pub local_row: Option<String>,
    pub remote_row: Option<String>,
    pub decided_by: String,
}

/// Write a table's audit rows (in the transaction that writes its rows on the local node).
pub fn audit(
    c: &mut postgres::Client,
    merge_id: &str,
    schema: &str,
    table: &str,
    rows: &[AuditRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let pk: Vec<&str> = rows.iter().map(|r| r.pk.as_str()).collect();
    let category: Vec<&str> = rows.iter().map(|r| r.category).collect();
    let resolution: Vec<&str> = rows.iter().map(|r| r.resolution.name()).collect();
    let local: Vec<Option<&str>> = rows.iter().map(|r| r.local_row.as_deref()).collect();
    let remote: Vec<Option<&str>> = rows.iter().map(|r| r.remote_row.as_deref()).collect();
    let by: Vec<&str> = rows.iter().map(|r| r.decided_by.as_str()).collect();
    c.execute(
        "INSERT INTO steep_repl.merge_audit_log
                (merge_id, schema_name, table_name, pk, category, resolution, local_row,
                 remote_row, decided_by, decided_at)
         SELECT $1, $2, $3, pk::jsonb, category, resolution, l::jsonb, r::jsonb, by,
                pg_catalog.now()
           FROM ROWS FROM (pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[]),
                           pg_catalog.unnest($6::text[]), pg_catalog.unnest($7::text[]),
                           pg_catalog.unnest($8::text[]), pg_catalog.unnest($9::text[]))
                AS u(pk, category, resolution, l, r, by)",
        &[
            &merge_id,
            &schema,
            &table,
            &pk,
            &category,
            &resolution,
            &local,
            &remote,
            &by,
        ],
    )
    .with_context(|| format!("recording the audit of {schema}.{table}"))?;
    Ok(())
}
