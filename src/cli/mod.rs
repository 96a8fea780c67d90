//! The library's CLI-only half (the `cli` feature): what the `steep` binary and its tests need and
//! the extension must not pull in — terminal output, the local PostgreSQL clusters, the package
//! and catalog of the extension on a server, following operations.

pub mod client;
pub mod embedded;
pub mod follow;
pub mod home;
pub mod lifecycle;
pub mod output;
pub mod sandbox;
