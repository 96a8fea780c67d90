//! `steep init`: bring a server to the extension version this binary embeds, offer preloading,
//! register this node. Idempotent: a second run changes nothing and says so.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::context::Ctx;
use steep::cli::embedded::{self, EXTENSION};
use steep::cli::lifecycle::{self, version_cmp, ServerState};
use steep::cli::sandbox::parse_major;
use steep::sql::quote_literal;

#[derive(Args)]
pub struct InitArgs {
    /// Add steep_repl to shared_preload_libraries (ALTER SYSTEM) without asking.
    #[arg(long, conflicts_with = "no_preload")]
    preload: bool,
    /// Leave shared_preload_libraries alone.
    #[arg(long)]
    no_preload: bool,
    /// Answer yes to every question (for scripts).
    #[arg(short = 'y', long)]
    yes: bool,
    /// This node's id (default: the one registered before, else cluster_name, else
    /// node-<system identifier>).
    #[arg(long)]
    node_id: Option<String>,
    /// This node's display name (default: host:port as steep connected).
    #[arg(long)]
    node_name: Option<String>,
    /// The host peers use to reach this node (default: the host steep connected to, if TCP).
    #[arg(long)]
    node_host: Option<String>,
    /// The port peers use to reach this node (default: the port steep connected to).
    #[arg(long)]
    node_port: Option<i32>,
    /// Priority 1..100 (default: kept, else 50).
    #[arg(long)]
    priority: Option<i32>,
    /// Directory of the steep_repl package to install from when the server lacks the extension
    /// files (default: $STEEP_HOME/packages/pg<major>, written by ./install.sh).
    #[arg(long, value_name = "DIR")]
    package: Option<PathBuf>,
    /// Grant ROLE what it needs to use steep without superuser (repeatable).
    #[arg(long, value_name = "ROLE")]
    grant: Vec<String>,
    /// Recreate the extension's objects (after someone changed or dropped them), keeping the
    /// rows of its tables: DROP and CREATE EXTENSION in one transaction.
    #[arg(long)]
    repair: bool,
}

#[derive(Serialize)]
struct InitReport {
    endpoint: String,
    server_version: String,
    extension_version: Option<String>,
    node_id: Option<String>,
    preload: &'static str,
    restart_required: bool,
    changes: Vec<String>,
}

