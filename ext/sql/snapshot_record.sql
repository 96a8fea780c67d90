-- How a snapshot run records itself in its steep_repl.snapshots row (0.4.0): the same functions
-- for a background job (direct mode, which calls them as the job's owner) and for the CLI's
-- client mode (as the connected role), with the caller's rights and row security. `progress` is
-- the one progress record (the JSON of work_queue.progress); `totals` what the run produced.

CREATE FUNCTION steep_repl.snapshot_begin(snapshot_id text, kind text, storage_path text,
                                          compression text, parallel integer)
RETURNS steep_repl.snapshots
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $fn$
    INSERT INTO steep_repl.snapshots
        (snapshot_id, kind, node_id, status, storage_path, compression, parallel, mode,
         started_at, phase)
    VALUES ($1, $2, steep_repl.local_node_id(), 'running', $3, $4, $5, 'client',
            pg_catalog.clock_timestamp(), 'starting')
    RETURNING *
$fn$;
COMMENT ON FUNCTION steep_repl.snapshot_begin(text, text, text, text, integer)
    IS 'Register a snapshot run of the CLI''s client mode (direct mode: start_snapshot/start_apply)';

CREATE FUNCTION steep_repl.snapshot_record(snapshot_id text, progress jsonb)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $fn$
    UPDATE steep_repl.snapshots s
    SET status = 'running',
        started_at = coalesce(s.started_at, pg_catalog.clock_timestamp()),
        phase = $2 ->> 'phase',
        overall_percent = least(100, greatest(0, coalesce(($2 ->> 'percent')::float8, 0))),
        tables_completed = coalesce(($2 ->> 'tables_completed')::int, 0),
        table_count = coalesce(nullif(($2 ->> 'tables_total')::int, 0), s.table_count),
        current_table = $2 ->> 'table',
        bytes_processed = coalesce(($2 ->> 'bytes')::bigint, 0),
        rows_processed = coalesce(($2 ->> 'rows')::bigint, 0),
        eta_seconds = ($2 ->> 'eta_seconds')::int
    WHERE s.snapshot_id = $1 AND s.status IN ('pending', 'running')
$fn$;
COMMENT ON FUNCTION steep_repl.snapshot_record(text, jsonb)
    IS 'Record a running snapshot''s progress (the progress record''s JSON)';

CREATE FUNCTION steep_repl.snapshot_end(snapshot_id text, status text, error text,
                                        totals jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $fn$
BEGIN
    IF $2 IS NULL OR $2 NOT IN ('complete', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'invalid end status %: use complete, failed or cancelled',
            coalesce(quote_literal($2), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE steep_repl.snapshots s
    SET status = $2, error_message = $3, completed_at = pg_catalog.clock_timestamp(),
        started_at = coalesce(s.started_at, pg_catalog.clock_timestamp()),
        phase = $2,
        overall_percent = CASE WHEN $2 = 'complete' THEN 100 ELSE s.overall_percent END,
        table_count = coalesce(($4 ->> 'tables')::int, s.table_count),
        tables_completed = coalesce(($4 ->> 'tables')::int, s.tables_completed),
        rows_processed = coalesce(($4 ->> 'rows')::bigint, s.rows_processed),
        bytes_processed = coalesce(($4 ->> 'bytes')::bigint, s.bytes_processed),
        bytes_total = coalesce(($4 ->> 'bytes')::bigint, s.bytes_total),
        lsn = coalesce(($4 ->> 'lsn')::pg_lsn, s.lsn),
        compression = coalesce($4 ->> 'compression', s.compression),
        eta_seconds = NULL, current_table = NULL
    WHERE s.snapshot_id = $1;
END
$fn$;
COMMENT ON FUNCTION steep_repl.snapshot_end(text, text, text, jsonb)
    IS 'Record how a snapshot run ended and what it produced (tables, rows, bytes, lsn, compression)';
