-- The operations API (0.2.0) in SQL, on top of the library functions (_wake_on_commit,
-- _require_workers, cancel_operation, operation_progress).

-- Whatever inserts pending work (these functions or a plain INSERT) wakes the workers at commit.
CREATE FUNCTION steep_repl._work_queue_wake() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM steep_repl._wake_on_commit();
    RETURN NULL;
END
$fn$;
CREATE TRIGGER work_queue_wake AFTER INSERT ON steep_repl.work_queue
    FOR EACH STATEMENT EXECUTE FUNCTION steep_repl._work_queue_wake();

CREATE FUNCTION steep_repl.start_selftest(seconds double precision DEFAULT 1,
                                          steps integer DEFAULT 10)
RETURNS steep_repl.work_queue
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    job steep_repl.work_queue;
BEGIN
    PERFORM steep_repl._require_workers();
    IF $1 IS NULL OR $1 < 0 OR $1 > 86400 THEN
        RAISE EXCEPTION 'invalid seconds %: give 0 to 86400', coalesce($1::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $2 IS NULL OR $2 NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'invalid steps %: give 1 to 1000000', coalesce($2::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO steep_repl.work_queue (operation, params)
    VALUES ('selftest', jsonb_build_object('seconds', $1, 'steps', $2))
    RETURNING * INTO job;
    RETURN job;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_selftest(double precision, integer)
    IS 'Queue a diagnostic job: steps catalog queries as the caller, spread over seconds';

CREATE FUNCTION steep_repl.list_operations(status text DEFAULT NULL)
RETURNS SETOF steep_repl.work_queue
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF $1 IS NOT NULL AND $1 NOT IN ('pending', 'running', 'complete', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'invalid status %: use pending, running, complete, failed or cancelled',
            quote_literal($1) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM steep_repl.work_queue w WHERE $1 IS NULL OR w.status = $1 ORDER BY w.id;
END
$fn$;
COMMENT ON FUNCTION steep_repl.list_operations(text)
    IS 'Operations of this database visible to the caller, oldest first';

CREATE VIEW steep_repl.progress AS
    SELECT * FROM steep_repl.operation_progress();
COMMENT ON VIEW steep_repl.progress
    IS 'Every operation in flight, one row each (in the spirit of pg_stat_progress_copy)';
