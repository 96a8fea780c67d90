//! What the engine reads from a server's catalog: session settings that make COPY text the same
//! everywhere, the tables and their shapes, sequences, foreign keys, and where the server is.

use anyhow::{Context, Result};

use crate::engine::manifest::Column;
use crate::sql::qualified;

/// Applied on every engine connection, so COPY text does not depend on the server's or the
/// role's defaults (a snapshot made in either mode has the same bytes), and a table hidden
/// behind row security fails loudly instead of being copied in part.
pub const SESSION_SETTINGS: &str =
    "SET client_encoding = 'UTF8'; SET standard_conforming_strings = on;
    SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC';
    SET extra_float_digits = 1; SET bytea_output = 'hex';
    SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;
    SET row_security = off; SET search_path = pg_catalog, pg_temp";

pub fn prepare_session(c: &mut postgres::Client) -> Result<()> {
    c.batch_execute(SESSION_SETTINGS)
        .context("preparing the session for COPY")
}

/// A table with data (plain tables and leaf partitions).
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: i64,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub size_bytes: i64,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// The pg_class `c` / pg_namespace `n` rows that are the user's: not in a system schema, not
/// steep_repl's, not an extension's.
pub const USER_RELATION: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'steep_repl')
      AND n.nspname !~ '^pg_(toast|temp_)'
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                        AND d.objid = c.oid AND d.deptype = 'e')";

const USER_TABLES: &str = "
    SELECT c.oid::int8, n.nspname::text, c.relname::text, pg_relation_size(c.oid)::int8,
           (SELECT coalesce(json_agg(json_build_object(
                       'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                       'not_null', a.attnotnull) ORDER BY a.attnum), '[]')
            FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attgenerated = '')::text,
           (SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
            FROM pg_constraint con
            CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
            WHERE con.conrelid = c.oid AND con.contype = 'p')::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND {user}
    ORDER BY n.nspname, c.relname";

/// Every user table with data, in name order.
pub fn tables(c: &mut postgres::Client) -> Result<Vec<TableInfo>> {
    let sql = USER_TABLES.replace("{user}", USER_RELATION);
    let rows = c.query(&sql, &[]).context("listing tables")?;
    rows.iter()
        .map(|r| {
            Ok(TableInfo {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                size_bytes: r.get(3),
                columns: serde_json::from_str(&r.get::<_, String>(4))?,
                primary_key: serde_json::from_str(&r.get::<_, String>(5))?,
            })
        })
        .collect()
}

/// Sequences in user schemas (identity and serial ones included), as (schema, name).
pub fn sequences(c: &mut postgres::Client) -> Result<Vec<(String, String)>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'S' AND {USER_RELATION}
         ORDER BY 1, 2"
    );
    Ok(c.query(&sql, &[])
        .context("listing sequences")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// A foreign key between two tables of interest (by oid).
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub child: i64,
    pub parent: i64,
    pub name: String,
    pub deferrable: bool,
    pub definition: String,
}

pub fn foreign_keys(c: &mut postgres::Client) -> Result<Vec<ForeignKey>> {
    Ok(c.query(
        "SELECT conrelid::int8, confrelid::int8, conname::text, condeferrable,
                pg_get_constraintdef(oid)
         FROM pg_constraint WHERE contype = 'f'",
        &[],
    )
    .context("reading foreign keys")?
    .iter()
    .map(|r| ForeignKey {
        child: r.get(0),
        parent: r.get(1),
        name: r.get(2),
        deferrable: r.get(3),
        definition: r.get(4),
    })
    .collect())
}

/// Where a snapshot comes from.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub server_version: String,
    pub server_version_num: i32,
    pub system_identifier: String,
    pub database: String,
    pub lsn: String,
    pub node_id: Option<String>,
}

pub fn server_info(c: &mut postgres::Client) -> Result<ServerInfo> {
    let r = c
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    (SELECT system_identifier::text FROM pg_control_system()),
                    current_database()::text,
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                          ELSE pg_current_wal_lsn() END)::text,
                    to_regprocedure('steep_repl.local_node_id()') IS NOT NULL",
            &[],
        )
        .context("reading the server's identity")?;
    let node_id = if r.get::<_, bool>(5) {
        c.query_one("SELECT steep_repl.local_node_id()", &[])
            .ok()
            .and_then(|r| r.get(0))
    } else {
        None
    };
    Ok(ServerInfo {
        server_version: r.get(0),
        server_version_num: r.get(1),
        system_identifier: r.get(2),
        database: r.get(3),
        lsn: r.get(4),
        node_id,
    })
}
