//! What every command receives: the output helper and the way to reach the server.

use anyhow::{Context, Result};

use steep::cli::output::Output;
use steep::cli::sandbox;
use steep::conn::{ConnParams, Environment, TARGET_ENV};

/// Where the connection parameters came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnSource {
    /// `-c/--connection` or `STEEP_CONNECTION`.
    Given,
    /// PGSERVICE, PGHOST, PGPORT, ... in the environment.
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
    /// libpq's defaults. Whichever is chosen is completed as libpq would (`ConnParams::resolve`).
    /// The sandbox is only a stand-in for "nothing given": any variable that names a server,
    /// database, role or service means libpq would go there, and so does steep.
    pub fn conn_params(&self) -> Result<(ConnParams, ConnSource)> {
        let env = Environment::of_process();
        let (given, source) = if let Some(s) = &self.connection {
            let p = ConnParams::parse(s)
                .context("reading the connection string (-c/--connection or STEEP_CONNECTION)")?;
            (p, ConnSource::Given)
        } else if TARGET_ENV.iter().any(|k| (env.var)(k).is_some()) {
            (ConnParams::default(), ConnSource::Environment)
        } else if let Some(sb) = sandbox::running_sandbox()? {
            let p = ConnParams::parse(&sb.connection_string("postgres"))?;
            (p, ConnSource::Sandbox(sb.name.clone()))
        } else {
            (ConnParams::default(), ConnSource::Defaults)
        };
        Ok((given.resolve(&env)?, source))
    }

    /// The connection string given with -c/--connection or STEEP_CONNECTION, as written.
    pub fn given_connection(&self) -> Option<&str> {
        self.connection.as_deref()
    }

    /// Connect to the resolved server.
    pub fn connect(&self) -> Result<postgres::Client> {
        Ok(self.open()?.0)
    }

    /// Connect, and return the parameters of the one server that answered (of several hosts,
    /// the one chosen), for work that opens more connections to the same server.
    pub fn open(&self) -> Result<(postgres::Client, ConnParams)> {
        let (params, source) = self.conn_params()?;
        self.out.verbose(format!(
            "connecting with {} ({source:?})",
            params.redacted()
        ));
        steep::cli::client::open(&params).with_context(|| match source {
            ConnSource::Defaults => "no connection given (-c, STEEP_CONNECTION, PG* variables) \
                                     and no local sandbox running: start one with `steep local \
                                     up` or pass -c"
                .to_string(),
            _ => String::from("connecting to PostgreSQL"),
        })
    }

    /// Resolve another server's connection string (`--peer`) exactly as `-c` is resolved.
    pub fn other_params(&self, conninfo: &str, what: &str) -> Result<ConnParams> {
        ConnParams::parse(conninfo)
            .with_context(|| format!("reading {what}"))?
            .resolve(&Environment::of_process())
            .with_context(|| format!("resolving {what}"))
    }
}
