//! `steep merge list`: the merges and analyses this role may see on this node, newest first.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::commands::require_extension;
use crate::context::Ctx;
use steep::cli::output::table;

#[derive(Args)]
pub struct ListArgs {
    /// At most this many (newest first).
    #[arg(long, default_value_t = 20)]
    limit: i64,
}

impl ListArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let rows = c.query(
            "SELECT merge_id, kind, strategy, dry_run, status, peer, tables_completed,
                    rows_merged, conflict_count, created_by::text,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                    coalesce(error_message, '')
               FROM steep_repl.merges ORDER BY created_at DESC, merge_id DESC LIMIT $1",
            &[&self.limit],
        )?;
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "merge_id": r.get::<_, String>(0),
                    "kind": r.get::<_, String>(1),
                    "strategy": r.get::<_, String>(2),
                    "dry_run": r.get::<_, bool>(3),
                    "status": r.get::<_, String>(4),
                    "peer": r.get::<_, String>(5),
                    "tables": r.get::<_, i32>(6),
                    "rows_merged": r.get::<_, i64>(7),
                    "conflicts": r.get::<_, i64>(8),
                    "created_by": r.get::<_, String>(9),
                    "created_at": r.get::<_, String>(10),
                    "error": r.get::<_, String>(11),
                })
            })
            .collect();
        let shown: Vec<Vec<String>> = list
            .iter()
            .map(|m| {
                [
                    "merge_id",
                    "kind",
                    "strategy",
                    "status",
                    "tables",
                    "rows_merged",
                    "created_at",
                ]
                .iter()
                .map(|k| match &m[*k] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect()
            })
            .collect();
        ctx.out.line(table(
            &[
                "merge",
                "kind",
                "strategy",
                "status",
                "tables",
                "rows",
                "created (UTC)",
            ],
            &shown,
        ));
        ctx.out.json(&json!({ "merges": list }))
    }
}
