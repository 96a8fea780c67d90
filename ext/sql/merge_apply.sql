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

-- The job form. A merge job whose strategy asks stores the conflicts (both row images) here and
-- waits, as phase awaiting_decisions, until each has a decision on its rows (the CLI prompts and
-- saves them in merge_decisions) or its timeout passes; it holds no lock while it waits.
ALTER TABLE steep_repl.work_queue DROP CONSTRAINT work_queue_operation_check;
ALTER TABLE steep_repl.work_queue ADD CONSTRAINT work_queue_operation_check
    CHECK (operation IN ('snapshot_generate', 'snapshot_apply', 'bidirectional_merge',
                         'selftest', 'merge_analysis', 'merge'));

CREATE TABLE steep_repl.merge_conflicts (
    merge_id          text NOT NULL REFERENCES steep_repl.merges (merge_id) ON DELETE CASCADE,
    schema_name       text NOT NULL,
    table_name        text NOT NULL,
    key               text NOT NULL,
    local_hash        bigint,
    remote_hash       bigint,
    pk                jsonb NOT NULL,
    local_row         jsonb NOT NULL,
    remote_row        jsonb NOT NULL,
    differing_columns text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (merge_id, schema_name, table_name, key)
);
COMMENT ON TABLE steep_repl.merge_conflicts IS 'The conflicts a merge job asks about, with both row images';
ALTER TABLE steep_repl.merge_conflicts ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_conflicts_owner ON steep_repl.merge_conflicts
    USING (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_conflicts.merge_id))
    WITH CHECK (EXISTS (SELECT FROM steep_repl.merges m
                        WHERE m.merge_id = merge_conflicts.merge_id));

CREATE FUNCTION steep_repl.start_merge(peer text, tables text[] DEFAULT NULL,
                                       strategy text DEFAULT 'ask', options jsonb DEFAULT '{}')
RETURNS steep_repl.merges
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m steep_repl.merges;
    o jsonb := coalesce($4, '{}');
    bad text;
