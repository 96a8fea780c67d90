-- analyze_overlap (0.5.0): the analysis run in the calling backend, its result kept as a complete
-- `analysis` merges row of the caller's (merge_overlap, merge_keys), returned per table.
CREATE FUNCTION steep_repl.analyze_overlap(peer text, tables text[] DEFAULT NULL)
RETURNS TABLE (merge_id text, schema_name text, table_name text, match bigint, conflict bigint,
               local_only bigint, remote_only bigint, suspect_serial_keys boolean,
               unique_collisions integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    id text := steep_repl._run_analysis($1, $2);
BEGIN
    RETURN QUERY
    SELECT o.merge_id, o.schema_name, o.table_name, o.match, o.conflict, o.local_only,
           o.remote_only, o.suspect_serial_keys, jsonb_array_length(o.unique_collisions)
      FROM steep_repl.merge_overlap o
     WHERE o.merge_id = id
     ORDER BY o.schema_name, o.table_name;
END
$fn$;
COMMENT ON FUNCTION steep_repl.analyze_overlap(text, text[])
    IS 'Compare this database''s tables with a peer''s (a peer a superuser defined, or for superusers a connection string without a password): per table, rows that match, conflict, or exist on one side only; the keys are in steep_repl.merge_keys';
