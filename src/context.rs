//! What every command receives: the output helper and the way to reach the server.

use anyhow::{Context, Result};

use steep::conn::{ConnParams, TARGET_ENV};
use steep::output::Output;
use steep::sandbox;

/// Where the connection parameters came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnSource {
    /// `-c/--connection` or `STEEP_CONNECTION`.
    Given,
    /// PGHOST, PGPORT, ... in the environment.
    Environment,
    /// The running `steep local` sandbox of this name.
    Sandbox(String),
    /// Nothing given: libpq's defaults.
    Defaults,
}

pub struct Ctx {
    pub out: Output,
    connection: Option<String>,
}

impl Ctx {
    pub fn new(out: Output, connection: Option<String>) -> Self {
        Self { out, connection }
    }

    /// Resolve the connection in steep's documented order: `-c`, else `STEEP_CONNECTION` (both arrive
    /// here through clap), else the libpq environment, else the running local sandbox, else
    /// libpq's defaults. PG* variables fill whatever the chosen string leaves unset.
    pub fn conn_params(&self) -> Result<(ConnParams, ConnSource)> {
        let env = |k: &str| std::env::var(k).ok();
        let (mut params, source) = if let Some(s) = &self.connection {
            let p = ConnParams::parse(s)
                .context("reading the connection string (-c/--connection or STEEP_CONNECTION)")?;
            (p, ConnSource::Given)
        } else if TARGET_ENV
            .iter()
            .any(|k| env(k).is_some_and(|v| !v.is_empty()))
        {
            (ConnParams::default(), ConnSource::Environment)
        } else if let Some(sb) = sandbox::running_sandbox()? {
            let p = ConnParams::parse(&sb.connection_string("postgres"))?;
            (p, ConnSource::Sandbox(sb.name.clone()))
        } else {
            (ConnParams::default(), ConnSource::Defaults)
        };
        params.apply_env(&env);
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten();
        let os_user = user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_else(|| "postgres".into());
        let home = std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| user.map(|u| u.dir));
        params.apply_defaults(&os_user, home.as_deref())?;
        Ok((params, source))
    }

    /// Connect to the resolved server.
    pub fn connect(&self) -> Result<postgres::Client> {
        let (params, source) = self.conn_params()?;
        self.out.verbose(format!(
            "connecting with {} ({source:?})",
            params.redacted()
        ));
        steep::client::connect(&params).with_context(|| match source {
            ConnSource::Defaults => "no connection given (-c, STEEP_CONNECTION, PG* variables) \
                                     and no local sandbox running: start one with `steep local \
                                     up` or pass -c"
                .to_string(),
            _ => String::from("connecting to PostgreSQL"),
        })
    }
}