BEGIN
    PERFORM steep_repl._require_workers();
    IF $3 IS NULL OR $3 !~ '^(prefer-local|prefer-remote|ask|last-modified(:.+)?)$' THEN
        RAISE EXCEPTION 'unknown strategy %', coalesce(quote_literal($3), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use prefer-local, prefer-remote, last-modified, last-modified:COLUMN or ask';
    END IF;
    IF jsonb_typeof(o) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every option of its JSON type: a string "true" must not read as true here and false in
    -- the job.
    SELECT string_agg(format('%s (%s)', k, t), ', ') INTO bad
      FROM (SELECT e.key AS k,
                   CASE e.key WHEN 'per_table' THEN 'array'
                              WHEN 'decision_timeout_seconds' THEN 'number'
                              WHEN 'keep_one_sided' THEN 'boolean'
                              WHEN 'dry_run' THEN 'boolean'
                              WHEN 'wait_for_decisions' THEN 'boolean' END AS t,
                   jsonb_typeof(e.value) AS have
              FROM jsonb_each(o) e) x
     WHERE t IS DISTINCT FROM have;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid options: %', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'known options and their JSON types: per_table (array of {"table": T, "strategy": S}), keep_one_sided, dry_run, wait_for_decisions (booleans), decision_timeout_seconds (number)';
    END IF;
    IF EXISTS (SELECT FROM jsonb_array_elements(coalesce(o -> 'per_table', '[]')) e
                WHERE jsonb_typeof(e) <> 'object'
                   OR jsonb_typeof(e -> 'table') IS DISTINCT FROM 'string'
                   OR coalesce(e ->> 'strategy', '')
                      !~ '^(prefer-local|prefer-remote|ask|last-modified(:.+)?)$') THEN
        RAISE EXCEPTION 'invalid per_table entry: each is {"table": T, "strategy": S} with a known strategy'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO steep_repl.merges (merge_id, peer, tables, strategy, dry_run, status, kind,
                                   options)
    VALUES (steep_repl._new_merge_id(), steep_repl._authorize_peer($1), coalesce($2, '{}'),
            split_part($3, ':', 1), coalesce((o ->> 'dry_run')::boolean, false), 'pending',
            'merge', o || jsonb_build_object('strategy', $3, 'mode', 'direct'))
    RETURNING * INTO m;
    INSERT INTO steep_repl.work_queue (operation, merge_id, params)
    VALUES ('merge', m.merge_id, jsonb_build_object('peer', $1, 'tables', m.tables,
                                                     'options', m.options));
    RETURN m;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_merge(text, text[], text, jsonb)
    IS 'Queue a merge of this database and a peer (options: per_table [{table, strategy}], keep_one_sided, dry_run, wait_for_decisions, decision_timeout_seconds); returns at once';

CREATE FUNCTION steep_repl.merge_progress(merge_id text DEFAULT NULL)
RETURNS TABLE (merge_id text, status text, phase text, overall_percent double precision,
               tables_completed integer, tables_total integer, current_table text,
               rows_processed bigint, undecided bigint, error text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT m.merge_id, m.status,
           coalesce(p.phase, CASE WHEN m.status = 'awaiting_decisions' THEN 'awaiting_decisions' END),
           coalesce(p.percent, 0),
           coalesce(p.tables_completed::integer, m.tables_completed),
           coalesce(nullif(p.tables_total, 0)::integer, m.tables_total),
           p.current_table,
           coalesce(p.rows_processed, 0),
           (SELECT count(*) FROM steep_repl.merge_conflicts c
             WHERE c.merge_id = m.merge_id
               AND NOT EXISTS (SELECT FROM steep_repl.merge_decisions d
                                WHERE d.merge_id = c.merge_id AND d.schema_name = c.schema_name
                                  AND d.table_name = c.table_name AND d.key = c.key
                                  AND d.local_hash IS NOT DISTINCT FROM c.local_hash
                                  AND d.remote_hash IS NOT DISTINCT FROM c.remote_hash)),
           coalesce(p.error, m.error_message)
    FROM steep_repl.merges m
    LEFT JOIN steep_repl.work_queue w ON w.merge_id = m.merge_id AND w.status IN ('pending', 'running')
    LEFT JOIN steep_repl.operation_progress() p ON p.id = w.id
    WHERE m.kind = 'merge'
      AND CASE WHEN $1 IS NULL THEN m.status IN ('pending', 'running', 'awaiting_decisions')
               ELSE m.merge_id = $1 END
    ORDER BY m.created_at;
$fn$;
COMMENT ON FUNCTION steep_repl.merge_progress(text)
    IS 'Live progress of merges in flight (or of one), with the conflicts still undecided';

CREATE FUNCTION steep_repl.wait_merge(merge_id text, timeout_seconds integer DEFAULT 86400)
RETURNS steep_repl.merges
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m steep_repl.merges;
    deadline timestamptz := clock_timestamp() + make_interval(secs => coalesce($2, 86400));
BEGIN
    LOOP
        SELECT * INTO m FROM steep_repl.merges x WHERE x.merge_id = $1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown merge %', quote_literal($1) USING ERRCODE = 'no_data_found';
        END IF;
        IF m.status IN ('complete', 'failed', 'cancelled', 'awaiting_decisions') THEN
            RETURN m;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'merge % is still %, after % s', quote_literal($1), m.status, $2
                USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_sleep(0.1);  -- interruptible
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION steep_repl.wait_merge(text, integer)
    IS 'Block until the merge ends or waits for decisions (or the timeout); cancel the statement to stop waiting';

CREATE FUNCTION steep_repl.cancel_merge(merge_id text) RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(bool_or(steep_repl.cancel_operation(w.id)), false)
    FROM steep_repl.work_queue w
    WHERE w.merge_id = $1 AND w.status IN ('pending', 'running');
$fn$;
COMMENT ON FUNCTION steep_repl.cancel_merge(text)
    IS 'Cancel a pending or running merge job; the table it was writing is rolled back on both nodes';

-- What steers a merge — its decisions, the conflicts it asks about, which tables are done, its
-- audit — is written only by roles that may act as the merge's creator (SET on 16+, where a
-- member may inherit privileges without being allowed to become the role; membership on 15),
-- as for work_queue; seeing it needs the creator's privileges.
CREATE FUNCTION steep_repl._may_act_for_merge(merge_id text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (
        SELECT FROM steep_repl.merges m
         WHERE m.merge_id = $1
           AND (m.created_by = current_user
                OR CASE WHEN current_setting('server_version_num')::int >= 160000
                        THEN pg_has_role(current_user,
                                 (SELECT r.oid FROM pg_roles r WHERE r.rolname = m.created_by), 'SET')
                        ELSE pg_has_role(current_user,
                                 (SELECT r.oid FROM pg_roles r WHERE r.rolname = m.created_by), 'MEMBER')
                   END))
$fn$;
ALTER POLICY merge_tables_owner ON steep_repl.merge_tables
    WITH CHECK (steep_repl._may_act_for_merge(merge_tables.merge_id));
ALTER POLICY merge_decisions_owner ON steep_repl.merge_decisions
    WITH CHECK (steep_repl._may_act_for_merge(merge_decisions.merge_id));
ALTER POLICY merge_conflicts_owner ON steep_repl.merge_conflicts
    WITH CHECK (steep_repl._may_act_for_merge(merge_conflicts.merge_id));
ALTER POLICY merge_audit_log_owner ON steep_repl.merge_audit_log
    WITH CHECK (steep_repl._may_act_for_merge(merge_audit_log.merge_id));
