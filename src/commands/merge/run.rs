//! `steep merge run`: make this node and a peer hold the same rows. Client mode: the CLI holds a
//! connection to each node with the operator's own credentials and runs the engine here; the
//! merge is recorded on this node (its `merges` row, which tables are done, decisions, audit).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::prompt;
use crate::commands::snapshot::client_run::{run_local, CliConnect};
use crate::commands::{require_extension, Blocking, Usage};
use crate::context::Ctx;
use steep::cli::follow::{Ending, Follower};
use steep::cli::output::table;
use steep::db_error::db_error;
use steep::engine::counters::Counters;
use steep::engine::merge::apply::{self, MergeOptions, MergeReport};
use steep::engine::merge::conflicts::{self, DecisionsFile};
use steep::engine::merge::ledger;
use steep::engine::merge::strategy::{table_arg, Strategy};
use steep::engine::merge::Refused;

#[derive(Args)]
pub struct RunArgs {
    /// The peer. Client mode: its connection string (URI or key=value; PG* variables fill the
    /// gaps). --direct: the name of a peer a superuser defined (steep_repl.define_peer), or for a
    /// superuser a connection string without a password.
    #[arg(long, value_name = "PEER")]
    peer: String,
    /// How conflicts are decided: prefer-local, prefer-remote, last-modified (commit
    /// timestamps), last-modified:COLUMN, or ask.
    #[arg(long, default_value = "ask", value_parser = |s: &str| s.parse::<Strategy>())]
    strategy: Strategy,
    /// Only this table (schema.table, or table in any schema), optionally with its own
    /// strategy: TABLE:STRATEGY (repeatable).
    #[arg(long = "table", short = 't', value_name = "TABLE[:STRATEGY]", value_parser = table_arg)]
    tables: Vec<(String, Option<Strategy>)>,
    /// Decisions for conflicts (steep merge analyze --decisions-out writes the file); a decision
    /// made on rows that changed since is not applied.
    #[arg(long, value_name = "FILE")]
    decisions: Option<PathBuf>,
    /// Count what would change on each node; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Leave rows that only one node has where they are (default: copy them to the other).
    #[arg(long)]
    keep_one_sided: bool,
    /// Go on with an earlier merge (its strategy and tables): tables it merged are not redone.
    #[arg(long, value_name = "MERGE_ID", conflicts_with_all = ["strategy", "tables", "keep_one_sided", "dry_run", "direct"])]
    resume: Option<String>,
    /// Run as a job on this node's server (start_merge), which connects to the peer itself: a
    /// peer a superuser defined for you, or for a superuser a connection string without a
    /// password. ask prompts here while the job waits.
    #[arg(long, conflicts_with = "client")]
    direct: bool,
    /// Run here over your own connections to both nodes (the default).
    #[arg(long)]
    client: bool,
}

