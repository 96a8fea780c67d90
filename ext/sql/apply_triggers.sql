-- start_apply's new options (0.4.0). User triggers: by default they do not fire while rows are
-- loaded (as in replication; the table's owner keeps them from firing inside the load's
-- transaction); fire_triggers lets them. Owners and privileges: restored by default with
-- --schema create; no_owner / no_privileges leave them out as pg_restore's options do. New
-- arguments are a new signature.

DROP FUNCTION steep_repl.start_apply(text, integer, boolean, text, boolean);
CREATE FUNCTION steep_repl.start_apply(input_path text, parallel integer DEFAULT 4,
                                       verify boolean DEFAULT true,
                                       schema_mode text DEFAULT 'verify',
                                       resume boolean DEFAULT false,
                                       fire_triggers boolean DEFAULT false,
                                       no_owner boolean DEFAULT false,
                                       no_privileges boolean DEFAULT false)
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
                               'source_snapshot', source_id,
                               'fire_triggers', coalesce($6, false),
                               'no_owner', coalesce($7, false),
                               'no_privileges', coalesce($8, false)));
    RETURN snap;
END
$fn$;

COMMENT ON FUNCTION steep_repl.start_apply(text, integer, boolean, text, boolean, boolean, boolean,
                                          boolean)
    IS 'Queue loading the snapshot at input_path (on the server) into this database';
