//! `steep health`: steep_repl.health() of the connected database. Exit 1 when unhealthy.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::commands::require_extension;
use crate::context::Ctx;

#[derive(Args)]
pub struct HealthArgs {}

#[derive(Serialize)]
struct Health {
    status: String,
    extension_version: String,
    pg_version: String,
    background_worker_running: bool,
    shared_memory_available: bool,
    active_operations: i64,
    last_error: Option<String>,
}

impl HealthArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut client = ctx.connect()?;
        require_extension(&mut client)?;
        let r = client
            .query_one("SELECT * FROM steep_repl.health()", &[])
            .context("calling steep_repl.health()")?;
        let h = Health {
            status: r.get("status"),
            extension_version: r.get("extension_version"),
            pg_version: r.get("pg_version"),
            background_worker_running: r.get("background_worker_running"),
            shared_memory_available: r.get("shared_memory_available"),
            active_operations: r.get("active_operations"),
            last_error: r.get("last_error"),
        };
        ctx.out.json(&h)?;
        ctx.out.line(format!(
            "status: {}\nextension: {}\nPostgreSQL: {}\nbackground worker running: {}\n\
             shared memory available: {}\nactive operations: {}\nlast error: {}",
            h.status,
            h.extension_version,
            h.pg_version,
            h.background_worker_running,
            h.shared_memory_available,
            h.active_operations,
            h.last_error.as_deref().unwrap_or("-")
        ));
        if h.status == "unhealthy" {
            bail!("steep_repl is unhealthy: run `steep doctor` for the cause and the fix");
        }
        if h.status == "degraded" {
            ctx.out
                .warn("degraded: run `steep doctor` to see what is missing and how to fix it");
        }
        Ok(())
    }
}