impl RunArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let (mut c, local) = ctx.open()?;
        require_extension(&mut c)?;
        let has: bool = c
            .query_one(
                "SELECT pg_catalog.to_regclass('steep_repl.merge_tables') IS NOT NULL",
                &[],
            )?
            .get(0);
        if !has {
            bail!(
                "the server's steep_repl is older than 0.6.0, which keeps a merge's progress, \
                 decisions and audit: run `steep init` to upgrade it"
            );
        }
        let asks = self.strategy == Strategy::Ask
            || self.tables.iter().any(|(_, s)| *s == Some(Strategy::Ask));
        if asks
            && self.resume.is_none()
            && !self.dry_run
            && self.decisions.is_none()
            && !prompt::interactive()
        {
            // Refused before anything is recorded.
            return Err(prompt::no_terminal());
        }
        let role: String = c.query_one("SELECT current_user::text", &[])?.get(0);
        if self.direct {
            let r = self.direct(ctx, &mut c, &role)?;
            return report_of(ctx, &r);
        }
        let peer = ctx.other_params(&self.peer, "--peer")?;
        let (_, peer) = steep::cli::client::open(&peer).context("connecting to the peer")?;
        let opts = match &self.resume {
            Some(id) => resumed(&mut c, id, &role)?,
            None => self.start(&mut c, &peer.redacted(), &role)?,
        };
        ctx.out.status(
            if self.resume.is_some() {
                "Resuming"
            } else {
                "Merging"
            },
            format!(
                "{} with strategy {} ({}; if interrupted: steep merge run --peer ... --resume {})",
                opts.merge_id,
                opts.strategy,
                if opts.dry_run {
                    "dry run"
                } else {
                    "writes both nodes"
                },
                opts.merge_id
            ),
        );
        let result = self.run(ctx, &mut c, &local, &peer, &opts);
        if let Err(e) = ledger::record_end(&mut c, &opts.merge_id, &result) {
            ctx.out.warn(format!(
                "not recording the outcome in steep_repl.merges: {}",
                steep::db_error::describe(&e)
            ));
        }
        let r = result.map_err(|e| match e.downcast::<Refused>() {
            Ok(r) => Blocking(r.to_string()).into(),
            Err(e) => e,
        })?;
        report_of(ctx, &r)
    }

    /// The options of a new merge, as given.
    fn options(&self, merge_id: String, role: &str) -> MergeOptions {
        MergeOptions {
            merge_id,
            tables: self.tables.iter().map(|(t, _)| t.clone()).collect(),
            strategy: self.strategy.clone(),
            per_table: self
                .tables
                .iter()
                .filter_map(|(t, s)| Some((t.clone(), s.clone()?)))
                .collect(),
            keep_one_sided: self.keep_one_sided,
            dry_run: self.dry_run,
            role: role.to_string(),
        }
    }

    /// A new client-mode merge: its row on this node.
    fn start(&self, c: &mut postgres::Client, peer: &str, role: &str) -> Result<MergeOptions> {
        let mut opts = self.options(String::new(), role);
        opts.merge_id = ledger::record_start(c, peer, &opts, "client")?;
        Ok(opts)
    }

    /// The decisions of the file given, saved for the merge.
    fn save_file_decisions(
        &self,
        ctx: &Ctx,
        c: &mut impl postgres::GenericClient,
        merge_id: &str,
        role: &str,
    ) -> Result<()> {
        let Some(path) = &self.decisions else {
            return Ok(());
        };
        let file = DecisionsFile::read(path)?;
        let by = format!("decisions file {} ({role})", path.display());
        let mut decided = Vec::new();
        for x in &file {
            if let Some(d) = x.decided(&by)? {
                let (schema, table) = conflicts::split_table(&x.table)?;
                decided.push((schema, table, &x.key, d));
            }
        }
        let all: Vec<ledger::Decided> = decided
            .iter()
            .map(|(schema, table, key, d)| ledger::Decided {
                schema,
                table,
                key,
                decision: d,
            })
            .collect();
        ledger::save_decisions(c, merge_id, &all)?;
        ctx.out.status(
            "Read",
            format!(
                "{} decisions of {} conflicts from {}",
                all.len(),
                file.len(),
                path.display()
            ),
        );
        Ok(())
    }

    /// Direct mode: queue the merge, follow it, answer its questions when it waits for them.
    fn direct(&self, ctx: &Ctx, c: &mut postgres::Client, role: &str) -> Result<MergeReport> {
        super::refuse_password_for_direct(&self.peer)?;
        let opts = self.options(String::new(), role);
        let mut options = opts.to_stored();
        // The job waits for answers only when someone is here to give them.
        options["wait_for_decisions"] = prompt::interactive().into();
        // start_merge takes the strategy as an argument of its own.
        if let Some(o) = options.as_object_mut() {
            o.remove("strategy");
        }
        let tables: Option<Vec<String>> = (!opts.tables.is_empty()).then(|| opts.tables.clone());
        // Queued and given the file's decisions in one transaction: the job starts at its
        // commit, and finds them.
        let mut tx = c.transaction()?;
        let merge_id: String = tx
            .query_one(
                "SELECT merge_id FROM steep_repl.start_merge($1, $2, $3, $4)",
                &[&self.peer, &tables, &self.strategy.to_string(), &options],
            )
            .map_err(db_error)?
            .get(0);
        self.save_file_decisions(ctx, &mut tx, &merge_id, role)?;
        tx.commit()?;
        let op: i64 = c
            .query_one(
                "SELECT id FROM steep_repl.work_queue WHERE merge_id = $1 ORDER BY id DESC LIMIT 1",
                &[&merge_id],
            )?
            .get(0);
        ctx.out
            .status("Queued", format!("merge {merge_id} (job {op})"));
        loop {
            let f =
                Follower::new(&ctx.out, format!("merge {merge_id}"))
                    .follow_until(c, op, &|e| e.phase.as_deref() == Some("awaiting_decisions"))?;
            if f.ending == Ending::Detached {
                bail!(
                    "stopped following; merge {merge_id} goes on (steep merge progress {merge_id})"
                );
            }
            if f.last.is_terminal() {
                break;
            }
            let found = conflicts::stored(c, &merge_id)?;
            let decided = ledger::decisions(c, &merge_id)?;
            if prompt::undecided(&found, &decided).is_empty() {
                // Answered: the job goes on within a moment.
                std::thread::sleep(std::time::Duration::from_millis(300));
                continue;
            }
            if !prompt::ask(ctx, c, &merge_id, role, &found, &decided)? {
                c.execute("SELECT steep_repl.cancel_merge($1)", &[&merge_id])?;
                bail!(
                    "stopped at the operator's request; merge {merge_id} is cancelled and the \
                     answers given are kept: steep merge run --peer ... --resume {merge_id}"
                );
            }
        }
        let result = super::job_result(c, op, &format!("merge {merge_id}"))?;
        serde_json::from_value(result).context("reading the merge's result")
    }

    fn run(
        &self,
        ctx: &Ctx,
        c: &mut postgres::Client,
        local: &steep::conn::ConnParams,
        peer: &steep::conn::ConnParams,
        opts: &MergeOptions,
    ) -> Result<MergeReport> {
        self.save_file_decisions(ctx, c, &opts.merge_id, &opts.role)?;
        let (local, peer) = (CliConnect(local.clone()), CliConnect(peer.clone()));
        if opts.ask_tables().is_some()
            && !opts.dry_run
            && self.decisions.is_none()
            && !prompt::interactive()
        {
            return Err(prompt::no_terminal());
        }
        // Conflicts are read here only to ask about them: with a decisions file and no terminal
        // the merge applies what the file decides and leaves the rest.
        if opts.ask_tables().is_some() && !opts.dry_run && prompt::interactive() {
            let progress = Arc::new(Counters::default());
            let (found, _) = run_local(ctx, "reading conflicts", &progress, &mut None, || {
                conflicts::asked(&local, &peer, opts, &progress)
            });
            let found = found?;
            let decided = ledger::decisions(c, &opts.merge_id)?;
            let pending = !prompt::undecided(&found, &decided).is_empty();
            if pending && !prompt::ask(ctx, c, &opts.merge_id, &opts.role, &found, &decided)? {
                bail!(
                    "stopped at the operator's request; the answers given are kept: steep \
                     merge run --peer ... --resume {}",
                    opts.merge_id
                );
            }
        }
        let progress = Arc::new(Counters::default());
        let (result, _) = run_local(ctx, "merge", &progress, &mut None, || {
            apply::merge(&local, &peer, opts, &progress)
        });
        result
    }
}

