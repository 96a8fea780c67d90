-- Snapshot apply's resume markers (0.4.0). An apply commits one marker per table in the same
-- transaction as that table's rows, so `--resume` knows exactly which tables hold the snapshot's
-- data (a matching row count proved nothing: stale rows can have the same count). The rows are
-- operational state of one apply: not a configuration table, so pg_dump does not carry them.
-- The functions set row_security on: the engine's sessions turn it off (a table whose policies
-- would hide rows from COPY must fail loudly), and these rows are under a policy.

CREATE TABLE steep_repl.apply_markers (
    snapshot_id  text NOT NULL CHECK (length(snapshot_id) BETWEEN 1 AND 200),
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    schema_mode  text NOT NULL CHECK (schema_mode IN ('verify', 'create', 'skip')),
    loaded_by    name NOT NULL DEFAULT current_user,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, loaded_by, table_schema, table_name)
);
COMMENT ON TABLE steep_repl.apply_markers
    IS 'Tables a snapshot apply has loaded (committed with their rows); read by --resume';

ALTER TABLE steep_repl.apply_markers ENABLE ROW LEVEL SECURITY;
CREATE POLICY apply_markers_owner ON steep_repl.apply_markers
    USING (pg_catalog.pg_has_role(current_user,
               (SELECT r.oid FROM pg_catalog.pg_roles r
                WHERE r.rolname = apply_markers.loaded_by), 'USAGE'))
    WITH CHECK (apply_markers.loaded_by = current_user);

CREATE FUNCTION steep_repl.apply_markers_of(snapshot_id text)
RETURNS TABLE (table_schema text, table_name text, schema_mode text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $fn$
    SELECT m.table_schema, m.table_name, m.schema_mode FROM steep_repl.apply_markers m
    WHERE m.snapshot_id = $1 AND m.loaded_by = current_user
    ORDER BY 1, 2
$fn$;
COMMENT ON FUNCTION steep_repl.apply_markers_of(text)
    IS 'The tables the current role''s apply of a snapshot has loaded';

CREATE FUNCTION steep_repl.mark_applied(snapshot_id text, schema_mode text,
                                        table_schema text, table_name text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $fn$
    -- The table no longer holds what other snapshots' markers say it holds (those the caller
    -- may see: its own and its members').
    DELETE FROM steep_repl.apply_markers m
    WHERE m.table_schema = $3 AND m.table_name = $4 AND m.snapshot_id <> $1;
    INSERT INTO steep_repl.apply_markers (snapshot_id, table_schema, table_name, schema_mode)
    VALUES ($1, $3, $4, $2)
    ON CONFLICT (snapshot_id, loaded_by, table_schema, table_name)
    DO UPDATE SET schema_mode = excluded.schema_mode, loaded_at = excluded.loaded_at;
$fn$;
COMMENT ON FUNCTION steep_repl.mark_applied(text, text, text, text)
    IS 'Record, inside the transaction that loaded it, that a table holds a snapshot''s data';

CREATE FUNCTION steep_repl.forget_applied(snapshot_id text)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $fn$
    WITH gone AS (DELETE FROM steep_repl.apply_markers m
                  WHERE m.snapshot_id = $1 AND m.loaded_by = current_user RETURNING 1)
    SELECT count(*) FROM gone
$fn$;
COMMENT ON FUNCTION steep_repl.forget_applied(text)
    IS 'Drop the current role''s markers of a snapshot (a new, non-resuming apply starts over)';
