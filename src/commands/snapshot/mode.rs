//! Direct or client mode: which one a command runs in, and why not direct when it is not.

use anyhow::{bail, Result};
use clap::Args;

use crate::context::Ctx;

#[derive(Args)]
pub(super) struct ModeArgs {
    /// Run in a background worker on the server (files on the server).
    #[arg(long, conflicts_with = "client")]
    pub(super) direct: bool,
    /// Run here, over our own connections (files here; works without the extension).
    #[arg(long)]
    client: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    Direct,
    Client,
}

/// Which mode to use, and why not direct when it is not (for the one-line notice).
pub(super) fn resolve_mode(ctx: &Ctx, c: &mut postgres::Client, m: &ModeArgs) -> Result<Mode> {
    if m.client {
        return Ok(Mode::Client);
    }
    let row = c.query_one(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.proname = 'start_snapshot' AND p.pronamespace = to_regnamespace('steep_repl')),
                to_regprocedure('steep_repl.bgworker_available()') IS NOT NULL",
        &[],
    )?;
    let (has_api, has_check): (bool, bool) = (row.get(0), row.get(1));
    let available = has_check
        && c.query_one("SELECT steep_repl.bgworker_available()", &[])?
            .get::<_, bool>(0);
    let why_not = if !has_api {
        "steep_repl 0.2.0 or newer is not installed in this database (run `steep init`)"
    } else if !available {
        "steep_repl's background workers are not running (run `steep init --preload` and restart PostgreSQL)"
    } else {
        ""
    };
    match (m.direct, why_not.is_empty()) {
        (_, true) => Ok(Mode::Direct),
        (true, false) => bail!("--direct is not possible: {why_not}"),
        (false, false) => {
            ctx.out.note(format!("client mode: {why_not}"));
            Ok(Mode::Client)
        }
    }
}
