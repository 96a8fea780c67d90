//! `steep node register|heartbeat|status|list|remove`: the node registry of the connected database.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::commands::require_extension;
use crate::context::Ctx;
use steep::cli::output::table;
use steep::db_error::db_error;

#[derive(Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Register a node, or update it (upsert).
    Register(RegisterArgs),
    /// Record that a node is alive.
    Heartbeat(HeartbeatArgs),
    /// One node and its health.
    Status(StatusArgs),
    /// Every registered node.
    List(ListArgs),
    /// Forget a node (and its stored fingerprints).
    Remove(RemoveArgs),
}

impl NodeArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let mut client = ctx.connect()?;
        require_extension(&mut client)?;
        match &self.command {
            NodeCommand::Register(a) => a.execute(ctx, &mut client),
            NodeCommand::Heartbeat(a) => a.execute(ctx, &mut client),
            NodeCommand::Status(a) => a.execute(ctx, &mut client),
            NodeCommand::List(a) => a.execute(ctx, &mut client),
            NodeCommand::Remove(a) => a.execute(ctx, &mut client),
        }
    }
}

#[derive(Serialize)]
struct NodeRow {
    node_id: String,
    node_name: String,
    host: Option<String>,
    port: i32,
    status: String,
    last_seen: Option<String>,
    is_healthy: bool,
    local: bool,
}

fn nodes(client: &mut postgres::Client, id: Option<&str>) -> Result<Vec<NodeRow>> {
    let rows = client
        .query(
            "SELECT s.node_id, s.node_name, s.host, s.port, s.status, s.last_seen::text,
                    s.is_healthy, s.node_id = steep_repl.local_node_id()
             FROM steep_repl.node_status($1) s",
            &[&id],
        )
        .context("reading steep_repl.node_status()")?;
    Ok(rows
        .iter()
        .map(|r| NodeRow {
            node_id: r.get(0),
            node_name: r.get(1),
            host: r.get(2),
            port: r.get(3),
            status: r.get(4),
            last_seen: r.get(5),
            is_healthy: r.get(6),
            local: r.get::<_, Option<bool>>(7).unwrap_or(false),
        })
        .collect())
}

fn print_nodes(ctx: &Ctx, rows: &[NodeRow]) {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            vec![
                format!("{}{}", n.node_id, if n.local { " (local)" } else { "" }),
                n.node_name.clone(),
                format!("{}:{}", n.host.as_deref().unwrap_or("-"), n.port),
                n.status.clone(),
                n.last_seen.clone().unwrap_or_else(|| "never".into()),
                if n.is_healthy { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    ctx.out.line(table(
        &["node", "name", "address", "status", "last seen", "healthy"],
        &body,
    ));
}

fn unknown(id: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "unknown node {id:?}: see `steep node list`, or register it with `steep node register`"
    )
}

#[derive(Args)]
pub struct RegisterArgs {
    /// Node id (any text up to 200 characters).
    node_id: String,
    /// Display name (default: the node id).
    #[arg(long)]
    name: Option<String>,
    /// Host peers use to reach it.
    #[arg(long)]
    host: Option<String>,
    #[arg(long, default_value_t = 5432)]
    port: i32,
    /// 1..100.
    #[arg(long, default_value_t = 50)]
    priority: i32,
}

impl RegisterArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let name = self.name.clone().unwrap_or_else(|| self.node_id.clone());
        client
            .execute(
                "SELECT steep_repl.register_node($1, $2, $3, $4, $5)",
                &[&self.node_id, &name, &self.host, &self.port, &self.priority],
            )
            .map_err(db_error)
            .with_context(|| format!("registering node {:?}", self.node_id))?;
        ctx.out
            .status("Registered", format!("node {} ({name})", self.node_id));
        let rows = nodes(client, Some(&self.node_id))?;
        ctx.out.json(&rows[0])
    }
}

#[derive(Args)]
pub struct HeartbeatArgs {
    node_id: String,
}

impl HeartbeatArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let known: bool = client
            .query_one("SELECT steep_repl.heartbeat($1)", &[&self.node_id])?
            .get(0);
        if !known {
            return Err(unknown(&self.node_id));
        }
        ctx.out
            .status("Heartbeat", format!("node {}", self.node_id));
        ctx.out
            .json(&serde_json::json!({ "node_id": self.node_id, "known": true }))
    }
}

#[derive(Args)]
pub struct StatusArgs {
    /// Node id (default: the local node).
    node_id: Option<String>,
}

impl StatusArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let id = match &self.node_id {
            Some(id) => id.clone(),
            None => client
                .query_one("SELECT steep_repl.local_node_id()", &[])?
                .get::<_, Option<String>>(0)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no local node is registered here: run `steep init`, or name a node"
                    )
                })?,
        };
        let rows = nodes(client, Some(&id))?;
        let Some(n) = rows.first() else {
            return Err(unknown(&id));
        };
        ctx.out.json(n)?;
        print_nodes(ctx, &rows);
        Ok(())
    }
}

#[derive(Args)]
pub struct ListArgs {}

impl ListArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let rows = nodes(client, None)?;
        ctx.out.json(&rows)?;
        if rows.is_empty() {
            ctx.out
                .note("no nodes registered: `steep init` registers this one");
        } else {
            print_nodes(ctx, &rows);
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct RemoveArgs {
    node_id: String,
}

impl RemoveArgs {
    fn execute(&self, ctx: &Ctx, client: &mut postgres::Client) -> Result<()> {
        let removed: bool = client
            .query_one("SELECT steep_repl.remove_node($1)", &[&self.node_id])
            .map_err(db_error)?
            .get(0);
        if !removed {
            return Err(unknown(&self.node_id));
        }
        ctx.out.status("Removed", format!("node {}", self.node_id));
        ctx.out
            .json(&serde_json::json!({ "node_id": self.node_id, "removed": true }))
    }
}
