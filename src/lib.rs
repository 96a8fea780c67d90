//! steep's library: the engine the `steep` CLI and the `steep_repl` extension share, plus (with the
//! default `cli` feature) the pieces only the CLI and its tests need.
//!
//! The extension depends on this crate with `default-features = false`, so nothing here outside
//! the `cli` feature may pull in terminal or process-management dependencies.

pub mod conn;
pub mod db_error;
pub mod engine;
pub mod progress_record;
pub mod schema_shape;
pub mod sql;

#[cfg(feature = "cli")]
pub mod cli;
