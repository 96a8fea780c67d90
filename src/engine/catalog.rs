//! What the engine reads from a server's catalog: session settings that make COPY text the same
//! everywhere, the tables and their shapes, sequences, foreign keys, and where the server is.

use anyhow::{Context, Result};

use crate::engine::manifest::Column;
use crate::schema_shape::{self, TableShape};
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

/// Every user table's shape (partitioned ones included), and every user table with data (plain
/// tables and partitions) with the columns COPY carries (generated ones are computed), in name
/// order, from one read of the catalog with the one shape query (`schema_shape`).
pub fn shapes_and_tables(c: &mut postgres::Client) -> Result<(Vec<TableShape>, Vec<TableInfo>)> {
    let all = shapes_with_ids(c)?;
    let tables = all
        .iter()
        .filter(|(t, _, _)| !t.partitioned)
        .map(|(t, oid, size_bytes)| TableInfo {
            oid: *oid,
            columns: t
                .columns
                .iter()
                .filter(|c| !c.is_generated())
                .map(|c| Column {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    not_null: c.not_null,
                })
                .collect(),
            schema: t.schema.clone(),
            name: t.name.clone(),
            primary_key: t.primary_key.clone(),
            size_bytes: *size_bytes,
        })
        .collect();
    Ok((all.into_iter().map(|(t, _, _)| t).collect(), tables))
}

fn shapes_with_ids(c: &mut postgres::Client) -> Result<Vec<(TableShape, i64, i64)>> {
    let rows = c
        .query(&schema_shape::table_shapes_sql(true), &[])
        .context("listing tables")?;
    rows.iter()
        .map(|r| {
            let shape = schema_shape::from_row(
                r.get(0),
                r.get(1),
                r.get(2),
                &r.get::<_, String>(3),
                &r.get::<_, String>(4),
            )?;
            Ok((shape, r.get(5), r.get(6)))
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
