//! How a snapshot run records itself in its `steep_repl.snapshots` row: the SQL functions both
//! modes call (the CLI in client mode as the connected role, the worker as the job's owner), with
//! the one progress record as their argument and one summary of what the run produced.

use serde::Serialize;

use crate::engine::apply::ApplySummary;
use crate::engine::manifest::Manifest;

/// Register a client-mode run: ($1 snapshot id, $2 kind, $3 path, $4 compression, $5 parallel).
/// Direct-mode runs are registered when queued (start_snapshot, start_apply).
pub const BEGIN: &str = "SELECT FROM steep_repl.snapshot_begin($1, $2, $3, $4, $5)";

/// Record progress: ($1 snapshot id, $2 the progress record's JSON as text).
pub const RECORD: &str = "SELECT steep_repl.snapshot_record($1, $2::text::jsonb)";

/// Record the end: ($1 snapshot id, $2 status, $3 error, $4 `Totals` JSON as text, or NULL).
pub const END: &str = "SELECT steep_repl.snapshot_end($1, $2, $3, $4::text::jsonb)";

/// The same as RECORD and END for a database whose installed steep_repl predates those functions
/// (the worker's library serves every installed version): one statement each, same parameters.
pub const RECORD_BEFORE_0_4: &str = "UPDATE steep_repl.snapshots s
     SET status = 'running', started_at = coalesce(s.started_at, pg_catalog.clock_timestamp()),
         phase = x.p ->> 'phase',
         overall_percent = least(100, greatest(0, coalesce((x.p ->> 'percent')::float8, 0))),
         tables_completed = coalesce((x.p ->> 'tables_completed')::int, 0),
         table_count = coalesce(nullif((x.p ->> 'tables_total')::int, 0), s.table_count),
         current_table = x.p ->> 'table',
         bytes_processed = coalesce((x.p ->> 'bytes')::bigint, 0),
         rows_processed = coalesce((x.p ->> 'rows')::bigint, 0),
         eta_seconds = (x.p ->> 'eta_seconds')::int
     FROM (SELECT $2::text::jsonb AS p) x
     WHERE s.snapshot_id = $1 AND s.status IN ('pending', 'running')";

/// See RECORD_BEFORE_0_4.
pub const END_BEFORE_0_4: &str = "UPDATE steep_repl.snapshots s
     SET status = $2, error_message = $3, completed_at = pg_catalog.clock_timestamp(),
         started_at = coalesce(s.started_at, pg_catalog.clock_timestamp()), phase = $2,
         overall_percent = CASE WHEN $2 = 'complete' THEN 100 ELSE s.overall_percent END,
         table_count = coalesce((x.t ->> 'tables')::int, s.table_count),
         tables_completed = coalesce((x.t ->> 'tables')::int, s.tables_completed),
         rows_processed = coalesce((x.t ->> 'rows')::bigint, s.rows_processed),
         bytes_processed = coalesce((x.t ->> 'bytes')::bigint, s.bytes_processed),
         bytes_total = coalesce((x.t ->> 'bytes')::bigint, s.bytes_total),
         lsn = coalesce((x.t ->> 'lsn')::pg_lsn, s.lsn),
         compression = coalesce(x.t ->> 'compression', s.compression),
         eta_seconds = NULL, current_table = NULL
     FROM (SELECT $4::text::jsonb AS t) x
     WHERE s.snapshot_id = $1";

/// An expression: whether the server has these functions (steep_repl 0.4.0 or newer).
pub const AVAILABLE: &str =
    "to_regprocedure('steep_repl.snapshot_begin(text,text,text,text,integer)') IS NOT NULL";

/// What a run produced, as `snapshot_end` records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub tables: i64,
    pub rows: i64,
    pub bytes: i64,
    pub lsn: String,
    /// The snapshot's compression (an apply learns it from the manifest, after it was queued).
    pub compression: String,
}

impl Totals {
    pub fn of_generate(m: &Manifest) -> Self {
        Self {
            tables: m.tables.len() as i64,
            rows: m.rows() as i64,
            bytes: m.raw_bytes() as i64,
            lsn: m.lsn.clone(),
            compression: m.compression.name().to_string(),
        }
    }

    /// An apply: every table of the snapshot is in place (loaded now or before), `bytes` is what
    /// this run loaded.
    pub fn of_apply(s: &ApplySummary, bytes: i64) -> Self {
        Self {
            tables: (s.tables_loaded + s.tables_skipped) as i64,
            rows: s.rows_loaded as i64,
            bytes,
            lsn: s.lsn.clone(),
            compression: s.compression.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
