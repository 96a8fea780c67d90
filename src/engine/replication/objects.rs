//! Publications and subscriptions of a setup, and removing everything a setup made on a node.

use anyhow::{Context, Result};

use super::{keys, names, slot};
use crate::db_error::db_error;
use crate::sql::{quote_ident, quote_literal};

/// The marker table every setup publishes besides the user's tables.
pub const MARKERS: &str = "steep_repl.replication_markers";

/// Create the setup's publication on this node for `tables` (quoted qualified names) and the
/// marker table.
pub fn create_publication(c: &mut postgres::Client, setup: &str, tables: &[String]) -> Result<()> {
    let mut list: Vec<String> = tables.to_vec();
    list.push(MARKERS.to_string());
    c.batch_execute(&format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        quote_ident(&names::publication(setup)),
        list.join(", ")
    ))
    .map_err(db_error)
    .context("creating the publication")
}

/// What a subscription is made from.
pub struct SubscriptionSpec<'a> {
    pub name: &'a str,
    /// How this node's server reaches the publisher (stored by PostgreSQL in pg_subscription).
    pub conninfo: &'a str,
    pub publication: &'a str,
    pub slot: &'a str,
    /// Where the slot's stream begins: the data here already holds everything before it.
    pub consistent_point: &'a str,
    /// Subscribe with `origin = none` (PostgreSQL 16+): changes this node received from
    /// elsewhere are not sent back.
    pub origin_none: bool,
}

/// Create a subscription that takes the publisher's changes from the slot's consistent point
/// on: created disabled on the existing slot without copying, its origin advanced to the
/// consistent point, then enabled. Nothing before the consistent point is applied (the copy
/// holds it) and nothing after it is missed (the slot kept it).
pub fn create_subscription(c: &mut postgres::Client, s: &SubscriptionSpec) -> Result<()> {
    // The statement holds the connection string, perhaps with a password: keep it out of the
    // server log (a superuser's session may; otherwise the server's settings decide).
    let _ = c.batch_execute(
        "SET log_statement = 'none'; SET log_min_error_statement = 'panic';
         SET log_min_duration_statement = -1",
    );
    let origin = if s.origin_none { ", origin = none" } else { "" };
    c.batch_execute(&format!(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false, \
         slot_name = {}, copy_data = false, enabled = false{origin})",
        quote_ident(s.name),
        quote_literal(s.conninfo),
        quote_ident(s.publication),
        quote_literal(s.slot),
    ))
    .map_err(db_error)
    .with_context(|| format!("creating subscription {}", s.name))?;
    let _ = c.batch_execute(
        "RESET log_statement; RESET log_min_error_statement; RESET log_min_duration_statement",
    );
    c.execute(
        "SELECT pg_catalog.pg_replication_origin_advance('pg_' || s.oid, $2::text::pg_lsn)
           FROM pg_catalog.pg_subscription s
          WHERE s.subname = $1
            AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
        &[&s.name, &s.consistent_point],
    )
    .map_err(db_error)
    .with_context(|| format!("advancing subscription {}'s origin to {}", s.name, s.consistent_point))?;
    c.batch_execute(&format!(
        "ALTER SUBSCRIPTION {} ENABLE",
        quote_ident(s.name)
    ))
    .map_err(db_error)
    .with_context(|| format!("enabling subscription {}", s.name))
}

/// Drop one subscription without touching the publisher's slot (steep drops slots itself, on
/// the publisher's own connection): disabled, detached from its slot, dropped.
fn drop_subscription(c: &mut postgres::Client, name: &str) -> Result<()> {
    let n = quote_ident(name);
    c.batch_execute(&format!(
        "ALTER SUBSCRIPTION {n} DISABLE; ALTER SUBSCRIPTION {n} SET (slot_name = NONE); \
         DROP SUBSCRIPTION {n}"
    ))
    .map_err(db_error)
    .with_context(|| format!("dropping subscription {name}"))
}

/// Remove everything the setup made on this node: its subscriptions, slots, publication, marker
/// rows and key scheme (the sequences' increments restored). Returns what was removed, in words.
pub fn remove_setup(c: &mut postgres::Client, setup: &str, node: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let like = names::like_pattern(setup);
    let subs: Vec<String> = c
        .query(
            "SELECT subname::text FROM pg_catalog.pg_subscription
              WHERE subname LIKE $1
                AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
              ORDER BY 1",
            &[&like],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in subs {
        drop_subscription(c, &s)?;
        removed.push(format!("subscription {s} on {node}"));
    }
    for s in slot::drop_matching(c, &like)? {
        removed.push(format!("slot {s} on {node}"));
    }
    let publication = names::publication(setup);
    let has_pub = c
        .query_opt(
            "SELECT FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )?
        .is_some();
    if has_pub {
        c.batch_execute(&format!("DROP PUBLICATION {}", quote_ident(&publication)))
            .map_err(db_error)
            .context("dropping the publication")?;
        removed.push(format!("publication {publication} on {node}"));
    }
    for s in keys::undo(c, setup)? {
        removed.push(format!("key scheme of {s} on {node} (increment restored)"));
    }
    c.execute(
        "DELETE FROM steep_repl.replication_markers WHERE setup_name = $1",
        &[&setup],
    )
    .map_err(db_error)?;
    Ok(removed)
}

/// What of a setup exists on this node: (subscriptions enabled, subscriptions, slots,
/// publication).
pub fn present(c: &mut postgres::Client, setup: &str) -> Result<(i64, i64, i64, bool)> {
    let like = names::like_pattern(setup);
    let r = c.query_one(
        "SELECT (SELECT count(*) FILTER (WHERE subenabled) FROM pg_catalog.pg_subscription
                  WHERE subname LIKE $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database
                                                        WHERE datname = current_database())),
                (SELECT count(*) FROM pg_catalog.pg_subscription
                  WHERE subname LIKE $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database
                                                        WHERE datname = current_database())),
                (SELECT count(*) FROM pg_catalog.pg_replication_slots
                  WHERE slot_name LIKE $1 AND database = current_database()),
                EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $2)",
        &[&like, &names::publication(setup)],
    )?;
    Ok((r.get(0), r.get(1), r.get(2), r.get(3)))
}
