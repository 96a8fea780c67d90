-- Fingerprints on the one shape query and the one diff (0.4.0). table_shapes() and shape_diff()
-- are the library's code, which `snapshot apply --schema verify` runs too, so `schema compare`
-- and verify cannot disagree. A fingerprint now also covers generated columns and partitioned
-- tables (a table with neither keeps its 0.3.0 fingerprint).

ALTER TABLE steep_repl.schema_fingerprints
    ADD COLUMN partitioned boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION steep_repl.fingerprint_of(column_definitions jsonb, primary_key text[],
                                                     partitioned boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    -- Identifiers are always double-quoted (not quote_ident): its keyword list differs between
    -- PostgreSQL versions, and the same schema must fingerprint the same on every version.
    SELECT encode(sha256(convert_to(
        coalesce((SELECT string_agg('"' || replace(c ->> 'name', '"', '""') || '" ' || (c ->> 'type')
                                    || CASE WHEN (c ->> 'not_null')::boolean THEN ' NOT NULL' ELSE '' END
                                    || CASE WHEN coalesce((c ->> 'generated')::boolean, false)
                                            THEN ' GENERATED' ELSE '' END,
                                    E'\n' ORDER BY (c ->> 'position')::integer)
                  FROM jsonb_array_elements($1) c), '')
        || E'\nPRIMARY KEY ('
        || coalesce((SELECT string_agg('"' || replace(k, '"', '""') || '"', ', ' ORDER BY o)
                     FROM unnest($2) WITH ORDINALITY u(k, o)), '')
        || ')'
        || CASE WHEN $3 THEN E'\nPARTITIONED' ELSE '' END, 'UTF8')), 'hex');
$fn$;
COMMENT ON FUNCTION steep_repl.fingerprint_of(jsonb, text[], boolean)
    IS 'The fingerprint of a table given its column definitions, primary key columns and partitioning';

CREATE OR REPLACE FUNCTION steep_repl.fingerprint_of(column_definitions jsonb, primary_key text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT steep_repl.fingerprint_of($1, $2, false);
$fn$;

-- One more result column (partitioned): a new signature.
DROP FUNCTION steep_repl.table_fingerprints();
CREATE FUNCTION steep_repl.table_fingerprints()
RETURNS TABLE (schema_name text, table_name text, fingerprint text, column_definitions jsonb,
               primary_key text[], partitioned boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s.schema_name, s.table_name,
           steep_repl.fingerprint_of(s.column_definitions, s.primary_key, s.partitioned),
           s.column_definitions, s.primary_key, s.partitioned
    FROM steep_repl.table_shapes() s
    ORDER BY 1, 2;
$fn$;
COMMENT ON FUNCTION steep_repl.table_fingerprints()
    IS 'Fingerprints of this database''s user tables, computed now (nothing is stored)';

CREATE OR REPLACE FUNCTION steep_repl.capture_fingerprints(node_id text) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    captured integer;
BEGIN
    PERFORM steep_repl.require_node($1);
    DELETE FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1;
    INSERT INTO steep_repl.schema_fingerprints
        (node_id, schema_name, table_name, fingerprint, column_definitions, primary_key,
         partitioned)
    SELECT $1, t.schema_name, t.table_name, t.fingerprint, t.column_definitions, t.primary_key,
           t.partitioned
    FROM steep_repl.table_fingerprints() t;
    GET DIAGNOSTICS captured = ROW_COUNT;
    RETURN captured;
END
$fn$;

CREATE OR REPLACE FUNCTION steep_repl.fingerprint_diff(local_node text, peer_node text,
                                                       only_schema text DEFAULT NULL,
                                                       only_table text DEFAULT NULL)
RETURNS TABLE (schema_name text, table_name text, column_name text, difference text,
               local_value text, peer_value text, breaks_replication boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM steep_repl.require_node($1);
    PERFORM steep_repl.require_node($2);
    -- Stored rows as the shapes shape_diff() reads.
    RETURN QUERY
    SELECT d.schema_name, d.table_name, d.column_name, d.difference, d.local_value,
           d.peer_value, d.breaks_replication
    FROM steep_repl.shape_diff(
        (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'schema', f.schema_name, 'name', f.table_name, 'partitioned', f.partitioned,
                     'columns', f.column_definitions, 'primary_key', to_jsonb(f.primary_key))), '[]')
         FROM steep_repl.schema_fingerprints f
         WHERE f.node_id = $1 AND ($3 IS NULL OR f.schema_name = $3)
           AND ($4 IS NULL OR f.table_name = $4)),
        (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'schema', f.schema_name, 'name', f.table_name, 'partitioned', f.partitioned,
                     'columns', f.column_definitions, 'primary_key', to_jsonb(f.primary_key))), '[]')
         FROM steep_repl.schema_fingerprints f
         WHERE f.node_id = $2 AND ($3 IS NULL OR f.schema_name = $3)
           AND ($4 IS NULL OR f.table_name = $4)),
        true) d;
