-- Choosing what a direct-mode snapshot holds (0.4.0): pg_dump's -t/-T/-n/-N patterns, resolved by
-- pg_dump itself in the job. New arguments are a new signature.

DROP FUNCTION steep_repl.start_snapshot(text, text, integer, boolean);
CREATE FUNCTION steep_repl.start_snapshot(output_path text, compression text DEFAULT 'none',
                                          parallel integer DEFAULT 4,
                                          with_schema boolean DEFAULT true,
                                          tables text[] DEFAULT NULL,
                                          exclude_tables text[] DEFAULT NULL,
                                          schemas text[] DEFAULT NULL,
                                          exclude_schemas text[] DEFAULT NULL)
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
                               'schema', coalesce($4, true),
                               'tables', coalesce($5, '{}'), 'exclude_tables', coalesce($6, '{}'),
                               'schemas', coalesce($7, '{}'),
                               'exclude_schemas', coalesce($8, '{}')));
    RETURN snap;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_snapshot(text, text, integer, boolean, text[], text[], text[],
                                              text[])
    IS 'Queue a snapshot of the tables (every one, or those pg_dump''s patterns choose) into output_path on the server; returns at once';