impl InitArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let out = &ctx.out;
        let (mut client, params) = ctx.open()?;
        let endpoint = params.endpoint();
        let mut state = lifecycle::inspect(&mut client)?;
        out.status(
            "Checking",
            format!(
                "PostgreSQL {} at {endpoint}, database {} as {}",
                state.server_version, state.database, state.user
            ),
        );
        if state.server_version_num < lifecycle::MIN_SERVER_VERSION_NUM {
            bail!(
                "PostgreSQL {} is not supported: steep needs PostgreSQL 15 or newer",
                state.server_version
            );
        }
        let target = embedded::embedded().default_version;
        let mut changes = Vec::new();

        // 1. The extension at the embedded version.
        match state.installed.clone() {
            None => {
                self.ensure_files(ctx, &mut client, &state, &target, params.get("host"))?;
                client
                    .batch_execute(&format!(
                        "CREATE EXTENSION {EXTENSION} VERSION {}",
                        quote_literal(&target)
                    ))
                    .with_context(|| format!("creating extension {EXTENSION} {target}"))?;
                out.status("Created", format!("extension {EXTENSION} {target}"));
                changes.push(format!("created extension {EXTENSION} {target}"));
            }
            Some(v) if version_cmp(&v, &target).is_lt() => {
                self.ensure_files(ctx, &mut client, &state, &target, params.get("host"))?;
                client
                    .batch_execute(&format!(
                        "ALTER EXTENSION {EXTENSION} UPDATE TO {}",
                        quote_literal(&target)
                    ))
                    .with_context(|| format!("upgrading extension {EXTENSION} {v} to {target}"))?;
                out.status("Upgraded", format!("extension {EXTENSION} {v} -> {target}"));
                changes.push(format!("upgraded extension {EXTENSION} {v} -> {target}"));
            }
            Some(v) if version_cmp(&v, &target).is_gt() => {
                out.warn(format!(
                    "the server has {EXTENSION} {v}, newer than this steep ({target}): upgrade \
                     steep; the extension is left as it is"
                ));
            }
            Some(_) => {}
        }
        if self.repair && state.installed.is_some() {
            let v = state.installed.clone().unwrap_or_else(|| target.clone());
            let rows = lifecycle::reinstall(&mut client, &v)?;
            out.status(
                "Repaired",
                format!("reinstalled {EXTENSION} {v}, keeping {rows} rows of its tables"),
            );
            changes.push(format!("reinstalled {EXTENSION} {v}"));
        }
        state = lifecycle::inspect(&mut client)?;

        // 2. shared_preload_libraries.
        let mut restart_required = state.preload_pending();
        let preload = if state.preload_active() {
            "active"
        } else if state.preload_pending() {
            out.note("steep_repl is in shared_preload_libraries; restart PostgreSQL to load it");
            "pending_restart"
        } else if self.want_preload(ctx)? {
            let current = state
                .configured_preload
                .clone()
                .or_else(|| state.shared_preload_libraries.clone())
                .unwrap_or_default();
            let stmt = lifecycle::preload_statement(&current);
            client.batch_execute(&stmt).with_context(|| {
                format!(
                    "adding steep_repl to shared_preload_libraries (needs superuser or GRANT \
                     ALTER SYSTEM); run as a superuser: {stmt}"
                )
            })?;
            out.status(
                "Preloading",
                "steep_repl (ALTER SYSTEM): restart PostgreSQL to load it",
            );
            changes.push("added steep_repl to shared_preload_libraries".into());
            restart_required = true;
            "pending_restart"
        } else {
            "not_configured"
        };

        // 3. This node.
        let node_id = match state.installed {
            Some(_) => Some(self.register(ctx, &mut client, &params, &mut changes)?),
            None => None,
        };

        // 4. Roles that use steep without superuser.
        for role in &self.grant {
            if lifecycle::has_grants(&mut client, role)? {
                continue;
            }
            for stmt in lifecycle::grant_statements(role) {
                client
                    .batch_execute(&stmt)
                    .with_context(|| format!("granting role {role:?}: {stmt}"))?;
            }
            out.status("Granted", format!("role {role:?} the use of steep_repl"));
            changes.push(format!("granted role {role:?} the use of steep_repl"));
        }

        let report = InitReport {
            endpoint: endpoint.clone(),
            server_version: state.server_version.clone(),
            extension_version: state.installed.clone(),
            node_id: node_id.clone(),
            preload,
            restart_required,
            changes,
        };
        out.json(&report)?;
        let node = node_id.map(|n| format!(", node {n}")).unwrap_or_default();
        if report.changes.is_empty() {
            out.status(
                "Unchanged",
                format!(
                    "{EXTENSION} {} is already initialized on {endpoint}{node}: nothing changed",
                    report.extension_version.as_deref().unwrap_or("-")
                ),
            );
        } else {
            out.status("Initialized", format!("{endpoint}{node}"));
        }
        if preload == "not_configured" {
            out.note(
                "steep_repl is not preloaded: background operations need it. Run `steep init \
                 --preload` and restart PostgreSQL",
            );
        }
        if restart_required {
            out.note("restart PostgreSQL to load steep_repl (e.g. pg_ctl restart, systemctl restart postgresql)");
        }
        Ok(())
    }

    /// Make the target version installable on the server, copying the package's files when the
    /// server is on this machine.
    fn ensure_files(
        &self,
        ctx: &Ctx,
        client: &mut postgres::Client,
        state: &ServerState,
        target: &str,
        host: Option<&str>,
    ) -> Result<()> {
        if state.available(target) {
            return Ok(());
        }
        let major = parse_major(&format!("PostgreSQL {}", state.server_version))?;
        let pkg_dir = lifecycle::package_dir(major, self.package.as_deref());
        let remote_help = format!(
            "install steep_repl {target} for PostgreSQL {major} on that server: copy lib/steep_repl.so \
             into the directory `pg_config --pkglibdir` prints and extension/* into \
             `pg_config --sharedir`/extension (files from {} built by ./install.sh or \
             scripts/install-extension.sh --pg {major}), then rerun steep init",
            pkg_dir.display()
        );
        if !lifecycle::is_local(host) {
            bail!("{EXTENSION} {target} is not installed on the server; {remote_help}");
        }
        let pkg = lifecycle::open_package(&pkg_dir)?;
        if pkg.version != target || pkg.pg_major != major {
            bail!(
                "the package at {} is {EXTENSION} {} for PostgreSQL {}, but this server needs {target} \
                 for PostgreSQL {major}: rebuild it with scripts/install-extension.sh --pg {major}",
                pkg_dir.display(),
                pkg.version,
                pkg.pg_major
            );
        }
        let (libdir, sharedir) = lifecycle::server_dirs(client)
            .with_context(|| format!("{EXTENSION} {target} is not installed on the server"))?;
        if !libdir.is_dir() {
            bail!(
                "{EXTENSION} {target} is not installed on the server, and its library directory \
                 {} is not on this machine; {remote_help}",
                libdir.display()
            );
        }
        let written = lifecycle::install_package(&pkg, &libdir, &sharedir)?;
        ctx.out.status(
            "Installed",
            format!(
                "{EXTENSION} {target} files into {} and {}/extension ({} files)",
                libdir.display(),
                sharedir.display(),
                written.len()
            ),
        );
        Ok(())
    }

    fn want_preload(&self, ctx: &Ctx) -> Result<bool> {
        if self.no_preload {
            return Ok(false);
        }
        if self.preload || self.yes {
            return Ok(true);
        }
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            ctx.out.note(
                "not changing shared_preload_libraries without a terminal to ask on: pass \
                 --preload (or --yes) to add steep_repl, --no-preload to silence this",
            );
            return Ok(false);
        }
        dialoguer::Confirm::new()
            .with_prompt(
                "Add steep_repl to shared_preload_libraries (ALTER SYSTEM)? PostgreSQL must be \
                 restarted afterwards",
            )
            .default(true)
            .interact()
            .context("asking whether to preload steep_repl")
    }

    /// Register (or update) this node and record it as the local node. Returns its id.
    fn register(
        &self,
        ctx: &Ctx,
        client: &mut postgres::Client,
        params: &steep::conn::ConnParams,
        changes: &mut Vec<String>,
    ) -> Result<String> {
        let local: Option<String> = client
            .query_one("SELECT steep_repl.local_node_id()", &[])?
            .get(0);
        let node_id = match (&self.node_id, &local) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => client
                .query_one(
                    "SELECT coalesce(nullif(current_setting('cluster_name'), ''),
                                     'node-' || (SELECT system_identifier FROM pg_control_system()))",
                    &[],
                )?
                .get(0),
        };
        let existing = client.query_opt(
            "SELECT node_name, host, port, priority FROM steep_repl.nodes WHERE node_id = $1",
            &[&node_id],
        )?;
        let conn_host = params
            .get("host")
            .filter(|h| !h.starts_with('/'))
            .map(str::to_string);
        let conn_port: i32 = params
            .get("port")
            .and_then(|p| p.split(',').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(5432);
        let (old_name, old_host, old_port, old_priority) = match &existing {
            Some(r) => (
                Some(r.get::<_, String>(0)),
                r.get::<_, Option<String>>(1),
                Some(r.get::<_, i32>(2)),
                Some(r.get::<_, i32>(3)),
            ),
            None => (None, None, None, None),
        };
        let name = self
            .node_name
            .clone()
            .or(old_name.clone())
            .unwrap_or_else(|| params.endpoint());
        let host = self.node_host.clone().or(if existing.is_some() {
            old_host.clone()
        } else {
            conn_host
        });
        let port = self.node_port.or(old_port).unwrap_or(conn_port);
        let priority = self.priority.or(old_priority).unwrap_or(50);
        let unchanged = existing.is_some()
            && old_name.as_deref() == Some(name.as_str())
            && old_host == host
            && old_port == Some(port)
            && old_priority == Some(priority);
        if !unchanged {
            client
                .execute(
                    "SELECT steep_repl.register_node($1, $2, $3, $4, $5)",
                    &[&node_id, &name, &host, &port, &priority],
                )
                .with_context(|| format!("registering node {node_id:?}"))?;
            let verb = if existing.is_some() {
                "Updated"
            } else {
                "Registered"
            };
            ctx.out.status(verb, format!("node {node_id} ({name})"));
            changes.push(format!("{} node {node_id}", verb.to_lowercase()));
        }
        if local.as_deref() != Some(node_id.as_str()) {
            client.execute("SELECT steep_repl.set_local_node($1)", &[&node_id])?;
            changes.push(format!("set the local node to {node_id}"));
        }
        Ok(node_id)
    }
}
