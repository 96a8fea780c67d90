//! `steep merge analyze`. Client mode (the default) holds a connection to each node with the
//! operator's own credentials and runs the engine here. `--direct` queues the analysis on the
//! server (`start_merge_analysis`), whose worker connects to the peer itself — a peer a superuser
//! defined for the role, or for superusers a connection string — and reads the result back from
//! the server. Both report the same thing.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use crate::commands::snapshot::client_run::{run_local, CliConnect};
use crate::commands::{require_extension, Blocking};
use crate::context::Ctx;
use steep::cli::follow::{Ending, Follower};
use steep::cli::output::table;
use steep::db_error::db_error;
use steep::engine::counters::Counters;
use steep::engine::merge::conflicts::{self, DecisionsFile};
use steep::engine::merge::{self, stored, Analysis, AnalyzeOptions, Refused, TableOverlap};

/// Keys shown per category without `--keys`.
const SAMPLE: usize = 10;

fn parallel_arg(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if (1..=16).contains(&n) => Ok(n),
        _ => Err(format!("give 1 to 16 tables at once, not {s:?}")),
    }
}

#[derive(Args)]
pub struct AnalyzeArgs {
    /// The peer. Client mode: its connection string (URI or key=value; PG* variables fill the
    /// gaps). --direct: the name of a peer a superuser defined (steep_repl.define_peer), or for a
    /// superuser a connection string without a password.
    #[arg(long, value_name = "PEER")]
    peer: String,
    /// Only this table (schema.table, or table in any schema; repeatable).
    #[arg(long = "table", short = 't', value_name = "TABLE")]
    tables: Vec<String>,
    /// Tables compared at once (each with a connection to each node).
    #[arg(long, short = 'j', default_value_t = 2, value_parser = parallel_arg)]
    parallel: i32,
    /// Every key of every category (default: the first 10 of each).
    #[arg(long)]
    keys: bool,
    /// Run in a background worker on the server, which connects to the peer itself.
    #[arg(long, conflicts_with = "client")]
    direct: bool,
    /// Run here over our own connections to both nodes (the default).
    #[arg(long)]
    client: bool,
    /// Write every conflict, with both row images and an empty decision, to FILE for
    /// `steep merge run --decisions FILE` (client mode).
    #[arg(long, value_name = "FILE", conflicts_with = "direct")]
    decisions_out: Option<std::path::PathBuf>,
}

impl AnalyzeArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let (analysis, merge_id) = if self.direct {
            let (a, id) = self.direct(ctx)?;
            (a, Some(id))
        } else {
            (self.client(ctx)?, None)
        };
        let reported = report(ctx, &analysis, merge_id.as_deref(), self.keys);
        if let Some(path) = &self.decisions_out {
            self.write_decisions(ctx, path, &analysis)?;
        }
        reported
    }

    /// Every conflict with both images and an empty decision, for review.
    fn write_decisions(
        &self,
        ctx: &Ctx,
        path: &std::path::Path,
        analysis: &steep::engine::merge::Analysis,
    ) -> Result<()> {
        let (mut c, local) = ctx.open()?;
        let created_at: String = c
            .query_one(
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                &[],
            )?
            .get(0);
        let peer = ctx.other_params(&self.peer, "--peer")?;
        let (_, peer) = steep::cli::client::open(&peer).context("connecting to the peer")?;
        let progress = Arc::new(Counters::default());
        let (l, p) = (CliConnect(local.clone()), CliConnect(peer.clone()));
        let (found, _) = run_local(ctx, "reading conflicts", &progress, &mut None, || {
            // Only the tables the analysis found conflicts in are compared again.
            conflicts::collect(
                &l,
                &p,
                &self.tables,
                &|t| {
                    analysis
                        .tables
                        .iter()
                        .any(|o| o.schema == t.schema && o.table == t.name && o.conflict > 0)
                },
                &progress,
            )
        });
        let file = DecisionsFile {
            format: conflicts::FORMAT.into(),
            version: conflicts::VERSION,
            created_at,
            local: local.redacted(),
            peer: peer.redacted(),
            conflicts: found?,
        };
        let text = serde_json::to_string_pretty(&file)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        ctx.out.status(
            "Wrote",
            format!(
                "{} conflicts to {}: fill in each \"decision\" (keep_local, keep_remote, skip), \
                 then steep merge run --decisions {}",
                file.conflicts.len(),
                path.display(),
                path.display()
            ),
        );
        Ok(())
    }

    fn client(&self, ctx: &Ctx) -> Result<Analysis> {
        let (_, local) = ctx.open()?;
        let peer = ctx.other_params(&self.peer, "--peer")?;
        let (_, peer) = steep::cli::client::open(&peer).context("connecting to the peer")?;
        let progress = Arc::new(Counters::default());
        let opts = AnalyzeOptions {
            tables: self.tables.clone(),
            parallel: self.parallel as usize,
        };
        let (local, peer) = (CliConnect(local), CliConnect(peer));
        let (result, _) = run_local(ctx, "merge analysis", &progress, &mut None, || {
            merge::analyze(&local, &peer, &opts, &progress)
        });
        result.map_err(|e| match e.downcast::<Refused>() {
            Ok(r) => Blocking(r.to_string()).into(),
            Err(e) => e,
        })
    }

    fn direct(&self, ctx: &Ctx) -> Result<(Analysis, String)> {
        super::refuse_password_for_direct(&self.peer)?;
        let mut c = ctx.connect()?;
        require_extension(&mut c)?;
        let has: bool = c
            .query_one(
                "SELECT to_regprocedure('steep_repl.start_merge_analysis(text, text[], integer)') \
                 IS NOT NULL",
                &[],
            )?
            .get(0);
        if !has {
            bail!(
                "the server's steep_repl is older than 0.5.0 and cannot analyze in a worker: run \
                 `steep init` to upgrade it, or use client mode"
            );
        }
        let tables: Option<Vec<String>> = (!self.tables.is_empty()).then(|| self.tables.clone());
        let merge_id: String = c
            .query_one(
                "SELECT merge_id FROM steep_repl.start_merge_analysis($1, $2, $3)",
                &[&self.peer, &tables, &self.parallel],
            )
            .map_err(db_error)?
            .get(0);
        let op: i64 = c
            .query_one(
                "SELECT id FROM steep_repl.work_queue WHERE merge_id = $1 ORDER BY id DESC LIMIT 1",
                &[&merge_id],
            )?
            .get(0);
        let f = Follower::new(&ctx.out, format!("merge analysis {merge_id}")).follow(&mut c, op)?;
        if f.ending == Ending::Detached {
            bail!("stopped following; analysis {merge_id} goes on (steep ops list)");
        }
        super::job_result(&mut c, op, &format!("merge analysis {merge_id}"))?;
        Ok((stored::load(&mut c, &merge_id)?, merge_id))
    }
}

