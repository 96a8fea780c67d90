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
    // server log and pg_stat_statements (a superuser's session may; each setting on its own,
    // since pg_stat_statements may not be loaded).
    for setting in [
        "SET log_statement = 'none'",
        "SET log_min_error_statement = 'panic'",
        "SET log_min_duration_statement = -1",
        "SET pg_stat_statements.track_utility = off",
    ] {
        let _ = c.batch_execute(setting);
    }
    let origin = if s.origin_none { ", origin = none" } else { "" };
    // Created, advanced and enabled in one transaction (allowed without create_slot): a process
    // killed in between leaves no disabled subscription behind.
    let mut tx = c.transaction()?;
    tx.batch_execute(&format!(
        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (create_slot = false, \
         slot_name = {}, copy_data = false, enabled = false{origin})",
        quote_ident(s.name),
        quote_literal(s.conninfo),
        quote_ident(s.publication),
        quote_literal(s.slot),
    ))
    .map_err(db_error)
    .with_context(|| format!("creating subscription {}", s.name))?;
    tx.execute(
        "SELECT pg_catalog.pg_replication_origin_advance('pg_' || s.oid, $2::text::pg_lsn)
           FROM pg_catalog.pg_subscription s
          WHERE s.subname = $1
            AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
        &[&s.name, &s.consistent_point],
    )
    .map_err(db_error)
    .with_context(|| format!("advancing subscription {}'s origin to {}", s.name, s.consistent_point))?;
    tx.batch_execute(&format!(
        "ALTER SUBSCRIPTION {} ENABLE",
        quote_ident(s.name)
    ))
    .map_err(db_error)
    .with_context(|| format!("enabling subscription {}", s.name))?;
    tx.commit().map_err(db_error)?;
    let _ = c.batch_execute(
        "RESET log_statement; RESET log_min_error_statement; RESET log_min_duration_statement",
    );
    let _ = c.batch_execute("RESET pg_stat_statements.track_utility");
    Ok(())
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

fn subscriptions(c: &mut postgres::Client, setup: &str) -> Result<Vec<String>> {
    Ok(c
        .query(
            "SELECT subname::text FROM pg_catalog.pg_subscription
              WHERE subname ~ $1
                AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
              ORDER BY 1",
            &[&names::name_regex(setup)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// What removing a setup did: what went, in words, and what could not be removed.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<String>,
    pub failed: Vec<String>,
}

/// Remove everything the setup made on these nodes (`(connection, label)`): first every
/// subscription on every node (so no walsender holds a slot), then on each node its slots,
/// publication, marker rows and key scheme (the sequences' increments restored). Goes on past a
/// failure and reports it.
pub fn remove_setup(nodes: &mut [(&mut postgres::Client, &str)], setup: &str) -> Removal {
    let mut out = Removal::default();
    for (c, node) in nodes.iter_mut() {
        let found = match subscriptions(c, setup) {
            Ok(s) => s,
            Err(e) => {
                out.failed
                    .push(format!("listing subscriptions on {node}: {e:#}"));
                continue;
            }
        };
        for s in found {
            match drop_subscription(c, &s) {
                Ok(()) => out.removed.push(format!("subscription {s} on {node}")),
                Err(e) => out.failed.push(format!("{e:#} on {node}")),
            }
        }
    }
    for (c, node) in nodes.iter_mut() {
        match slot::drop_matching(c, &names::name_regex(setup)) {
            Ok(slots) => out
                .removed
                .extend(slots.into_iter().map(|s| format!("slot {s} on {node}"))),
            Err(e) => out.failed.push(format!("{e:#} on {node}")),
        }
        let publication = names::publication(setup);
        let dropped = c
            .query_opt(
                "SELECT FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&publication],
            )
            .map_err(db_error)
            .and_then(|has| {
                if has.is_some() {
                    c.batch_execute(&format!("DROP PUBLICATION {}", quote_ident(&publication)))
                        .map_err(db_error)?;
                }
                Ok(has.is_some())
            });
        match dropped {
            Ok(true) => out
                .removed
                .push(format!("publication {publication} on {node}")),
            Ok(false) => {}
            Err(e) => out.failed.push(format!(
                "dropping publication {publication} on {node}: {e:#}"
            )),
        }
        match keys::undo(c, setup) {
            Ok(seqs) => out.removed.extend(
                seqs.into_iter()
                    .map(|s| format!("key scheme of {s} on {node} (increment restored)")),
            ),
            Err(e) => out.failed.push(format!("{e:#} on {node}")),
        }
        if let Err(e) = c.execute(
            "DELETE FROM steep_repl.replication_markers WHERE setup_name = $1",
            &[&setup],
        ) {
            out.failed
                .push(format!("removing marker rows on {node}: {}", db_error(e)));
        }
    }
    out
}

/// What of a setup exists on this node: its slots, its subscriptions (with whether each is
/// enabled), its publication, and whether an init got as far as its marker rows.
#[derive(Debug, Clone, Default)]
pub struct Present {
    pub slots: Vec<String>,
    pub subscriptions: Vec<(String, bool)>,
    pub publication: bool,
    pub markers: bool,
}

impl Present {
    pub fn anything(&self) -> bool {
        !self.slots.is_empty() || !self.subscriptions.is_empty() || self.publication
    }
}

pub fn present(c: &mut postgres::Client, setup: &str) -> Result<Present> {
    let pattern = names::name_regex(setup);
    let slots = slot::matching(c, &pattern)?;
    let subscriptions = c
        .query(
            "SELECT subname::text, subenabled FROM pg_catalog.pg_subscription
              WHERE subname ~ $1
                AND subdbid = (SELECT oid FROM pg_catalog.pg_database
                                WHERE datname = current_database())
              ORDER BY 1",
            &[&pattern],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let r = c.query_one(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = $1),
                EXISTS (SELECT FROM steep_repl.replication_markers WHERE setup_name = $2)",
        &[&names::publication(setup), &setup],
    )?;
    Ok(Present {
        slots,
        subscriptions,
        publication: r.get(0),
        markers: r.get(1),
    })
}
