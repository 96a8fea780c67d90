//! Privileges for roles that use steep without being superuser.

use anyhow::{Context, Result};

use crate::sql::{quote_ident, quote_literal};

/// Internal functions the SQL API calls with the caller's rights (0.3.0 revokes them from
/// PUBLIC): granted to the roles `steep init --grant` names, when the installed version has them.
pub const API_HELPERS: &[&str] = &[
    "steep_repl._snapshot_path(text, boolean)",
    "steep_repl._compression(text)",
    "steep_repl._new_snapshot_id()",
    "steep_repl._manifest_snapshot_id(text)",
    "steep_repl._require_workers()",
    "steep_repl._wake_on_commit()",
];

/// The statements that let `role` use steep without superuser: the registry, fingerprints and the
/// operations API (its jobs run with the role's own rights). Default privileges cover tables
/// later versions add.
pub fn grant_statements(role: &str) -> Vec<String> {
    let r = quote_ident(role);
    let mut v = vec![
        format!("GRANT USAGE ON SCHEMA steep_repl TO {r}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA steep_repl TO {r}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA steep_repl \
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}"
        ),
        // Which node this database is belongs to `steep init`.
        format!("REVOKE INSERT, UPDATE, DELETE ON steep_repl.coordinator_state FROM {r}"),
    ];
    // Where jobs may connect belongs to superusers (0.5.0+).
    v.push(format!(
        "DO $grant$ BEGIN IF to_regclass('steep_repl.peers') IS NOT NULL THEN \
         EXECUTE 'REVOKE INSERT, UPDATE, DELETE ON steep_repl.peers FROM ' || {}; END IF; \
         END $grant$",
        quote_literal(&r)
    ));
    for f in API_HELPERS {
        // Only where the function exists (older versions lack some): one DO block each.
        v.push(format!(
            "DO $grant$ BEGIN IF to_regprocedure({}) IS NOT NULL THEN \
             EXECUTE 'GRANT EXECUTE ON FUNCTION {f} TO ' || {}; END IF; END $grant$",
            quote_literal(f),
            quote_literal(&r)
        ));
    }
    v
}

/// Whether `role` already holds what `grant_statements` gives.
pub fn has_grants(client: &mut postgres::Client, role: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT has_schema_privilege($1, 'steep_repl', 'USAGE')
            -- (a list of privileges asks for any one of them: each on its own)
            AND coalesce(bool_and(has_table_privilege($1, c.oid, 'SELECT')
                AND (c.relname IN ('coordinator_state', 'peers')
                     OR (has_table_privilege($1, c.oid, 'INSERT')
                         AND has_table_privilege($1, c.oid, 'UPDATE')
                         AND has_table_privilege($1, c.oid, 'DELETE')))), true)
            AND (SELECT coalesce(bool_and(has_function_privilege($1, f, 'EXECUTE')), true)
                 FROM unnest($2::text[]) f WHERE to_regprocedure(f) IS NOT NULL)
         FROM pg_class c
         WHERE c.relnamespace = 'steep_repl'::regnamespace AND c.relkind IN ('r', 'p')",
            &[&role, &API_HELPERS],
        )
        .with_context(|| format!("checking the privileges of role {role:?} (does it exist?)"))?;
    Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
}
