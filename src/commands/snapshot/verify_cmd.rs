//! `steep snapshot verify`: checking a snapshot directory offline.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::client_run::run_local;
use crate::context::Ctx;
use steep::engine::counters::Counters;
use steep::engine::file_check;
use steep::engine::manifest::Manifest;

#[derive(Args)]
pub struct VerifyArgs {
    /// Snapshot directory (here, where steep runs).
    dir: PathBuf,
    /// Files checked in parallel.
    #[arg(long, short = 'j', default_value_t = 4)]
    parallel: usize,
}

impl VerifyArgs {
    pub(super) fn execute(&self, ctx: &Ctx) -> Result<()> {
        let m = Manifest::read(&self.dir)?;
        let progress = Arc::new(Counters::default());
        let mut rec = None;
        let problems = run_local(ctx, "verify", &progress, &mut rec, || {
            let problems = file_check::check(&self.dir, &m, true, self.parallel, &progress);
            if progress.cancelled() {
                return Err(steep::engine::error::cancelled(
                    "not every file was checked",
                ));
            }
            Ok(problems)
        })
        .0?;
        let nfiles: usize = m.tables.iter().map(|t| t.files.len()).sum::<usize>()
            + if m.schema.is_some() { 2 } else { 0 };
        ctx.out.json(&json!({
            "snapshot_id": m.snapshot_id,
            "ok": problems.is_empty(),
            "files": nfiles,
            "tables": m.tables.len(),
            "rows": m.rows(),
            "problems": problems,
        }))?;
        if let Some(p) = problems.first() {
            for p in &problems {
                ctx.out.line(format!("damaged: {p}"));
            }
            bail!(
                "snapshot {} is damaged: {p}{}",
                m.snapshot_id,
                if problems.len() > 1 {
                    format!(" (and {} more)", problems.len() - 1)
                } else {
                    String::new()
                }
            );
        }
        ctx.out.status(
            "Verified",
            format!(
                "snapshot {}: {nfiles} files, {} tables, {} rows: sizes, checksums and row counts match",
                m.snapshot_id,
                m.tables.len(),
                m.rows()
            ),
        );
        Ok(())
    }
}
