//! What steep calls the objects of a setup, and who a node is.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// One node of a setup as replication init sees it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub system_identifier: String,
    pub database: String,
    pub database_oid: u32,
    pub server_version_num: i32,
    pub superuser: bool,
    pub role: String,
    /// Eight hex digits naming this database of this cluster in slot names.
    pub tag: String,
}

impl NodeIdentity {
    pub fn read(c: &mut postgres::Client) -> Result<Self> {
        let r = c
            .query_one(
                "SELECT (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
                        current_database()::text,
                        (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()),
                        current_setting('server_version_num')::int,
                        (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
                        current_user::text",
                &[],
            )
            .context("reading the node's identity")?;
        let (sysid, oid): (String, u32) = (r.get(0), r.get(2));
        Ok(Self {
            tag: tag(&sysid, oid),
            system_identifier: sysid,
            database: r.get(1),
            database_oid: oid,
            server_version_num: r.get(3),
            superuser: r.get(4),
            role: r.get(5),
        })
    }

    /// PostgreSQL 16 added the subscription option `origin`, which keeps changes a node received
    /// from being sent back: bidirectional replication needs it.
    pub fn has_origin_option(&self) -> bool {
        self.server_version_num >= 160_000
    }

    pub fn same_as(&self, other: &NodeIdentity) -> bool {
        self.tag == other.tag
    }
}

/// A node's tag: eight hex digits of a hash of its cluster's system identifier and its
/// database's oid.
pub fn tag(system_identifier: &str, database_oid: u32) -> String {
    let h = Sha256::digest(format!("{system_identifier}/{database_oid}").as_bytes());
    hex::encode(&h[..4])
}

/// A setup's name: lower-case letters, digits and underscores (it becomes part of slot names,
/// which allow nothing else), at most 24 characters.
pub fn check_setup(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 24
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!(
            "invalid setup name {name:?}: use 1 to 24 lower-case letters, digits or underscores \
             (it becomes part of slot names)"
        );
    }
    Ok(())
}

/// The publication of a setup on each of its nodes.
pub fn publication(setup: &str) -> String {
    format!("steep_{setup}")
}

/// The slot on a publisher that feeds `subscriber`, and the subscriber's subscription.
pub fn slot_for(setup: &str, subscriber: &NodeIdentity) -> String {
    format!("steep_{setup}_{}", subscriber.tag)
}

/// The regular expression matching exactly the slots and subscriptions of a setup (setup
/// `a` must not match `a_b`'s `steep_a_b_<tag>`). Setup names hold nothing a regular expression
/// treats specially.
pub fn name_regex(setup: &str) -> String {
    format!("^steep_{setup}_[0-9a-f]{{8}}$")
}

/// Settings every replication init session runs with: names resolve in pg_catalog only (a
/// database or schema owner's functions or operators never run in steep's superuser sessions),
/// literals as written.
pub const PINNED: &str =
    "SET search_path = pg_catalog, pg_temp; SET standard_conforming_strings = on";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_cluster_and_database_and_names_are_checked() {
        assert_eq!(tag("7", 5).len(), 8);
        assert_ne!(tag("7", 5), tag("7", 16384));
        assert_ne!(tag("7", 5), tag("8", 5));
        assert!(check_setup("steep").is_ok());
        assert!(check_setup("Steep").is_err());
        assert!(check_setup("a-b").is_err());
        assert!(check_setup("").is_err());
        assert_eq!(name_regex("a_b"), "^steep_a_b_[0-9a-f]{8}$");
    }
}
