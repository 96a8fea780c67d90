//! A merge job on the server (`steep merge run --direct`, or `start_merge` from SQL):
//! `steep merge progress`, `wait` and `cancel`.

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use crate::commands::require_extension;
use crate::context::Ctx;
use steep::cli::output::table;
use steep::db_error::db_error;

#[derive(Args)]
pub struct ProgressArgs {
    /// One merge (default: every merge in flight).
    merge_id: Option<String>,
}

impl ProgressArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let rows = c
            .query(
                "SELECT merge_id, status, coalesce(phase, ''), overall_percent, tables_completed,
                        tables_total, coalesce(current_table, ''), undecided, coalesce(error, '')
                   FROM steep_repl.merge_progress($1)",
                &[&self.merge_id],
            )
            .map_err(db_error)?;
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "merge_id": r.get::<_, String>(0),
                    "status": r.get::<_, String>(1),
                    "phase": r.get::<_, String>(2),
                    "percent": r.get::<_, f64>(3),
                    "tables_completed": r.get::<_, i32>(4),
                    "tables_total": r.get::<_, i32>(5),
                    "table": r.get::<_, String>(6),
                    "undecided": r.get::<_, i64>(7),
                    "error": r.get::<_, String>(8),
                })
            })
            .collect();
        let shown: Vec<Vec<String>> = list
            .iter()
            .map(|m| {
                vec![
                    m["merge_id"].as_str().unwrap_or("").to_string(),
                    m["status"].as_str().unwrap_or("").to_string(),
                    m["phase"].as_str().unwrap_or("").to_string(),
                    format!("{}/{}", m["tables_completed"], m["tables_total"]),
                    m["table"].as_str().unwrap_or("").to_string(),
                    m["undecided"].to_string(),
                ]
            })
            .collect();
        ctx.out.line(table(
            &["merge", "status", "phase", "tables", "table", "undecided"],
            &shown,
        ));
        ctx.out.json(&json!({ "merges": list }))
    }
}

#[derive(Args)]
pub struct WaitArgs {
    merge_id: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 86400)]
    timeout: i32,
}

impl WaitArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let r = c
            .query_one(
                "SELECT status, coalesce(error_message, '') FROM steep_repl.wait_merge($1, $2)",
                &[&self.merge_id, &self.timeout],
            )
            .map_err(db_error)?;
        let (status, error): (String, String) = (r.get(0), r.get(1));
        ctx.out
            .json(&json!({ "merge_id": self.merge_id, "status": status, "error": error }))?;
        match status.as_str() {
            "complete" => {
                ctx.out.status("Complete", &self.merge_id);
                Ok(())
            }
            "awaiting_decisions" => bail!(
                "merge {} is waiting for decisions: steep merge progress {} shows how many",
                self.merge_id,
                self.merge_id
            ),
            _ => bail!("merge {} {status}: {error}", self.merge_id),
        }
    }
}

#[derive(Args)]
pub struct CancelArgs {
    merge_id: String,
}

impl CancelArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let ok: bool = c
            .query_one("SELECT steep_repl.cancel_merge($1)", &[&self.merge_id])
            .map_err(db_error)?
            .get(0);
        ctx.out
            .json(&json!({ "merge_id": self.merge_id, "cancelled": ok }))?;
        if !ok {
            bail!(
                "merge {} has no job pending or running (steep merge list shows how it ended)",
                self.merge_id
            );
        }
        ctx.out.status("Cancelling", &self.merge_id);
        Ok(())
    }
}
