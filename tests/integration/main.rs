//! Integration tests: the real `steep` binary against real PostgreSQL clusters.
//!
//! `STEEP_TEST_PG_CONFIG` chooses the PostgreSQL (default: the test suite's copy of the
//! PostgreSQL 18 tree, made by scripts/setup.sh); scripts/test.sh sets it for every version.

mod common;
mod connection;
mod dump_restore;
mod libpq_oracle;
mod lifecycle;
mod local;
mod merge_analysis;
mod merge_run;
mod node;
mod operations;
mod parity;
mod privileges;
mod replication;
mod schema;
mod security;
mod shape_verdicts;
mod snapshot;
mod snapshot_objects;
mod snapshot_resume;
mod version;
