//! One module per command group; each command is a clap `Args` struct with an `execute`.

pub mod demo;
pub mod doctor;
pub mod health;
pub mod init;
pub mod local;
pub mod node;
pub mod ops;
pub mod schema;
pub mod snapshot;
pub mod version;

use anyhow::Result;

/// An error that means "the check ran and found something blocking" (exit code 3), as opposed
/// to "steep could not do what was asked" (exit code 1).
#[derive(Debug)]
pub struct Blocking(pub String);

impl std::fmt::Display for Blocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Blocking {}

/// Documented exit codes: 0 ok, 1 failure, 2 usage (clap), 3 blocking findings.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Blocking>().is_some() {
        3
    } else {
        1
    }
}

/// Fail with the fix when steep_repl is not created in the connected database.
pub fn require_extension(client: &mut postgres::Client) -> Result<()> {
    let row = client.query_one(
        "SELECT current_database()::text,
                EXISTS (SELECT FROM pg_extension WHERE extname = 'steep_repl')",
        &[],
    )?;
    if !row.get::<_, bool>(1) {
        anyhow::bail!(
            "steep_repl is not installed in database {:?}: run `steep init`",
            row.get::<_, String>(0)
        );
    }
    Ok(())
}