END
$fn$;

CREATE OR REPLACE FUNCTION steep_repl.export_fingerprints(node_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    result jsonb;
BEGIN
    PERFORM steep_repl.require_node($1);
    SELECT jsonb_build_object(
               'format', 1,
               'node_id', $1,
               'tables', coalesce(jsonb_agg(jsonb_build_object(
                   'schema_name', f.schema_name,
                   'table_name', f.table_name,
                   'fingerprint', f.fingerprint,
                   'column_definitions', f.column_definitions,
                   'primary_key', to_jsonb(f.primary_key),
                   'partitioned', f.partitioned,
                   'captured_at', f.captured_at) ORDER BY f.schema_name, f.table_name), '[]'))
    INTO result
    FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1;
    RETURN result;
END
$fn$;

CREATE OR REPLACE FUNCTION steep_repl.import_fingerprints(node_id text, fingerprints jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t jsonb;
    imported integer := 0;
    pk text[];
    partitioned boolean;
BEGIN
    PERFORM steep_repl.require_node($1);
    IF jsonb_typeof($2) IS DISTINCT FROM 'object' OR ($2 ->> 'format') IS DISTINCT FROM '1'
       OR jsonb_typeof($2 -> 'tables') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'fingerprints to import must be the jsonb of export_fingerprints() (format 1)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1;
    FOR t IN SELECT * FROM jsonb_array_elements($2 -> 'tables') LOOP
        IF jsonb_typeof(t -> 'schema_name') IS DISTINCT FROM 'string'
           OR jsonb_typeof(t -> 'table_name') IS DISTINCT FROM 'string'
           OR jsonb_typeof(t -> 'column_definitions') IS DISTINCT FROM 'array'
           OR jsonb_typeof(t -> 'primary_key') IS DISTINCT FROM 'array'
           OR (t ? 'partitioned' AND jsonb_typeof(t -> 'partitioned') IS DISTINCT FROM 'boolean') THEN
            RAISE EXCEPTION 'malformed table entry in fingerprints: %', left(t::text, 200)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        pk := ARRAY(SELECT jsonb_array_elements_text(t -> 'primary_key'));
        partitioned := coalesce((t ->> 'partitioned')::boolean, false);
        IF steep_repl.fingerprint_of(t -> 'column_definitions', pk, partitioned)
           IS DISTINCT FROM t ->> 'fingerprint' THEN
            RAISE EXCEPTION 'fingerprint of %.% does not match its column definitions',
                quote_ident(t ->> 'schema_name'), quote_ident(t ->> 'table_name')
                USING ERRCODE = 'data_corrupted',
                      HINT = 'The export is damaged or comes from an incompatible steep_repl version.';
        END IF;
        INSERT INTO steep_repl.schema_fingerprints
            (node_id, schema_name, table_name, fingerprint, column_definitions, primary_key,
             partitioned, captured_at)
        VALUES ($1, t ->> 'schema_name', t ->> 'table_name', t ->> 'fingerprint',
                t -> 'column_definitions', pk, partitioned,
                coalesce((t ->> 'captured_at')::timestamptz, now()));
        imported := imported + 1;
    END LOOP;
    RETURN imported;
END
$fn$;
