//! `steep demo`: steep's main job end to end on two throwaway sandboxes: initialize both nodes,
//! compare their schemas, snapshot node A with live progress, apply it to node B, compare again;
//! then let both nodes change the same accounts and merge them back together, one conflict
//! settled by a decisions file as an operator would.
//! Each step is the `steep` command a user would type (shown, then run by this same binary).

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use crate::context::Ctx;
use steep::cli::home;
use steep::cli::sandbox::{ClusterOptions, PgInstall, TempCluster};

#[derive(Args)]
pub struct DemoArgs {
    /// pg_config of the PostgreSQL to use (default: the PostgreSQL 18 that ./install.sh set up).
    #[arg(long, value_name = "PATH")]
    pg_config: Option<std::path::PathBuf>,
    /// pgbench scale of node A's data (1 = 100,000 accounts).
    #[arg(long, default_value_t = 5)]
    scale: u32,
}

impl DemoArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let out = &ctx.out;
        let install = PgInstall::locate(self.pg_config.as_deref())?;
        install.require_extension()?;
        let base = home::steep_home().join("demo");
        out.status(
            "Starting",
            format!("two sandboxes, node A and node B ({})", install.version),
        );
        let a = TempCluster::start(&base, install.clone(), &ClusterOptions::default())?;
        let b = TempCluster::start(&base, install.clone(), &ClusterOptions::default())?;
        let (ca, cb) = (a.connection_uri("postgres"), b.connection_uri("postgres"));
        out.line(format!("node A: {ca}\nnode B: {cb}"));

        out.status(
            "Loading",
            format!("pgbench data (scale {}) into node A", self.scale),
        );
        let pgbench = Command::new(install.bin("pgbench"))
            .args(["-i", "-q", "-s", &self.scale.to_string()])
            .arg(&ca)
            .output()
            .context("running pgbench")?;
        if !pgbench.status.success() {
            bail!(
                "pgbench failed: {}",
                String::from_utf8_lossy(&pgbench.stderr).trim()
            );
        }

        let step = |title: &str, args: &[&str], expect: &[i32]| -> Result<i32> {
            out.line(format!("\n$ steep {}", args.join(" ")));
            out.status("Demo", title);
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(args);
            if out.json {
                // stdout carries only the demo's JSON document.
                cmd.stdout(std::io::stderr());
            }
            let code = cmd.status().context("running steep")?.code().unwrap_or(1);
            if !expect.contains(&code) {
                bail!(
                    "the demo step `steep {}` failed (exit {code})",
                    args.join(" ")
                );
            }
            Ok(code)
        };
        step(
            "install steep_repl and register node A",
            &["init", "-q", "-c", &ca],
            &[0],
        )?;
        step(
            "install steep_repl and register node B",
            &["init", "-q", "-c", &cb],
            &[0],
        )?;
        let before = step(
            "compare schemas: B has none of A's tables yet (exit 3: blocking differences)",
            &["schema", "compare", "-c", &ca, "--peer", &cb],
            &[0, 3],
        )?;
        let snap = a.snapshot_dir().join("demo");
        let snap_s = snap.to_string_lossy().to_string();
        step(
            "snapshot node A in a background worker on A, with live progress",
            &[
                "snapshot",
                "generate",
                "--direct",
                "-o",
                &snap_s,
                "--compression",
                "zstd",
                "-c",
                &ca,
            ],
            &[0],
        )?;
        step(
            "apply it to node B (schema, data, indexes and constraints)",
            &[
                "snapshot", "apply", "--direct", "-i", &snap_s, "--schema", "create", "-c", &cb,
            ],
            &[0],
        )?;
        let after = step(
            "compare schemas again: every table matches",
            &["schema", "compare", "-c", &ca, "--peer", &cb],
            &[0],
        )?;
        let count = |conn: &str| -> Result<i64> {
            let mut c = postgres::Client::connect(conn, postgres::NoTls)?;
            Ok(c.query_one("SELECT count(*) FROM pgbench_accounts", &[])?
                .get(0))
        };
        let (na, nb) = (
            count(&a.connection_string("postgres"))?,
            count(&b.connection_string("postgres"))?,
        );
        out.line(format!(
            "\npgbench_accounts: {na} rows on node A, {nb} on node B"
        ));
        if na != nb {
            bail!("node B has {nb} accounts, node A {na}");
        }
        // Both nodes change: the same accounts differently (conflicts), new accounts on each.
        let (sa, sb) = (
            a.connection_string("postgres"),
            b.connection_string("postgres"),
        );
        let run_sql = |conn: &str, q: &str| -> Result<()> {
            postgres::Client::connect(conn, postgres::NoTls)?.batch_execute(q)?;
            Ok(())
        };
        run_sql(
            &sa,
            "UPDATE pgbench_accounts SET abalance = abalance + 100 WHERE aid IN (1, 2, 3);
             INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
             SELECT 10000000 + g, 1, 0, 'opened on A' FROM generate_series(1, 3) g",
        )?;
        run_sql(
            &sb,
            "UPDATE pgbench_accounts SET abalance = abalance - 50 WHERE aid IN (1, 2, 3);
             INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
             SELECT 20000000 + g, 1, 0, 'opened on B' FROM generate_series(1, 5) g",
        )?;
        out.line("\nboth nodes changed accounts 1, 2 and 3; A opened 3 accounts, B opened 5");
        let decisions = base.join(format!("demo-decisions-{}.json", std::process::id()));
        let decisions_s = decisions.to_string_lossy().to_string();
        step(
            "analyze the overlap, and write the conflicts for review",
            &[
                "merge",
                "analyze",
                "-c",
                &ca,
                "--peer",
                &cb,
                "-t",
                "pgbench_accounts",
                "--decisions-out",
                &decisions_s,
            ],
            &[0],
        )?;
        // The operator's review: account 1 keeps B's balance.
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&decisions)?)?;
        for c in file["conflicts"].as_array_mut().into_iter().flatten() {
            if c["key"] == "(1)" {
                c["decision"] = "keep_remote".into();
            }
        }
        std::fs::write(&decisions, file.to_string())?;
        out.line("decided in the file: account 1 keeps node B's balance");
        let merged = step(
            "merge: new accounts copied both ways, account 1 as decided, the rest prefer A",
            &[
                "merge",
                "run",
                "-c",
                &ca,
                "--peer",
                &cb,
                "-t",
                "pgbench_accounts",
                "--strategy",
                "prefer-local",
                "--decisions",
                &decisions_s,
            ],
            &[0],
        )?;
        let _ = std::fs::remove_file(&decisions);
        let balance = |conn: &str| -> Result<(i64, i64)> {
            let mut c = postgres::Client::connect(conn, postgres::NoTls)?;
            let r = c.query_one(
                "SELECT count(*), sum(abalance)::int8 FROM pgbench_accounts",
                &[],
            )?;
            Ok((r.get(0), r.get(1)))
        };
        let (ma, mb) = (balance(&sa)?, balance(&sb)?);
        out.line(format!(
            "\nafter the merge: {} accounts and a total balance of {} on node A; {} and {} on node B",
            ma.0, ma.1, mb.0, mb.1
        ));
        if ma != mb {
            bail!("the nodes differ after the merge: A {ma:?}, B {mb:?}");
        }
        out.json(&json!({
            "merge": merged,
            "merged_accounts": ma.0,
            "merged_balance": ma.1,
            "node_a": ca,
            "node_b": cb,
            "compare_before": before,
            "compare_after": after,
            "accounts_a": na,
            "accounts_b": nb,
        }))?;
        drop((a, b));
        out.status("Removed", "the demo sandboxes");
        Ok(())
    }
}
