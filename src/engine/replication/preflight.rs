//! What must hold on a node before replication init changes anything, each failure with its
//! fix. `steep doctor` shows the same findings.

use anyhow::Result;
use serde::Serialize;

use super::names::NodeIdentity;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub problem: String,
    pub fix: String,
}

fn finding(problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// A node's role in a setup: it publishes (others subscribe to it), subscribes, or both.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub publishes: bool,
    pub subscribes: bool,
}

/// The server settings and the role's rights replication init needs on this node.
pub fn check(c: &mut postgres::Client, node: &NodeIdentity, role: Role) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    // pg_create_subscription exists from 16 on (pg_has_role fails on a role that does not).
    let r = c.query_one(
        "SELECT current_setting('wal_level'),
                current_setting('max_replication_slots')::int,
                (SELECT count(*)::int FROM pg_catalog.pg_replication_slots),
                current_setting('max_wal_senders')::int,
                (SELECT count(*)::int FROM pg_catalog.pg_stat_replication),
                current_setting('max_logical_replication_workers')::int,
                (SELECT count(*)::int FROM pg_catalog.pg_stat_subscription WHERE pid IS NOT NULL),
                coalesce(current_setting('max_active_replication_origins', true),
                         current_setting('max_replication_slots'))::int,
                (SELECT count(*)::int FROM pg_catalog.pg_replication_origin),
                (SELECT rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user),
                CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles
                                   WHERE rolname = 'pg_create_subscription')
                     THEN pg_catalog.pg_has_role(current_user, 'pg_create_subscription', 'USAGE')
                     ELSE false END,
                pg_catalog.has_function_privilege(
                    'pg_catalog.pg_replication_origin_advance(text, pg_lsn)', 'EXECUTE'),
                pg_catalog.has_database_privilege(current_database(), 'CREATE')",
        &[],
    )?;
    let wal_level: String = r.get(0);
    let (slots_max, slots_used): (i32, i32) = (r.get(1), r.get(2));
    let (senders_max, senders_used): (i32, i32) = (r.get(3), r.get(4));
    let (workers_max, workers_used): (i32, i32) = (r.get(5), r.get(6));
    let (origins_max, origins_used): (i32, i32) = (r.get(7), r.get(8));
    let (replication, create_subscription, advance, create_db): (bool, bool, bool, bool) =
        (r.get(9), r.get(10), r.get(11), r.get(12));
    if role.publishes {
        if wal_level != "logical" {
            out.push(finding(
                format!("wal_level is {wal_level}, logical replication needs logical"),
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
            ));
        }
        if slots_used >= slots_max {
            out.push(finding(
                format!("every replication slot is taken ({slots_used} of max_replication_slots {slots_max})"),
                "raise max_replication_slots (ALTER SYSTEM SET max_replication_slots = ...; restart), \
                 or drop a slot no longer used (pg_drop_replication_slot)",
            ));
        }
        if senders_used >= senders_max {
            out.push(finding(
                format!(
                    "every WAL sender is busy ({senders_used} of max_wal_senders {senders_max})"
                ),
                "raise max_wal_senders (ALTER SYSTEM SET max_wal_senders = ...; restart)",
            ));
        }
    }
    if role.subscribes {
        if workers_used >= workers_max {
            out.push(finding(
                format!(
                    "every logical replication worker is busy ({workers_used} of \
                     max_logical_replication_workers {workers_max})"
                ),
                "raise max_logical_replication_workers (and max_worker_processes); restart",
            ));
        }
        if origins_used >= origins_max {
            out.push(finding(
                format!("no replication origin is free ({origins_used} of {origins_max})"),
                if node.server_version_num >= 180_000 {
                    "raise max_active_replication_origins; restart"
                } else {
                    "raise max_replication_slots (it also bounds replication origins); restart"
                },
            ));
        }
    }
    if !node.superuser {
        let mut missing = Vec::new();
        if !replication {
            missing.push("the REPLICATION attribute (ALTER ROLE ... REPLICATION)");
        }
        if role.subscribes {
            if node.server_version_num < 160_000 {
                missing.push("superuser (on PostgreSQL 15 only superusers create subscriptions)");
            } else {
                if !create_subscription {
                    missing.push("membership in pg_create_subscription");
                }
                if !create_db {
                    missing.push("CREATE on the database");
                }
            }
            if !advance {
                missing.push(
                    "EXECUTE on pg_replication_origin_advance(text, pg_lsn) (GRANT it as a superuser)",
                );
            }
        }
        // CREATE PUBLICATION needs ownership of each table, steep's marker table included
        // (owned by the superuser that created the extension).
        missing.push("ownership of every replicated table and of steep_repl.replication_markers");
        if !missing.is_empty() {
            out.push(finding(
                format!(
                    "role {} may not set up replication here: it is not a superuser and lacks {}",
                    node.role,
                    missing.join(", ")
                ),
                "run replication init as a superuser, or grant what is listed",
            ));
        }
    }
    Ok(out)
}

/// Tables that cannot be published for updates and deletes: no primary key and no replica
/// identity (an UPDATE or DELETE on them would then fail on the publisher).
pub fn without_replica_identity(c: &mut postgres::Client, tables: &[i64]) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
          WHERE c.oid::int8 = ANY($1)
            AND (c.relreplident = 'n'
                 OR (c.relreplident = 'd'
                     AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i
                                      WHERE i.indrelid = c.oid AND i.indisprimary)))
          ORDER BY 1",
        &[&tables],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Slots named like steep's that nothing uses: each keeps WAL from being removed.
pub fn idle_steep_slots(c: &mut postgres::Client) -> Result<Vec<(String, String)>> {
    Ok(c.query(
        "SELECT slot_name::text,
                pg_catalog.pg_size_pretty(pg_catalog.pg_wal_lsn_diff(
                    pg_catalog.pg_current_wal_lsn(), restart_lsn))
           FROM pg_catalog.pg_replication_slots
          WHERE slot_name LIKE 'steep\\_%' AND NOT active AND database = current_database()
          ORDER BY 1",
        &[],
    )?
    .iter()
    .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
    .collect())
}
