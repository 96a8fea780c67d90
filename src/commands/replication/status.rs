//! `steep replication status`: what steep's replication looks like on this node (and the peer),
//! read with `steep_repl.replication_status()`.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::SetupName;
use crate::commands::require_extension;
use crate::context::Ctx;
use steep::cli::output::table;
use steep::db_error::db_error;
use steep::engine::replication::init::SEQUENCES_NOTE;
use steep::engine::replication::names;

#[derive(Args)]
pub struct StatusArgs {
    /// The other node too (its connection string).
    #[arg(long, value_name = "CONNINFO")]
    peer: Option<String>,
    #[command(flatten)]
    setup: SetupName,
}

#[derive(Serialize)]
struct Item {
    kind: String,
    name: String,
    active: Option<bool>,
    lag_bytes: Option<String>,
    detail: serde_json::Value,
}

#[derive(Serialize)]
struct NodeStatus {
    node: String,
    endpoint: String,
    items: Vec<Item>,
}

fn read(c: &mut postgres::Client, setup: &str) -> Result<Vec<Item>> {
    let pattern = names::name_regex(setup);
    let publication = names::publication(setup);
    Ok(c.query(
        "SELECT kind, name, active, lag_bytes::text, detail
               FROM steep_repl.replication_status()
              WHERE name ~ $1 OR (kind = 'publication' AND name = $2) OR detail->>'setup' = $3
              ORDER BY kind, name",
        &[&pattern, &publication, &setup],
    )
    .map_err(db_error)?
    .iter()
    .map(|r| Item {
        kind: r.get(0),
        name: r.get(1),
        active: r.get(2),
        lag_bytes: r.get(3),
        detail: r.get(4),
    })
    .collect())
}

impl StatusArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        names::check_setup(&self.setup.name)?;
        let (mut a, pa) = ctx.open()?;
        require_extension(&mut a)?;
        let mut nodes = vec![NodeStatus {
            node: "A".into(),
            endpoint: pa.endpoint(),
            items: read(&mut a, &self.setup.name)?,
        }];
        if let Some(peer) = &self.peer {
            let pb = ctx.other_params(peer, "--peer")?;
            let mut b = steep::cli::client::connect(&pb)?;
            require_extension(&mut b)?;
            nodes.push(NodeStatus {
                node: "B".into(),
                endpoint: pb.endpoint(),
                items: read(&mut b, &self.setup.name)?,
            });
        }
        if ctx.out.json {
            return ctx.out.json(&serde_json::json!({
                "setup": self.setup.name,
                "nodes": nodes,
                "sequences": SEQUENCES_NOTE,
            }));
        }
        for n in &nodes {
            ctx.out.line(format!("node {} ({})", n.node, n.endpoint));
            if n.items.is_empty() {
                ctx.out.line(format!(
                    "  no replication of setup {} here",
                    self.setup.name
                ));
                continue;
            }
            let rows: Vec<Vec<String>> = n
                .items
                .iter()
                .map(|i| vec![i.kind.clone(), i.name.clone(), state(i), describe(i)])
                .collect();
            ctx.out
                .line(table(&["kind", "name", "state", "detail"], &rows));
        }
        ctx.out.note(SEQUENCES_NOTE);
        Ok(())
    }
}

fn state(i: &Item) -> String {
    match (i.kind.as_str(), i.active) {
        ("slot", Some(true)) => "streaming".into(),
        ("slot", _) => "inactive (retains WAL)".into(),
        ("subscription", Some(true)) => "running".into(),
        ("subscription", _) if i.detail["enabled"] == true => "enabled, no worker".into(),
        ("subscription", _) => "disabled".into(),
        _ => String::new(),
    }
}

fn describe(i: &Item) -> String {
    let d = &i.detail;
    match i.kind.as_str() {
        "slot" => format!(
            "lag {} bytes, retains {} bytes of WAL",
            i.lag_bytes.as_deref().unwrap_or("?"),
            d["retained_bytes"]
        ),
        "subscription" => format!(
            "received {}, {} apply errors, last message {}",
            d["received_lsn"].as_str().unwrap_or("-"),
            d["apply_error_count"],
            d["last_msg_receipt_time"].as_str().unwrap_or("-")
        ),
        "publication" => format!("{} tables (steep's marker table one of them)", d["tables"]),
        "sequence" => format!(
            "{}.{}: values {} mod {} (increment was {})",
            d["table"].as_str().unwrap_or(""),
            d["column"].as_str().unwrap_or(""),
            d["node_offset"],
            d["step"],
            d["increment_before"]
        ),
        _ => d.to_string(),
    }
}
