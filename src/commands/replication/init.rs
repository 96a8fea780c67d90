//! `steep replication init`: client mode runs the engine here over the operator's own
//! connections to both nodes (and a replication connection to each publisher).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::SetupName;
use crate::commands::merge::refuse_password_for_direct;
use crate::commands::snapshot::client_run::{find_pg_tool, run_local, CliConnect};
use crate::commands::{job_result, parallel_arg, Blocking, Usage};
use crate::context::Ctx;
use steep::cli::follow::{Ending, Follower};
use steep::cli::output::table;
use steep::conn::ConnParams;
use steep::db_error::db_error;
use steep::engine::apply::SchemaMode;
use steep::engine::counters::Counters;
use steep::engine::merge::strategy::Strategy;
use steep::engine::replication::init::{self, InitOptions, InitReport, Node, Refused, Source};

#[derive(Args)]
pub struct InitArgs {
    /// The other node (B): its connection string (URI or key=value; PG* variables fill the gaps).
    #[arg(long, value_name = "CONNINFO")]
    peer: String,
    /// Where B's data comes from: snapshot (A's rows replace B's, taken at A's slot), merge
    /// (both nodes' rows kept, conflicts decided by --strategy), or empty (no rows on either).
    #[arg(long, value_parser = |s: &str| s.parse::<Source>())]
    from: Source,
    /// With --from merge: how conflicts are decided (prefer-local, prefer-remote,
    /// last-modified, last-modified:COLUMN).
    #[arg(long, value_parser = |s: &str| s.parse::<Strategy>())]
    strategy: Option<Strategy>,
    /// Replicate from A to B only (the only choice on PostgreSQL 15).
    #[arg(long)]
    one_way: bool,
    #[command(flatten)]
    setup: SetupName,
    /// Bidirectional: sequences of replicated tables count in steps of N, A from values
    /// congruent to 1, B to 2, so inserts on both nodes never collide.
    #[arg(long, default_value_t = 10, value_name = "N")]
    key_step: i64,
    /// How B's server reaches A, kept in B's subscription (default: this command's connection
    /// to A, with a password only if one is written in -c; prefer a passfile on B's server).
    #[arg(long, value_name = "CONNINFO")]
    a_as_seen_by_b: Option<String>,
    /// How A's server reaches B, kept in A's subscription (default: --peer's parameters, with a
    /// password only if one is written in --peer).
    #[arg(long, value_name = "CONNINFO")]
    b_as_seen_by_a: Option<String>,
    /// --from snapshot: verify (B holds the tables: checked against A's, emptied, and A's rows
    /// streamed straight into them) or create (B's database does not hold them yet: a snapshot
    /// with A's schema through --work-dir, applied).
    #[arg(long, default_value = "verify", value_parser = schema_arg)]
    schema: SchemaMode,
    /// Connections per node for the copy (B's inserts into indexed tables set the pace: on two
    /// cores two connections measured fastest, docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 2, value_parser = parallel_arg)]
    parallel: i32,
    /// Tables larger than this are copied in several block ranges at once.
    #[arg(long, value_name = "MB", default_value_t = 256)]
    chunk_size_mb: u64,
    /// With --schema create: where the snapshot is written on its way from A to B (a private
    /// directory inside, removed afterwards; default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Seconds a marker row may take to arrive on the other node.
    #[arg(long, default_value_t = 60)]
    marker_timeout: u64,
    /// Run as a job on A's server (start_replication_init; superusers), which reaches B as
    /// merge jobs do: a peer a superuser defined, or a connection string without a password.
    #[arg(long)]
    direct: bool,
}

/// `--schema`: verify or create (a load without checking has no place in an init).
fn schema_arg(s: &str) -> Result<SchemaMode, String> {
    match s {
        "verify" => Ok(SchemaMode::Verify),
        "create" => Ok(SchemaMode::Create),
        _ => Err(format!("use verify or create, not {s:?}")),
    }
}

/// How a subscriber's server reaches a publisher: the parameters this command resolved, but a
/// password only when the operator wrote it in the connection string (one from PGPASSWORD or
/// a passfile here is not copied into the other server's catalog). application_name is left
/// to PostgreSQL (the subscription's name). Returns the string and whether it holds a password.
fn conninfo_for_subscriber(given: Option<&str>, resolved: &ConnParams) -> Result<(String, bool)> {
    let mut p = resolved.clone();
    let given_password = match given {
        Some(s) => ConnParams::parse(s)?.get("password").is_some(),
        None => false,
    };
    if !given_password {
        p.remove("password");
    }
    p.remove("application_name");
    Ok((p.to_conninfo(), given_password))
}

