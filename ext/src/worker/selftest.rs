//! The selftest job: real, measurable, cancellable work for diagnostics (`steep doctor
//! --worker-selftest`) and for testing the worker machinery. It first opens the connection a
//! snapshot job would (steep_repl.worker_conninfo, then restricted to the owner), so pg_hba.conf
//! problems show here; then each step runs a catalog query in a transaction of its own as the
//! role that queued the job (security-restricted operation) and waits out the rest of its time
//! slice, reporting progress.

use std::time::Duration;

use pgrx::prelude::*;
use serde_json::{json, Value};

use crate::worker::job::{JobCtx, JobError};
use crate::worker::tx;
use steep::engine::Connect;

pub fn run(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let seconds = ctx.job.params["seconds"]
        .as_f64()
        .unwrap_or(1.0)
        .clamp(0.0, 86_400.0);
    let steps = ctx.job.params["steps"]
        .as_i64()
        .unwrap_or(10)
        .clamp(1, 1_000_000);
    let slice = Duration::from_secs_f64(seconds / steps as f64);
    ctx.event.phase = Some("connecting".into());
    let connection_role: String = crate::worker::snapshot_jobs::worker_connect(ctx)?
        .connect()
        .and_then(|mut c| Ok(c.query_one("SELECT current_user::text", &[])?.get(0)))
        .map_err(|e| JobError::Failed(format!("{e:#}")))?;
    ctx.event.phase = Some("running".into());
    let owner = ctx.job.owner;
    let mut seen_role = String::new();
    let mut relations = 0i64;
    for step in 1..=steps {
        let step_end = ctx.elapsed() + slice;
        let (who, n) = tx(move || {
            crate::security::as_owner(owner, || {
                Spi::get_two::<String, i64>(
                    "SELECT current_user::text, pg_catalog.count(*) FROM pg_catalog.pg_class",
                )
            })
        })?
        .map_err(|e| JobError::Failed(format!("selftest step {step}: {e}")))?;
        seen_role = who.unwrap_or_default();
        relations = n.unwrap_or(0);
        // Wait out the slice in short sleeps so a cancel request is seen at once.
        while let Some(left) = step_end.checked_sub(ctx.elapsed()).filter(|d| !d.is_zero()) {
            ctx.sleep(left.min(Duration::from_millis(50)))?;
        }
        ctx.event.phase = Some(format!("step {step} of {steps}"));
        ctx.event.percent = step as f64 * 100.0 / steps as f64;
        ctx.event.rows = step;
        ctx.event.eta_seconds = Some(((steps - step) as f64 * slice.as_secs_f64()).ceil() as i64);
        ctx.tick()?;
    }
    Ok(json!({
        "steps": steps,
        "role": seen_role,
        "connection_role": connection_role,
        "relations_seen": relations,
        "elapsed_ms": ctx.elapsed().as_millis() as i64,
    }))
}
