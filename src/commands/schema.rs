//! `steep schema capture|compare|diff`: schema fingerprints of this node and a peer.
//! compare and diff capture both sides, copy the peer's fingerprints here (export/import) and
//! compare them here; exit 3 when a difference breaks replication.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::commands::{require_extension, Blocking};
use crate::context::Ctx;
use steep::cli::output::table;
use steep::db_error::db_error;
use steep::sql::parse_qualified_name;

#[derive(Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Store the fingerprints of every user table under this node.
    Capture(CaptureArgs),
    /// Compare this node's tables with a peer's; exit 3 when a difference breaks replication.
    Compare(CompareArgs),
    /// Per-column differences of one table between this node and a peer.
    Diff(DiffArgs),
}

impl SchemaArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        match &self.command {
            SchemaCommand::Capture(a) => a.execute(ctx),
            SchemaCommand::Compare(a) => a.execute(ctx),
            SchemaCommand::Diff(a) => a.execute(ctx),
        }
    }
}

fn local_node(client: &mut postgres::Client, which: &str) -> Result<String> {
    require_extension(client).with_context(|| format!("on the {which} server"))?;
    client
        .query_one("SELECT steep_repl.local_node_id()", &[])?
        .get::<_, Option<String>>(0)
        .ok_or_else(|| anyhow!("the {which} server has no local node: run `steep init` against it"))
}

fn capture(client: &mut postgres::Client, node: &str) -> Result<i32> {
    Ok(client
        .query_one("SELECT steep_repl.capture_fingerprints($1)", &[&node])
        .map_err(db_error)?
        .get(0))
}

#[derive(Args)]
pub struct CaptureArgs {
    /// Node id to store them under (default: the local node).
    #[arg(long)]
    node: Option<String>,
}

impl CaptureArgs {
    fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut client = ctx.connect()?;
        let node = match &self.node {
            Some(n) => {
                require_extension(&mut client)?;
                n.clone()
            }
            None => local_node(&mut client, "local")?,
        };
        let n = capture(&mut client, &node)?;
        ctx.out.status(
            "Captured",
            format!("fingerprints of {n} tables as node {node}"),
        );
        ctx.out
            .json(&serde_json::json!({ "node_id": node, "tables": n }))
    }
}

#[derive(Args)]
struct PeerArgs {
    /// Connection string of the peer server (URI or key=value; PG* variables fill the gaps).
    #[arg(long, value_name = "CONN")]
    peer: String,
}

/// Both nodes' fingerprints, captured now, with the peer's copied into the local database.
struct Compared {
    client: postgres::Client,
    local: String,
    peer: String,
}

fn capture_both(ctx: &Ctx, peer: &PeerArgs) -> Result<Compared> {
    let mut client = ctx.connect()?;
    let params = ctx.other_params(&peer.peer, "--peer")?;
    let (mut peer_client, params) =
        steep::cli::client::open(&params).context("connecting to the peer")?;
    let local = local_node(&mut client, "local")?;
    let peer_id = local_node(&mut peer_client, "peer")?;
    if local == peer_id {
        return Err(anyhow!(
            "both servers say they are node {local:?}: give one another id with `steep init --node-id`"
        ));
    }
    let n_local = capture(&mut client, &local)?;
    let n_peer = capture(&mut peer_client, &peer_id)?;
    ctx.out.status(
        "Captured",
        format!("{n_local} tables on {local}, {n_peer} tables on {peer_id}"),
    );
    // The peer must be a registered node here to hold its fingerprints.
    let known = client
        .query_opt(
            "SELECT 1 FROM steep_repl.nodes WHERE node_id = $1",
            &[&peer_id],
        )?
        .is_some();
    if !known {
        let r = peer_client.query_one(
            "SELECT node_name, host, port, priority FROM steep_repl.nodes WHERE node_id = $1",
            &[&peer_id],
        )?;
        let host: Option<String> = r.get(1);
        let host = host.or_else(|| {
            params
                .get("host")
                .filter(|h| !h.starts_with('/'))
                .map(String::from)
        });
        client
            .execute(
                "SELECT steep_repl.register_node($1, $2, $3, $4, $5)",
                &[
                    &peer_id,
                    &r.get::<_, String>(0),
                    &host,
                    &r.get::<_, i32>(2),
                    &r.get::<_, i32>(3),
                ],
            )
            .map_err(db_error)?;
        ctx.out
            .status("Registered", format!("peer node {peer_id} here"));
    }
    let export: serde_json::Value = peer_client
        .query_one("SELECT steep_repl.export_fingerprints($1)", &[&peer_id])
        .map_err(db_error)?
        .get(0);
    client
        .execute(
            "SELECT steep_repl.import_fingerprints($1, $2)",
            &[&peer_id, &export],
        )
        .map_err(db_error)?;
    Ok(Compared {
        client,
        local,
        peer: peer_id,
    })
}

#[derive(Debug, Clone, Serialize)]
struct Difference {
    column: Option<String>,
    difference: String,
    local: Option<String>,
    peer: Option<String>,
    breaks_replication: bool,
}

#[derive(Debug, Serialize)]
struct TableResult {
    schema: String,
    table: String,
    status: String,
    breaks_replication: bool,
    differences: Vec<Difference>,
}

fn diffs(
    c: &mut Compared,
    schema: Option<&str>,
    table: Option<&str>,
) -> Result<Vec<(String, String, Difference)>> {
    let rows = c
        .client
        .query(
            "SELECT schema_name, table_name, column_name, difference, local_value, peer_value,
                    breaks_replication
             FROM steep_repl.fingerprint_diff($1, $2, $3, $4)",
            &[&c.local, &c.peer, &schema, &table],
        )
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                Difference {
                    column: r.get(2),
                    difference: r.get(3),
                    local: r.get(4),
                    peer: r.get(5),
                    breaks_replication: r.get(6),
                },
            )
        })
        .collect())
}

