//! Replication init: bring two nodes into logical replication with PostgreSQL's own
//! publications, slots and subscriptions, from a slot-consistent copy, a merge or empty tables,
//! so that no write made meanwhile is lost or applied twice. Shared by the CLI and (later) a job.
//!
//! Names: on each node a publication `steep_<setup>`; the slot on the publisher that feeds a
//! subscriber, and that subscriber's subscription, are both `steep_<setup>_<subscriber's tag>`
//! (a node's tag is a hash of its system identifier and database: slots are per cluster).

pub mod init;
pub mod keys;
pub mod names;
pub mod objects;
pub mod origin;
pub mod preflight;
pub mod slot;
pub mod stream;

/// The steep_repl version whose tables replication init uses (markers, the key scheme).
pub const EXTENSION_VERSION: &str = "0.7.0";
