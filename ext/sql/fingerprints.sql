-- Schema fingerprints (0.1.0). A table's fingerprint covers column names, order, full types with
-- typmod, nullability and the primary key. Defaults are recorded and reported, never fingerprinted.

CREATE FUNCTION steep_repl.fingerprint_of(column_definitions jsonb, primary_key text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    -- Identifiers are always double-quoted (not quote_ident): its keyword list differs between
    -- PostgreSQL versions, and the same schema must fingerprint the same on every version.
    SELECT encode(sha256(convert_to(
        coalesce((SELECT string_agg('"' || replace(c ->> 'name', '"', '""') || '" ' || (c ->> 'type')
                                    || CASE WHEN (c ->> 'not_null')::boolean THEN ' NOT NULL' ELSE '' END,
                                    E'\n' ORDER BY (c ->> 'position')::integer)
                  FROM jsonb_array_elements($1) c), '')
        || E'\nPRIMARY KEY ('
        || coalesce((SELECT string_agg('"' || replace(k, '"', '""') || '"', ', ' ORDER BY o)
                     FROM unnest($2) WITH ORDINALITY u(k, o)), '')
        || ')', 'UTF8')), 'hex');
$fn$;
COMMENT ON FUNCTION steep_repl.fingerprint_of(jsonb, text[])
    IS 'The fingerprint of a table given its column definitions and primary key columns';

CREATE FUNCTION steep_repl.table_fingerprints()
RETURNS TABLE (schema_name text, table_name text, fingerprint text, column_definitions jsonb,
               primary_key text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH tabs AS (
        SELECT c.oid, n.nspname::text AS schema_name, c.relname::text AS table_name
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'steep_repl')
          AND n.nspname !~ '^pg_(toast|temp_)'
          -- Tables that belong to an extension are the extension's business.
          AND NOT EXISTS (SELECT FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ),
    cols AS (
        SELECT a.attrelid,
               jsonb_agg(jsonb_build_object(
                   'name', a.attname::text,
                   'position', a.pos,
                   'type', format_type(a.atttypid, a.atttypmod),
                   'not_null', a.attnotnull,
                   'default', pg_get_expr(d.adbin, d.adrelid)) ORDER BY a.pos) AS defs
        FROM (SELECT attrelid, attnum, attname, atttypid, atttypmod, attnotnull,
                     row_number() OVER (PARTITION BY attrelid ORDER BY attnum) AS pos
              FROM pg_attribute
              WHERE attrelid IN (SELECT oid FROM tabs) AND attnum > 0 AND NOT attisdropped) a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        GROUP BY a.attrelid
    ),
    pks AS (
        SELECT con.conrelid, array_agg(a.attname::text ORDER BY k.ord) AS cols
        FROM pg_constraint con
        CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        WHERE con.contype = 'p' AND con.conrelid IN (SELECT oid FROM tabs)
        GROUP BY con.conrelid
    )
    SELECT t.schema_name, t.table_name,
           steep_repl.fingerprint_of(coalesce(c.defs, '[]'), coalesce(p.cols, '{}')),
           coalesce(c.defs, '[]'), coalesce(p.cols, '{}')
    FROM tabs t
    LEFT JOIN cols c ON c.attrelid = t.oid
    LEFT JOIN pks p ON p.conrelid = t.oid
    ORDER BY 1, 2;
$fn$;
COMMENT ON FUNCTION steep_repl.table_fingerprints()
    IS 'Fingerprints of this database''s user tables, computed now (nothing is stored)';

CREATE FUNCTION steep_repl.require_node(node_id text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF $1 IS NULL OR NOT EXISTS (SELECT FROM steep_repl.nodes n WHERE n.node_id = $1) THEN
        RAISE EXCEPTION 'unknown node %', coalesce(quote_literal($1), 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'Register it with steep_repl.register_node() (steep node register).';
    END IF;
END
$fn$;
COMMENT ON FUNCTION steep_repl.require_node(text) IS 'Raise a clear error unless the node is registered';

CREATE FUNCTION steep_repl.capture_fingerprints(node_id text) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    captured integer;
BEGIN
    PERFORM steep_repl.require_node($1);
    DELETE FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1;
    INSERT INTO steep_repl.schema_fingerprints
        (node_id, schema_name, table_name, fingerprint, column_definitions, primary_key)
    SELECT $1, t.schema_name, t.table_name, t.fingerprint, t.column_definitions, t.primary_key
    FROM steep_repl.table_fingerprints() t;
    GET DIAGNOSTICS captured = ROW_COUNT;
    RETURN captured;
END
$fn$;
COMMENT ON FUNCTION steep_repl.capture_fingerprints(text)
    IS 'Store the fingerprints of every user table of this database under node_id; returns the count';

CREATE FUNCTION steep_repl.compare_fingerprints(local_node text, peer_node text)
RETURNS TABLE (schema_name text, table_name text, local_fingerprint text, peer_fingerprint text,
               status text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM steep_repl.require_node($1);
    PERFORM steep_repl.require_node($2);
    RETURN QUERY
    SELECT coalesce(l.schema_name, p.schema_name), coalesce(l.table_name, p.table_name),
           l.fingerprint, p.fingerprint,
           CASE WHEN l.fingerprint IS NULL THEN 'peer_only'
                WHEN p.fingerprint IS NULL THEN 'local_only'
                WHEN l.fingerprint = p.fingerprint THEN 'match'
                ELSE 'mismatch' END
    FROM (SELECT * FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1) l
    FULL JOIN (SELECT * FROM steep_repl.schema_fingerprints f WHERE f.node_id = $2) p
           ON l.schema_name = p.schema_name AND l.table_name = p.table_name
    ORDER BY 1, 2;
END
$fn$;
COMMENT ON FUNCTION steep_repl.compare_fingerprints(text, text)
    IS 'Per table: match, mismatch, local_only or peer_only between two nodes'' stored fingerprints';

CREATE FUNCTION steep_repl.fingerprint_diff(local_node text, peer_node text,
                                            only_schema text DEFAULT NULL, only_table text DEFAULT NULL)
RETURNS TABLE (schema_name text, table_name text, column_name text, difference text,
               local_value text, peer_value text, breaks_replication boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM steep_repl.require_node($1);
    PERFORM steep_repl.require_node($2);
    RETURN QUERY
    WITH l AS (
        SELECT * FROM steep_repl.schema_fingerprints f
        WHERE f.node_id = $1 AND ($3 IS NULL OR f.schema_name = $3) AND ($4 IS NULL OR f.table_name = $4)
    ), p AS (
        SELECT * FROM steep_repl.schema_fingerprints f
        WHERE f.node_id = $2 AND ($3 IS NULL OR f.schema_name = $3) AND ($4 IS NULL OR f.table_name = $4)
    ), tabs AS (
        SELECT coalesce(l.schema_name, p.schema_name) AS s, coalesce(l.table_name, p.table_name) AS t,
               l.column_definitions AS lc, p.column_definitions AS pc,
               l.primary_key AS lpk, p.primary_key AS ppk,
               l.node_id IS NOT NULL AS has_l, p.node_id IS NOT NULL AS has_p
        FROM l FULL JOIN p ON l.schema_name = p.schema_name AND l.table_name = p.table_name
    ), cols AS (
        SELECT tb.s, tb.t, coalesce(j.l_name, j.p_name) AS col, j.*
        FROM tabs tb
        CROSS JOIN LATERAL (
            SELECT x.name AS l_name, x.type AS l_type, x.not_null AS l_nn, x."default" AS l_def,
                   x.position AS l_pos,
                   y.name AS p_name, y.type AS p_type, y.not_null AS p_nn, y."default" AS p_def,
                   y.position AS p_pos
            FROM jsonb_to_recordset(tb.lc)
                     AS x(name text, position integer, type text, not_null boolean, "default" text)
            FULL JOIN jsonb_to_recordset(tb.pc)
                     AS y(name text, position integer, type text, not_null boolean, "default" text)
                   ON x.name = y.name
        ) j
        WHERE tb.has_l AND tb.has_p
    ), ranked AS (
        -- Order matters among the columns both sides have; a missing column is reported once,
        -- not as a shift of every column after it.
        SELECT c.*,
               rank() OVER (PARTITION BY c.s, c.t ORDER BY c.l_pos) AS l_rank,
               rank() OVER (PARTITION BY c.s, c.t ORDER BY c.p_pos) AS p_rank
        FROM cols c WHERE c.l_name IS NOT NULL AND c.p_name IS NOT NULL
    ), diffs AS (
        SELECT tb.s, tb.t, NULL::text AS col,
               CASE WHEN tb.has_l THEN 'table_missing_on_peer' ELSE 'table_missing_locally' END AS d,
               NULL::text AS lv, NULL::text AS pv, true AS b
        FROM tabs tb WHERE NOT (tb.has_l AND tb.has_p)
        UNION ALL
        SELECT tb.s, tb.t, NULL, 'primary_key', array_to_string(tb.lpk, ', '),
               array_to_string(tb.ppk, ', '), true
        FROM tabs tb WHERE tb.has_l AND tb.has_p AND tb.lpk IS DISTINCT FROM tb.ppk
        UNION ALL
        SELECT c.s, c.t, c.col, 'missing_on_peer', c.l_type, NULL, true
        FROM cols c WHERE c.p_name IS NULL
        UNION ALL
        SELECT c.s, c.t, c.col, 'missing_locally', NULL, c.p_type, true
        FROM cols c WHERE c.l_name IS NULL
        UNION ALL
        SELECT r.s, r.t, r.col, v.d, v.lv, v.pv, v.b
        FROM ranked r
        CROSS JOIN LATERAL (VALUES
            ('type', r.l_type, r.p_type, true, r.l_type <> r.p_type),
            ('nullable', CASE WHEN r.l_nn THEN 'NOT NULL' ELSE 'NULL' END,
                         CASE WHEN r.p_nn THEN 'NOT NULL' ELSE 'NULL' END, true, r.l_nn <> r.p_nn),
            ('default', r.l_def, r.p_def, false, r.l_def IS DISTINCT FROM r.p_def),
            ('position', r.l_pos::text, r.p_pos::text, false, r.l_rank <> r.p_rank)
        ) v(d, lv, pv, b, applies)
        WHERE v.applies
    )
    SELECT diffs.s, diffs.t, diffs.col, diffs.d, diffs.lv, diffs.pv, diffs.b
    FROM diffs
    ORDER BY 1, 2, 3 NULLS FIRST, 4;
END
$fn$;
COMMENT ON FUNCTION steep_repl.fingerprint_diff(text, text, text, text)
    IS 'Per-column differences between two nodes'' fingerprints, marking which break replication';

CREATE FUNCTION steep_repl.export_fingerprints(node_id text) RETURNS jsonb
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
                   'captured_at', f.captured_at) ORDER BY f.schema_name, f.table_name), '[]'))
    INTO result
    FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION steep_repl.export_fingerprints(text)
    IS 'A node''s stored fingerprints as jsonb, for import_fingerprints() on another node';

CREATE FUNCTION steep_repl.import_fingerprints(node_id text, fingerprints jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    t jsonb;
    imported integer := 0;
    pk text[];
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
           OR jsonb_typeof(t -> 'primary_key') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'malformed table entry in fingerprints: %', left(t::text, 200)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        pk := ARRAY(SELECT jsonb_array_elements_text(t -> 'primary_key'));
        IF steep_repl.fingerprint_of(t -> 'column_definitions', pk) IS DISTINCT FROM t ->> 'fingerprint' THEN
            RAISE EXCEPTION 'fingerprint of %.% does not match its column definitions',
                quote_ident(t ->> 'schema_name'), quote_ident(t ->> 'table_name')
                USING ERRCODE = 'data_corrupted',
                      HINT = 'The export is damaged or comes from an incompatible steep_repl version.';
        END IF;
        INSERT INTO steep_repl.schema_fingerprints
            (node_id, schema_name, table_name, fingerprint, column_definitions, primary_key, captured_at)
        VALUES ($1, t ->> 'schema_name', t ->> 'table_name', t ->> 'fingerprint',
                t -> 'column_definitions', pk, coalesce((t ->> 'captured_at')::timestamptz, now()));
        imported := imported + 1;
    END LOOP;
    RETURN imported;
END
$fn$;
COMMENT ON FUNCTION steep_repl.import_fingerprints(text, jsonb)
    IS 'Replace node_id''s stored fingerprints with an export_fingerprints() document';
