-- The snapshot API (0.2.0): queue generate and apply jobs for the background workers, follow and
-- cancel them. Paths are confined by _snapshot_path (steep_repl.snapshot_dir).

CREATE FUNCTION steep_repl.start_snapshot(output_path text, compression text DEFAULT 'none',
                                          parallel integer DEFAULT 4,
                                          with_schema boolean DEFAULT true)
RETURNS steep_repl.snapshots
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    snap steep_repl.snapshots;
    path text;
    spec text;
    id text := steep_repl._new_snapshot_id();
BEGIN
    PERFORM steep_repl._require_workers();
    IF $3 IS NULL OR $3 NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'invalid parallel %: give 1 to 64', coalesce($3::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    spec := steep_repl._compression(coalesce($2, 'none'));
    path := steep_repl._snapshot_path($1, true);
    INSERT INTO steep_repl.snapshots
        (snapshot_id, kind, node_id, status, storage_path, compression, parallel, mode)
    VALUES (id, 'generate', steep_repl.local_node_id(), 'pending', path, split_part(spec, ':', 1),
            $3, 'direct')
    RETURNING * INTO snap;
    INSERT INTO steep_repl.work_queue (operation, snapshot_id, params)
    VALUES ('snapshot_generate', id,
            jsonb_build_object('path', path, 'compression', spec, 'parallel', $3,
                               'schema', coalesce($4, true)));
    RETURN snap;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_snapshot(text, text, integer, boolean)
    IS 'Queue a snapshot of every table into output_path on the server; returns at once';

CREATE FUNCTION steep_repl.start_apply(input_path text, parallel integer DEFAULT 4,
                                       verify boolean DEFAULT true,
                                       schema_mode text DEFAULT 'verify',
                                       resume boolean DEFAULT false)
RETURNS steep_repl.snapshots
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    snap steep_repl.snapshots;
    path text;
    id text := steep_repl._new_snapshot_id();
    source_id text;
BEGIN
    PERFORM steep_repl._require_workers();
    IF $2 IS NULL OR $2 NOT BETWEEN 1 AND 64 THEN
        RAISE EXCEPTION 'invalid parallel %: give 1 to 64', coalesce($2::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $4 IS NULL OR $4 NOT IN ('verify', 'create', 'skip') THEN
        RAISE EXCEPTION 'invalid schema_mode %: use verify, create or skip', coalesce(quote_literal($4), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    path := steep_repl._snapshot_path($1, false);
    -- Refuse a missing or malformed manifest now, not in the worker.
    source_id := steep_repl._manifest_snapshot_id(path);
    INSERT INTO steep_repl.snapshots
        (snapshot_id, kind, node_id, status, storage_path, compression, parallel, mode)
    VALUES (id, 'apply', steep_repl.local_node_id(), 'pending', path, 'none', $2, 'direct')
    RETURNING * INTO snap;
    INSERT INTO steep_repl.work_queue (operation, snapshot_id, params)
    VALUES ('snapshot_apply', id,
            jsonb_build_object('path', path, 'parallel', $2, 'verify', coalesce($3, true),
                               'schema', $4, 'resume', coalesce($5, false),
                               'source_snapshot', source_id));
    RETURN snap;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_apply(text, integer, boolean, text, boolean)
    IS 'Queue loading the snapshot at input_path (on the server) into this database';

CREATE FUNCTION steep_repl.snapshot_progress(snapshot_id text DEFAULT NULL)
RETURNS TABLE (snapshot_id text, phase text, overall_percent double precision,
               tables_completed integer, tables_total integer, current_table text,
               bytes_processed bigint, eta_seconds integer, error text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s.snapshot_id,
           coalesce(p.phase, s.phase),
           coalesce(p.percent, s.overall_percent),
           coalesce(p.tables_completed::integer, s.tables_completed),
           coalesce(nullif(p.tables_total, 0)::integer, s.table_count, 0),
           coalesce(p.current_table, s.current_table),
           coalesce(nullif(p.bytes_processed, 0), s.bytes_processed),
           coalesce(p.eta_seconds::integer, s.eta_seconds),
           coalesce(p.error, s.error_message)
    FROM steep_repl.snapshots s
    LEFT JOIN steep_repl.operation_progress() p
           ON p.snapshot_id = s.snapshot_id AND p.database = current_database()
    WHERE CASE WHEN $1 IS NULL THEN s.status IN ('pending', 'running') ELSE s.snapshot_id = $1 END
    ORDER BY s.created_at;
$fn$;
COMMENT ON FUNCTION steep_repl.snapshot_progress(text)
    IS 'Live progress of snapshots in flight (or of one), from shared memory or the row';

CREATE FUNCTION steep_repl.wait_snapshot(snapshot_id text, timeout_seconds integer DEFAULT 86400)
RETURNS steep_repl.snapshots
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    snap steep_repl.snapshots;
    deadline timestamptz := clock_timestamp() + make_interval(secs => coalesce($2, 86400));
BEGIN
    LOOP
        SELECT * INTO snap FROM steep_repl.snapshots s WHERE s.snapshot_id = $1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown snapshot %', quote_literal($1) USING ERRCODE = 'no_data_found';
        END IF;
        IF snap.status IN ('complete', 'failed', 'cancelled') THEN
            RETURN snap;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'snapshot % is still %, after % s', quote_literal($1), snap.status, $2
                USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_sleep(0.1);  -- interruptible
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION steep_repl.wait_snapshot(text, integer)
    IS 'Block until the snapshot ends (or the timeout); cancel the statement to stop waiting';

CREATE FUNCTION steep_repl.cancel_snapshot(snapshot_id text) RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(bool_or(steep_repl.cancel_operation(w.id)), false)
    FROM steep_repl.work_queue w
    WHERE w.snapshot_id = $1 AND w.status IN ('pending', 'running');
$fn$;
COMMENT ON FUNCTION steep_repl.cancel_snapshot(text)
    IS 'Cancel a pending or running snapshot; it removes what it wrote (or rolls back)';
