//! `steep demo`: steep end to end on throwaway sandboxes. It grows with each capability; today it
//! starts a sandbox with steep_repl preloaded, shows the versions, and removes it.

use anyhow::{Context, Result};
use clap::Args;

use crate::commands::version::server_versions;
use crate::context::Ctx;
use steep::paths;
use steep::sandbox::{ClusterOptions, PgInstall, TempCluster};

#[derive(Args)]
pub struct DemoArgs {
    /// pg_config of the PostgreSQL to use (default: the PostgreSQL 18 that ./install.sh set up).
    #[arg(long, value_name = "PATH")]
    pg_config: Option<std::path::PathBuf>,
}

impl DemoArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let out = &ctx.out;
        let install = PgInstall::locate(self.pg_config.as_deref())?;
        out.status("Starting", format!("a demo sandbox ({})", install.version));
        let node = TempCluster::start(
            &paths::steep_home().join("demo"),
            install,
            &ClusterOptions::default(),
        )?;
        out.status("Started", format!("on port {}", node.port()));
        let mut client =
            postgres::Client::connect(&node.connection_string("postgres"), postgres::NoTls)
                .context("connecting to the demo sandbox")?;
        let preload: String = client
            .query_one("SHOW shared_preload_libraries", &[])?
            .get(0);
        out.line(format!("shared_preload_libraries = '{preload}'"));
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS steep_repl")
            .context("creating extension steep_repl")?;
        let v = server_versions(&mut client)?;
        out.line(format!(
            "steep {} | PostgreSQL {} | steep_repl installed {} (library {})",
            env!("CARGO_PKG_VERSION"),
            v.server_version,
            v.installed_version.as_deref().unwrap_or("-"),
            v.library_version.as_deref().unwrap_or("-")
        ));
        ctx.out.json(&serde_json::json!({
            "binary": env!("CARGO_PKG_VERSION"),
            "server_version": v.server_version,
            "installed_version": v.installed_version,
            "library_version": v.library_version,
            "shared_preload_libraries": preload,
        }))?;
        drop(client);
        drop(node);
        out.status("Removed", "the demo sandbox");
        Ok(())
    }
}
