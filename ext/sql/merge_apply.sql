-- Merge, part 2 (0.6.0): resolve and apply. A merge keeps, on the node it runs against, which
-- tables it has merged (written in the same transaction as the table's rows), the operator's
-- decisions bound to both row hashes, and its audit (merge_audit_log, 0.1.0).

ALTER TABLE steep_repl.merges DROP CONSTRAINT merges_status_check;
ALTER TABLE steep_repl.merges ADD CONSTRAINT merges_status_check
    CHECK (status IN ('pending', 'running', 'awaiting_decisions', 'complete', 'failed',
                      'cancelled'));
-- The full strategy (last-modified:COLUMN), per-table strategies and flags; strategy keeps the
-- family.
ALTER TABLE steep_repl.merges ADD COLUMN options jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(options) = 'object');
ALTER TABLE steep_repl.merges ADD COLUMN result jsonb;

CREATE TABLE steep_repl.merge_tables (
    merge_id    text NOT NULL REFERENCES steep_repl.merges (merge_id) ON DELETE CASCADE,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    -- committing: written on the peer, the local commit not seen yet; merged: on both nodes.
    state       text NOT NULL CHECK (state IN ('committing', 'merged')),
    result      jsonb NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merge_id, schema_name, table_name)
);
COMMENT ON TABLE steep_repl.merge_tables IS 'Per table of a merge: merged on both nodes, or on the peer only (committing), with its counts';

CREATE TABLE steep_repl.merge_decisions (
    merge_id    text NOT NULL REFERENCES steep_repl.merges (merge_id) ON DELETE CASCADE,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    key         text NOT NULL,
    -- The row hashes the decision was made on: a row changed since is undecided again.
    local_hash  bigint,
    remote_hash bigint,
    resolution  text NOT NULL CHECK (resolution IN ('keep_local', 'keep_remote', 'skip')),
    decided_by  text NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merge_id, schema_name, table_name, key)
);
COMMENT ON TABLE steep_repl.merge_decisions IS 'The operator''s decisions on a merge''s conflicts, each bound to both row hashes';

-- Seen and written by whoever may see the merge (its row security: the owner and its members).
ALTER TABLE steep_repl.merge_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_tables_owner ON steep_repl.merge_tables
    USING (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_tables.merge_id))
    WITH CHECK (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_tables.merge_id));
ALTER TABLE steep_repl.merge_decisions ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_decisions_owner ON steep_repl.merge_decisions
    USING (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_decisions.merge_id))
    WITH CHECK (EXISTS (SELECT FROM steep_repl.merges m
                        WHERE m.merge_id = merge_decisions.merge_id));

CREATE FUNCTION steep_repl.merge_audit(merge_id text)
RETURNS SETOF steep_repl.merge_audit_log
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT * FROM steep_repl.merge_audit_log a WHERE a.merge_id = $1 ORDER BY a.id
$fn$;
COMMENT ON FUNCTION steep_repl.merge_audit(text) IS 'A merge''s audit rows (what the caller may see of them)';

SELECT pg_catalog.pg_extension_config_dump('steep_repl.merge_tables', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.merge_decisions', '');
