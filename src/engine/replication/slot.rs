//! Logical replication slots: created over a replication connection (the walsender command
//! `CREATE_REPLICATION_SLOT`, which alone can export the snapshot the slot starts at), dropped
//! over SQL.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::conn::ConnParams;
use crate::db_error::db_error;
use crate::engine::wire::Wire;
use crate::sql::quote_ident;

/// A slot just created. While `connection` is open and idle, `snapshot` (when exported) can be
/// imported with `SET TRANSACTION SNAPSHOT`; the data it shows ends exactly at
/// `consistent_point`, where the slot's stream begins.
pub struct CreatedSlot {
    pub name: String,
    pub consistent_point: String,
    pub snapshot: Option<String>,
    pub connection: Wire,
}

/// Open a replication connection (`replication=database`) to `params`' database.
pub fn replication_connection(params: &ConnParams) -> Result<Wire> {
    match Wire::connect_replication(params) {
        Ok(Some(w)) => Ok(w),
        Ok(None) => bail!(
            "the replication connection to {} needs GSSAPI, or TLS from a replication job (the \
             CLI speaks TLS, jobs on the server do not): allow password or trust authentication \
             over TLS for this database, or run replication init in client mode",
            params.endpoint()
        ),
        Err(e) => Err(e.context(replication_refused_hint(params))),
    }
}

/// What to do when a replication connection is refused: logical replication connections are
/// matched in pg_hba.conf by database name, not by the `replication` keyword.
fn replication_refused_hint(params: &ConnParams) -> String {
    format!(
        "opening a replication connection to {} (database {}, role {}): if pg_hba.conf refused it, \
         add a line for this database — logical replication connections match the database's name \
         (or all), not the keyword `replication` — and the role needs REPLICATION or superuser",
        params.endpoint(),
        params.get("dbname").unwrap_or("?"),
        params.get("user").unwrap_or("?"),
    )
}

/// Create the logical slot `name` (pgoutput) on `params`' server, exporting its snapshot when
/// `export`.
pub fn create(params: &ConnParams, name: &str, export: bool) -> Result<CreatedSlot> {
    let mut w = replication_connection(params)?;
    let rows = w
        .rows(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{}')",
            quote_ident(name),
            if export { "export" } else { "nothing" }
        ))
        .with_context(|| format!("creating replication slot {name} on {}", params.endpoint()))?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("CREATE_REPLICATION_SLOT returned no row"))?;
    let get = |i: usize| row.get(i).cloned().flatten();
    Ok(CreatedSlot {
        name: name.to_string(),
        consistent_point: get(1).ok_or_else(|| anyhow!("the slot has no consistent point"))?,
        snapshot: if export { get(2) } else { None },
        connection: w,
    })
}

/// The slots of this database whose names match the regular expression `pattern`.
pub fn matching(c: &mut postgres::Client, pattern: &str) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT slot_name::text FROM pg_catalog.pg_replication_slots
              WHERE slot_name ~ $1 AND database = current_database() ORDER BY 1",
        &[&pattern],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Drop the slots of this database whose names match the regular expression `pattern`, waiting
/// (up to 30 s) for a walsender still using one to go; returns the names dropped.
pub fn drop_matching(c: &mut postgres::Client, pattern: &str) -> Result<Vec<String>> {
    let names = matching(c, pattern)?;
    for n in &names {
        drop_one(c, n)?;
    }
    Ok(names)
}

/// Drop one slot. A slot in use by a walsender (its subscriber just dropped, or a replication
/// connection of a killed steep) cannot be dropped: wait for it to be released, then end the
/// walsender that still holds it.
pub fn drop_one(c: &mut postgres::Client, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let active: Option<Option<i32>> = c
            .query_opt(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )?
            .map(|r| r.get(0));
        match active {
            None => return Ok(()),
            Some(None) => {
                match c.execute(
                    "SELECT pg_catalog.pg_drop_replication_slot(slot_name)
                       FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                    &[&name],
                ) {
                    Ok(_) => return Ok(()),
                    // Taken again between the two statements: look again.
                    Err(e) if started.elapsed() < Duration::from_secs(30) => {
                        let _ = e;
                    }
                    Err(e) => {
                        return Err(db_error(e)).with_context(|| format!("dropping slot {name}"))
                    }
                }
            }
            Some(Some(pid)) if started.elapsed() >= Duration::from_secs(5) => {
                c.execute("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])
                    .map_err(db_error)
                    .with_context(|| format!("ending walsender {pid}, which holds slot {name}"))?;
                if started.elapsed() >= Duration::from_secs(30) {
                    bail!("slot {name} is still in use by process {pid}: drop it with pg_drop_replication_slot once it is free");
                }
            }
            Some(Some(_)) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