/// An earlier merge's options, read back from its row.
fn resumed(c: &mut postgres::Client, id: &str, role: &str) -> Result<MergeOptions> {
    let row = c
        .query_opt(
            "SELECT tables, options, kind, dry_run, created_by::text FROM steep_repl.merges
              WHERE merge_id = $1",
            &[&id],
        )?
        .ok_or_else(|| {
            Usage(format!(
                "no merge {id} that this role may see: `steep merge list` shows them"
            ))
        })?;
    let (tables, options, kind, dry_run): (Vec<String>, serde_json::Value, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    // Its plan and decisions are rows its creator can change: only its creator runs them.
    let creator: String = row.get(4);
    if creator != role {
        return Err(Usage(format!(
            "{id} was started by {creator}: only {creator} may resume it (as {role}, start a \
             merge of your own)"
        ))
        .into());
    }
    if kind != "merge" || dry_run {
        return Err(Usage(format!(
            "{id} is {}, not a merge to resume",
            if dry_run { "a dry run" } else { "an analysis" }
        ))
        .into());
    }
    c.execute(
        "UPDATE steep_repl.merges SET status = 'running', error_message = NULL WHERE merge_id = $1",
        &[&id],
    )?;
    MergeOptions::from_stored(id, tables, &options, role).map(|mut o| {
        o.dry_run = false;
        o
    })
}

fn report_of(ctx: &Ctx, r: &MergeReport) -> Result<()> {
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| {
            vec![
                t.qualified(),
                t.strategy.clone(),
                t.conflict.to_string(),
                format!("+{} ~{}", t.local_inserted, t.local_updated),
                format!("+{} ~{}", t.remote_inserted, t.remote_updated),
                t.skipped.to_string(),
                t.undecided.to_string(),
                t.state.clone(),
            ]
        })
        .collect();
    ctx.out.line(table(
        &[
            "table",
            "strategy",
            "conflicts",
            "local (+new ~updated)",
            "peer (+new ~updated)",
            "skipped",
            "undecided",
            "state",
        ],
        &rows,
    ));
    for t in &r.tables {
        if !t.undecided_keys.is_empty() {
            ctx.out.line(format!(
                "{} undecided: {}{}",
                t.qualified(),
                t.undecided_keys.join(" "),
                if t.undecided as usize > t.undecided_keys.len() {
                    format!(" (+{} more)", t.undecided as usize - t.undecided_keys.len())
                } else {
                    String::new()
                }
            ));
        }
    }
    for t in &r.completed_from_peer_only {
        ctx.out.note(format!(
            "{t} had been merged on the peer only by an earlier run; now merged on both"
        ));
    }
    let sum = |f: fn(&apply::TableMerge) -> u64| r.tables.iter().map(f).sum::<u64>();
    let (to_local, to_peer) = (
        sum(|t| t.local_inserted + t.local_updated),
        sum(|t| t.remote_inserted + t.remote_updated),
    );
    ctx.out.status(
        if r.dry_run { "Would merge" } else { "Merged" },
        format!(
            "{} tables: {to_local} rows written here, {to_peer} on the peer, {} skipped, {} \
             undecided ({})",
            r.tables.len(),
            sum(|t| t.skipped),
            sum(|t| t.undecided),
            r.merge_id
        ),
    );
    ctx.out.json(r)?;
    let undecided = sum(|t| t.undecided);
    if undecided > 0 {
        return Err(Blocking(format!(
            "{undecided} conflicts are undecided and were left as they are on both nodes: \
             decide them (steep merge run --peer ... --resume {} at a terminal, or with \
             --decisions FILE)",
            r.merge_id
        ))
        .into());
    }
    Ok(())
}
