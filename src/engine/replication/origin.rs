//! The merge of `--from merge` writes under a replication origin of its own, so the slots
//! created before it (origin = none) do not carry its writes to the other node, which already
//! has them; and a peek into those slots tells whether anyone else wrote meanwhile.

use anyhow::{Context, Result};

use crate::db_error::db_error;
use crate::engine::{wire, Connect, Tool, ToolAccess};

/// The prefix of the origins the merge's sessions write under (one per session: PostgreSQL
/// lets one session at a time use an origin).
pub const PREFIX: &str = "steep_merge_";

/// Connections to `inner` whose writes carry an origin named `steep_merge_<backend pid>`.
pub struct Tagged<'a>(pub &'a dyn Connect);

impl Connect for Tagged<'_> {
    fn connect(&self) -> Result<postgres::Client> {
        let mut c = self.0.connect()?;
        c.batch_execute(&format!(
            "SELECT pg_catalog.pg_replication_origin_create('{PREFIX}' || pg_catalog.pg_backend_pid())
              WHERE pg_catalog.pg_replication_origin_oid('{PREFIX}' || pg_catalog.pg_backend_pid()) IS NULL;
             SELECT pg_catalog.pg_replication_origin_session_setup('{PREFIX}' || pg_catalog.pg_backend_pid())"
        ))
        .map_err(db_error)
        .context("marking the merge's writes with a replication origin")?;
        Ok(c)
    }

    fn tool_access(&self, tool: Tool) -> Result<ToolAccess> {
        self.0.tool_access(tool)
    }

    /// The fast path's connections would not carry the origin.
    fn connect_wire(&self) -> Result<Option<wire::Wire>> {
        Ok(None)
    }
}

/// Drop the merge origins of this server once no session uses them (a closed connection's
/// backend may take a moment to go): waits up to 10 s, then leaves what is still in use.
pub fn drop_unused(c: &mut postgres::Client) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let names: Vec<String> = c
            .query(
                "SELECT roname FROM pg_catalog.pg_replication_origin
                  WHERE roname LIKE 'steep\\_merge\\_%'",
                &[],
            )
            .map_err(db_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut busy = false;
        for n in &names {
            // In use by a session still ending: an error, tried again below.
            busy |= c
                .execute("SELECT pg_catalog.pg_replication_origin_drop($1)", &[n])
                .is_err();
        }
        if !busy || started.elapsed() > std::time::Duration::from_secs(10) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// How many changes to the published tables the slot holds up to `upto` that no origin marks:
/// writes someone made while the merge ran.
pub fn unmarked_changes(
    c: &mut postgres::Client,
    slot: &str,
    upto: &str,
    publication: &str,
) -> Result<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM pg_catalog.pg_logical_slot_peek_binary_changes(
                    $1, $2::text::pg_lsn, NULL,
                    'proto_version', '1', 'publication_names', $3, 'origin', 'none')
              WHERE pg_catalog.get_byte(data, 0) IN (73, 85, 68, 84)",
        &[&slot, &upto, &publication],
    )
    .map_err(db_error)
    .with_context(|| format!("reading what slot {slot} holds"))?
    .get(0))
}