/// A key list for display: all of them, or the first few.
fn shown(keys: &[String], all: bool) -> Vec<String> {
    if all {
        keys.to_vec()
    } else {
        keys.iter().take(SAMPLE).cloned().collect()
    }
}

fn notes(t: &TableOverlap) -> String {
    let mut n = Vec::new();
    if t.suspect_serial_keys {
        n.push("both sides numbered their own keys?".to_string());
    }
    for u in &t.unique_collisions {
        n.push(format!(
            "{} {} row(s) collide on {}",
            u.keys.len(),
            u.category.replace('_', " "),
            u.index
        ));
    }
    n.join("; ")
}

fn report(ctx: &Ctx, a: &Analysis, merge_id: Option<&str>, all_keys: bool) -> Result<()> {
    let rows: Vec<Vec<String>> = a
        .tables
        .iter()
        .map(|t| {
            vec![
                t.qualified(),
                t.matched.to_string(),
                t.conflict.to_string(),
                t.local_only.to_string(),
                t.remote_only.to_string(),
                notes(t),
            ]
        })
        .collect();
    ctx.out.line(table(
        &[
            "table",
            "match",
            "conflict",
            "local only",
            "remote only",
            "notes",
        ],
        &rows,
    ));
    for t in &a.tables {
        for (what, keys) in [
            ("conflict", &t.keys.conflict),
            ("local only", &t.keys.local_only),
            ("remote only", &t.keys.remote_only),
        ] {
            if keys.is_empty() {
                continue;
            }
            let list = shown(keys, all_keys);
            let more = keys.len() - list.len();
            ctx.out.line(format!(
                "{} {what}: {}{}",
                t.qualified(),
                list.join(" "),
                if more > 0 {
                    format!(" (+{more} more: --keys)")
                } else {
                    String::new()
                }
            ));
        }
    }
    let (conflict, one_sided): (u64, u64) = a.tables.iter().fold((0, 0), |(c, o), t| {
        (c + t.conflict, o + t.local_only + t.remote_only)
    });
    ctx.out.status(
        "Analyzed",
        format!(
            "{} tables: {conflict} conflicting rows, {one_sided} on one side only{}",
            a.tables.len(),
            merge_id.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
    );
    let tables: Vec<serde_json::Value> = a
        .tables
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            let truncated = !all_keys
                && [&t.keys.conflict, &t.keys.local_only, &t.keys.remote_only]
                    .iter()
                    .any(|k| k.len() > SAMPLE);
            v["keys"] = json!({
                "conflict": shown(&t.keys.conflict, all_keys),
                "local_only": shown(&t.keys.local_only, all_keys),
                "remote_only": shown(&t.keys.remote_only, all_keys),
            });
            v["keys_truncated"] = json!(truncated);
            v
        })
        .collect();
    ctx.out
        .json(&json!({ "merge_id": merge_id, "tables": tables }))?;
    // Reported above; and blocking: copying those rows would fail on the other node.
    let colliding: Vec<String> = a
        .tables
        .iter()
        .filter(|t| !t.unique_collisions.is_empty())
        .map(|t| t.qualified())
        .collect();
    if !colliding.is_empty() {
        return Err(Blocking(format!(
            "rows on one side only would collide with the other node's secondary unique keys \
             in {}: resolve them before merging (the keys are listed above)",
            colliding.join(", ")
        ))
        .into());
    }
    Ok(())
}