impl InitArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let (a_params, _) = ctx.conn_params()?;
        let b_params = ctx.other_params(&self.peer, "--peer")?;
        let mut notes = Vec::new();
        let a_for_b = match &self.a_as_seen_by_b {
            Some(s) => (s.clone(), ConnParams::parse(s)?.get("password").is_some()),
            None => conninfo_for_subscriber(ctx.given_connection(), &a_params)?,
        };
        let b_for_a = match &self.b_as_seen_by_a {
            Some(s) => (s.clone(), ConnParams::parse(s)?.get("password").is_some()),
            None => conninfo_for_subscriber(Some(&self.peer), &b_params)?,
        };
        if a_for_b.1 {
            notes.push(
                "the password in A's connection string is stored by PostgreSQL in B's \
                 pg_subscription (subconninfo, readable by superusers and in B's backups): \
                 prefer a passfile, a service file or a client certificate on B's server"
                    .to_string(),
            );
        }
        if b_for_a.1 && !self.one_way {
            notes.push(
                "the password in B's connection string is stored by PostgreSQL in A's \
                 pg_subscription (subconninfo, readable by superusers and in A's backups): \
                 prefer a passfile, a service file or a client certificate on A's server"
                    .to_string(),
            );
        }
        for n in &notes {
            ctx.out.warn(n);
        }
        // --schema create restores A's schema on B: pg_dump and pg_restore as new as A.
        let need = if self.schema == SchemaMode::Create {
            let v: i32 = steep::cli::client::connect(&a_params)?
                .query_one("SELECT current_setting('server_version_num')::int", &[])?
                .get(0);
            Some((v / 10000) as u32)
        } else {
            None
        };
        let work_dir = match &self.work_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir(),
        };
        let opts = InitOptions {
            setup: self.setup.name.clone(),
            from: self.from,
            one_way: self.one_way,
            key_step: self.key_step,
            a_for_b: a_for_b.0,
            b_for_a: b_for_a.0,
            work_dir,
            parallel: self.parallel as usize,
            chunk_bytes: self.chunk_size_mb.max(1) << 20,
            pg_dump: need.and_then(|n| find_pg_tool("pg_dump", "STEEP_PG_DUMP", n)),
            pg_restore: need.and_then(|n| find_pg_tool("pg_restore", "STEEP_PG_RESTORE", n)),
            schema: self.schema,
            marker_timeout: Duration::from_secs(self.marker_timeout.max(1)),
            merge_strategy: self.strategy.clone(),
        };
        match (&self.strategy, self.from) {
            (Some(_), from) if from != Source::Merge => {
                return Err(Usage(
                    "--strategy is for --from merge (how the merge decides conflicts)".into(),
                )
                .into())
            }
            (None, Source::Merge) => {
                return Err(Usage(
                    "--from merge needs --strategy: prefer-local, prefer-remote, last-modified or \
                     last-modified:COLUMN (to decide conflicts one by one, run steep merge run \
                     first, then replication init --from merge finds nothing left to decide)"
                        .into(),
                )
                .into())
            }
            (Some(Strategy::Ask), _) => {
                return Err(Usage(
                    "--strategy ask cannot be used by replication init (nobody is asked while \
                     it runs): decide with steep merge run --strategy ask first, then run \
                     replication init --from merge with another strategy"
                        .into(),
                )
                .into())
            }
            _ => {}
        }
        if self.direct {
            return self.direct(ctx, &opts.a_for_b, notes);
        }
        let (ca, cb) = (CliConnect(a_params.clone()), CliConnect(b_params.clone()));
        let (a, b) = (
            Node {
                connect: &ca,
                params: &a_params,
            },
            Node {
                connect: &cb,
                params: &b_params,
            },
        );
        ctx.out.status(
            "Replicating",
            format!(
                "{} {} {} (setup {}, from {})",
                a_params.endpoint(),
                if self.one_way { "->" } else { "<->" },
                b_params.endpoint(),
                self.setup.name,
                format!("{:?}", self.from).to_lowercase()
            ),
        );
        let progress = Arc::new(Counters::default());
        let say = |m: String| ctx.out.verbose(m);
        let (result, _) = run_local(ctx, "replication init", &progress, &mut None, || {
            init::init(&a, &b, &opts, &progress, &say)
        });
        let mut report = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(r) = e.downcast_ref::<Refused>() {
                    return Err(Blocking(r.to_string()).into());
                }
                return Err(e);
            }
        };
        report.notes.extend(notes);
        show(ctx, &report)
    }
}

