//! `steep snapshot list`.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::commands::require_extension;
use crate::context::Ctx;
use steep::cli::follow::human_bytes;
use steep::cli::output::table;
use steep::db_error::db_error;

#[derive(Args)]
pub struct ListArgs {}

impl ListArgs {
    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let rows = c
            .query(
                "SELECT snapshot_id, kind, mode, status, storage_path, compression, table_count,
                        rows_processed, bytes_processed, created_at::text, error_message
                 FROM steep_repl.snapshots ORDER BY created_at, snapshot_id",
                &[],
            )
            .map_err(db_error)?;
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "snapshot_id": r.get::<_, String>(0),
                    "kind": r.get::<_, String>(1),
                    "mode": r.get::<_, String>(2),
                    "status": r.get::<_, String>(3),
                    "storage_path": r.get::<_, Option<String>>(4),
                    "compression": r.get::<_, String>(5),
                    "tables": r.get::<_, Option<i32>>(6),
                    "rows": r.get::<_, i64>(7),
                    "bytes": r.get::<_, i64>(8),
                    "created_at": r.get::<_, String>(9),
                    "error": r.get::<_, Option<String>>(10),
                })
            })
            .collect();
        ctx.out.json(&items)?;
        if items.is_empty() {
            ctx.out.note("no snapshots recorded here");
            return Ok(());
        }
        let body: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                vec![
                    i["snapshot_id"].as_str().unwrap_or("").into(),
                    format!(
                        "{} ({})",
                        i["kind"].as_str().unwrap_or(""),
                        i["mode"].as_str().unwrap_or("")
                    ),
                    i["status"].as_str().unwrap_or("").into(),
                    i["storage_path"].as_str().unwrap_or("-").into(),
                    human_bytes(i["bytes"].as_i64().unwrap_or(0)),
                    i["error"].as_str().unwrap_or("").into(),
                ]
            })
            .collect();
        ctx.out.line(table(
            &["snapshot", "kind", "status", "path", "bytes", "error"],
            &body,
        ));
        Ok(())
    }
}
