//! `steep version`: this binary, the extension SQL it embeds, and (when a server is reachable)
//! the server's steep_repl library and installed version.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::context::{ConnSource, Ctx};
use steep::cli::embedded::{self, Embedded, EXTENSION};

#[derive(Args)]
pub struct VersionArgs {}

#[derive(Serialize)]
struct VersionReport {
    binary: &'static str,
    embedded: Embedded,
    server: Option<ServerVersions>,
}

#[derive(Serialize)]
pub struct ServerVersions {
    pub server_version: String,
    /// Who and where the session is: `current_user`, `current_database()` and the server's port
    /// (its `port` setting, which a Unix-socket session reports too).
    pub user: String,
    pub database: String,
    pub port: i32,
    /// `default_version` of the control file on the server, if the extension is available there.
    pub available_version: Option<String>,
    /// `pg_extension.extversion`, if created in the connected database.
    pub installed_version: Option<String>,
    /// `steep_repl.version()`: the loaded shared library's version.
    pub library_version: Option<String>,
}

/// Read the server's view of steep_repl.
pub fn server_versions(client: &mut postgres::Client) -> Result<ServerVersions> {
    let row = client.query_one(
        "SELECT current_setting('server_version'),
                (SELECT default_version FROM pg_available_extensions WHERE name = $1),
                (SELECT extversion FROM pg_extension WHERE extname = $1),
                current_user::text, current_database()::text, current_setting('port')::int",
        &[&EXTENSION],
    )?;
    let installed: Option<String> = row.get(2);
    let library_version = if installed.is_some() {
        client
            .query_one("SELECT steep_repl.version()", &[])
            .ok()
            .map(|r| r.get(0))
    } else {
        None
    };
    Ok(ServerVersions {
        server_version: row.get(0),
        user: row.get(3),
        database: row.get(4),
        port: row.get(5),
        available_version: row.get(1),
        installed_version: installed,
        library_version,
    })
}

impl VersionArgs {
    pub fn execute(&self, ctx: &Ctx) -> Result<()> {
        let embedded = embedded::embedded();
        let (_, source) = ctx.conn_params()?;
        // Only look at a server the user pointed at (or a running sandbox); libpq's defaults are
        // a guess, and a failure there should not make `steep version` fail.
        let server = if source == ConnSource::Defaults {
            None
        } else {
            match ctx.connect() {
                Ok(mut c) => Some(server_versions(&mut c)?),
                Err(e) if source == ConnSource::Given => return Err(e),
                Err(e) => {
                    ctx.out.warn(format!("server versions unavailable: {e:#}"));
                    None
                }
            }
        };
        let report = VersionReport {
            binary: env!("CARGO_PKG_VERSION"),
            embedded,
            server,
        };
        ctx.out.json(&report)?;
        ctx.out.line(format!("steep {}", report.binary));
        ctx.out.line(format!(
            "embedded steep_repl: {} (install scripts: {}; upgrades: {})",
            report.embedded.default_version,
            report.embedded.versions.join(", "),
            if report.embedded.upgrades.is_empty() {
                "none".to_string()
            } else {
                report
                    .embedded
                    .upgrades
                    .iter()
                    .map(|(f, t)| format!("{f}->{t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        if let Some(s) = &report.server {
            let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            ctx.out.line(format!(
                "server: PostgreSQL {} on port {}, database {} as {}; steep_repl available {}, \
                 installed {}, library {}",
                s.server_version,
                s.port,
                s.database,
                s.user,
                or_none(&s.available_version),
                or_none(&s.installed_version),
                or_none(&s.library_version)
            ));
        }
        Ok(())
    }
}