impl InitArgs {
    /// Queue the init as a job on A's server and follow it. What the job is given is kept in
    /// its work_queue row: no password may be in it.
    fn direct(&self, ctx: &Ctx, a_for_b: &str, notes: Vec<String>) -> Result<()> {
        refuse_password_for_direct(&self.peer)?;
        let b_for_a = self.b_as_seen_by_a.as_deref().unwrap_or("");
        if ConnParams::parse(a_for_b)?.get("password").is_some()
            || ConnParams::parse(b_for_a)?.get("password").is_some()
        {
            return Err(Usage(
                "--direct keeps how each node reaches the other in the job's row, which must not \
                 hold a password: give the servers a passfile (and connection strings without \
                 one)"
                    .into(),
            )
            .into());
        }
        let mut options = serde_json::json!({
            "setup": self.setup.name,
            "one_way": self.one_way,
            "key_step": self.key_step,
            "a_conninfo": a_for_b,
            "schema": self.schema.name(),
            "parallel": self.parallel,
            "chunk_size_mb": self.chunk_size_mb,
            "marker_timeout_seconds": self.marker_timeout,
        });
        if let Some(b) = &self.b_as_seen_by_a {
            options["b_conninfo"] = b.clone().into();
        }
        if let Some(s) = &self.strategy {
            options["strategy"] = s.to_string().into();
        }
        let mut c = ctx.connect()?;
        let from = serde_json::to_value(self.from)?;
        let op: i64 = c
            .query_one(
                "SELECT steep_repl.start_replication_init($1, $2, $3)",
                &[&self.peer, &from.as_str(), &options],
            )
            .map_err(db_error)?
            .get(0);
        ctx.out.status(
            "Queued",
            format!("replication init as job {op} on A's server"),
        );
        let f = Follower::new(&ctx.out, "replication init").follow(&mut c, op)?;
        if f.ending == Ending::Detached {
            bail!("stopped following; job {op} goes on (steep ops watch {op})");
        }
        let result = job_result(&mut c, op, &format!("replication init job {op}"))?;
        let mut report: InitReport =
            serde_json::from_value(result).context("reading the job's result")?;
        report.notes.extend(notes);
        show(ctx, &report)
    }
}

fn show(ctx: &Ctx, r: &InitReport) -> Result<()> {
    if ctx.out.json {
        return ctx.out.json(r);
    }
    if !r.removed_first.is_empty() {
        ctx.out.note(format!(
            "removed first (left by an earlier init): {}",
            r.removed_first.join(", ")
        ));
    }
    if r.already_replicating {
        ctx.out.status(
            "Unchanged",
            format!("setup {} already replicates; nothing changed", r.setup),
        );
    }
    let rows: Vec<Vec<String>> = r
        .directions
        .iter()
        .map(|d| {
            vec![
                format!("{} -> {}", d.from, d.to),
                d.slot.clone(),
                d.consistent_point.clone(),
                format!("{} ms", d.marker_ms),
            ]
        })
        .collect();
    ctx.out.line(table(
        &[
            "direction",
            "slot / subscription",
            "from LSN",
            "marker arrived",
        ],
        &rows,
    ));
    if let Some(n) = r.rows_copied {
        ctx.out.line(format!(
            "{} tables, {n} rows copied at A's slot's consistent point",
            r.tables.len()
        ));
    }
    if !r.key_scheme.is_empty() {
        let rows: Vec<Vec<String>> = r
            .key_scheme
            .iter()
            .map(|k| {
                vec![
                    k.node.clone(),
                    k.assigned.sequence.clone(),
                    format!("{}.{}", k.assigned.table, k.assigned.column),
                    format!("{} mod {}", k.assigned.node_offset, k.assigned.step),
                    k.assigned.next_value.to_string(),
                ]
            })
            .collect();
        ctx.out.line(table(
            &["node", "sequence", "column", "values", "next"],
            &rows,
        ));
    }
    for n in &r.notes {
        ctx.out.note(n);
    }
    if !r.already_replicating {
        ctx.out.status(
            "Replicating",
            format!(
                "setup {} ({}): steep replication status shows lag and errors",
                r.setup,
                if r.bidirectional {
                    "both ways"
                } else {
                    "one way"
                }
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_reaches_the_subscription_only_when_written_in_the_string() {
        let resolved =
            ConnParams::parse("host=/tmp port=5432 user=u dbname=d password=fromenv").unwrap();
        let (s, given) = conninfo_for_subscriber(Some("host=/tmp"), &resolved).unwrap();
        assert!(!given && !s.contains("password"), "{s}");
        let (s, given) =
            conninfo_for_subscriber(Some("host=/tmp password=typed"), &resolved).unwrap();
        assert!(given && s.contains("password"), "{s}");
    }
}
