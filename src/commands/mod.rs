//! One module per command group; each command is a clap `Args` struct with an `execute`.

pub mod demo;
pub mod doctor;
pub mod health;
pub mod init;
pub mod local;
pub mod merge;
pub mod node;
pub mod ops;
pub mod replication;
pub mod schema;
pub mod snapshot;
pub mod version;

use anyhow::Result;
use steep::engine::error::ErrorKind;

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

/// Arguments that parse one by one but contradict each other (exit code 2, like clap's own
/// usage errors).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Documented exit codes: 0 ok, 1 failure, 2 usage, 3 blocking findings.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Blocking>().is_some() {
        3
    } else if e.downcast_ref::<Usage>().is_some() {
        2
    } else {
        1
    }
}

/// clap value parser for `--parallel`: 1 to 64 connections.
pub fn parallel_arg(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!("give 1 to 64 connections, not {s:?}")),
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

/// How a job (`what`: "merge ID", "replication init job 7") ended: its result when complete,
/// else its error — a refusal (nodes that cannot be merged or replicated) as a blocking finding.
pub(crate) fn job_result(
    c: &mut postgres::Client,
    op: i64,
    what: &str,
) -> Result<serde_json::Value> {
    let row = c.query_one(
        "SELECT status, error_message, result FROM steep_repl.work_queue WHERE id = $1",
        &[&op],
    )?;
    let (status, error, result): (String, Option<String>, Option<serde_json::Value>) =
        (row.get(0), row.get(1), row.get(2));
    if status == "complete" {
        return Ok(result.unwrap_or_default());
    }
    let msg = format!("{what} {status}: {}", error.unwrap_or_default());
    let kind = result
        .as_ref()
        .and_then(|r| r.get("error_kind"))
        .and_then(|k| k.as_str());
    if kind == Some(ErrorKind::MergeRefused.name())
        || kind == Some(ErrorKind::ReplicationRefused.name())
    {
        return Err(Blocking(msg).into());
    }
    Err(anyhow::anyhow!(msg))
}