/// A table's status from the one diff: on one side only, or whether anything its fingerprint
/// covers differs (a default is reported, and fingerprinted nowhere).
fn status_of(differences: &[Difference]) -> &'static str {
    if differences
        .iter()
        .any(|d| d.difference == "table_missing_on_peer")
    {
        "local_only"
    } else if differences
        .iter()
        .any(|d| d.difference == "table_missing_locally")
    {
        "peer_only"
    } else if differences.iter().any(|d| d.difference != "default") {
        "mismatch"
    } else {
        "match"
    }
}

fn describe(d: &Difference) -> String {
    let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
    let what = match d.difference.as_str() {
        "table_missing_on_peer" => "table only here".to_string(),
        "table_missing_locally" => "table only on the peer".to_string(),
        "missing_on_peer" => format!("column only here ({})", v(&d.local)),
        "missing_locally" => format!("column only on the peer ({})", v(&d.peer)),
        other => format!("{other}: {} here, {} on the peer", v(&d.local), v(&d.peer)),
    };
    let col = d
        .column
        .as_ref()
        .map(|c| format!("{c}: "))
        .unwrap_or_default();
    let mark = if d.breaks_replication {
        "breaks replication"
    } else {
        "non-blocking"
    };
    format!("{col}{what} [{mark}]")
}

#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    peer: PeerArgs,
}

impl CompareArgs {
    fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut c = capture_both(ctx, &self.peer)?;
        let statuses = c
            .client
            .query(
                "SELECT schema_name, table_name FROM steep_repl.compare_fingerprints($1, $2)",
                &[&c.local, &c.peer],
            )
            .map_err(db_error)?;
        let mut by_table: BTreeMap<(String, String), Vec<Difference>> = BTreeMap::new();
        for (schema, table, d) in diffs(&mut c, None, None)? {
            by_table.entry((schema, table)).or_default().push(d);
        }
        let results: Vec<TableResult> = statuses
            .iter()
            .map(|r| {
                let key: (String, String) = (r.get(0), r.get(1));
                let differences = by_table.remove(&key).unwrap_or_default();
                TableResult {
                    breaks_replication: differences.iter().any(|d| d.breaks_replication),
                    schema: key.0,
                    table: key.1,
                    status: status_of(&differences).to_string(),
                    differences,
                }
            })
            .collect();
        let blocking = results.iter().filter(|t| t.breaks_replication).count();
        ctx.out.json(&serde_json::json!({
            "local_node": c.local,
            "peer_node": c.peer,
            "tables": results,
            "blocking": blocking,
        }))?;
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|t| {
                vec![
                    format!("{}.{}", t.schema, t.table),
                    t.status.clone(),
                    t.differences
                        .iter()
                        .map(describe)
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            })
            .collect();
        if rows.is_empty() {
            ctx.out.note("neither node has user tables");
        } else {
            ctx.out
                .line(table(&["table", "status", "differences"], &rows));
        }
        if blocking > 0 {
            return Err(Blocking(format!(
                "{blocking} of {} tables differ in ways that break replication between {} and {}",
                results.len(),
                c.local,
                c.peer
            ))
            .into());
        }
        ctx.out.status(
            "Compatible",
            format!("{} tables: nothing breaks replication", results.len()),
        );
        Ok(())
    }
}

#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// The table: name or schema.name (SQL quoting rules: "Mixed Case"."t"). Default schema: public.
    #[arg(long, value_name = "TABLE")]
    table: String,
}

impl DiffArgs {
    fn execute(&self, ctx: &Ctx) -> Result<()> {
        let (schema, table_name) = parse_qualified_name(&self.table)?;
        let schema = schema.unwrap_or_else(|| "public".into());
        let mut c = capture_both(ctx, &self.peer)?;
        let found = diffs(&mut c, Some(&schema), Some(&table_name))?;
        let exists = c
            .client
            .query_opt(
                "SELECT 1 FROM steep_repl.schema_fingerprints
                 WHERE node_id IN ($1, $2) AND schema_name = $3 AND table_name = $4 LIMIT 1",
                &[&c.local, &c.peer, &schema, &table_name],
            )?
            .is_some();
        if !exists {
            return Err(anyhow!(
                "table {} exists on neither node",
                steep::sql::qualified(&schema, &table_name)
            ));
        }
        let differences: Vec<Difference> = found.into_iter().map(|(_, _, d)| d).collect();
        let blocking = differences.iter().any(|d| d.breaks_replication);
        ctx.out.json(&TableResult {
            schema: schema.clone(),
            table: table_name.clone(),
            status: if differences.is_empty() {
                "match"
            } else {
                "differs"
            }
            .into(),
            breaks_replication: blocking,
            differences: differences.clone(),
        })?;
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = differences
            .iter()
            .map(|d| {
                vec![
                    d.column.clone().unwrap_or_else(|| "(table)".into()),
                    d.difference.clone(),
                    v(&d.local),
                    v(&d.peer),
                    if d.breaks_replication { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        let name = steep::sql::qualified(&schema, &table_name);
        if rows.is_empty() {
            ctx.out
                .status("Identical", format!("{name} on {} and {}", c.local, c.peer));
            return Ok(());
        }
        ctx.out.line(table(
            &[
                "column",
                "difference",
                c.local.as_str(),
                c.peer.as_str(),
                "breaks replication",
            ],
            &rows,
        ));
        if blocking {
            return Err(Blocking(format!("{name} differs in ways that break replication")).into());
        }
        Ok(())
    }
}
