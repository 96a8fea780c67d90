-- Node registry (0.1.0). SECURITY INVOKER: callers need the table privileges the README lists.

CREATE FUNCTION steep_repl.register_node(
    node_id   text,
    node_name text,
    host      text    DEFAULT NULL,
    port      integer DEFAULT 5432,
    priority  integer DEFAULT 50
) RETURNS steep_repl.nodes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    result steep_repl.nodes;
BEGIN
    IF $1 IS NULL OR length($1) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid node_id %: give 1 to 200 characters', coalesce(quote_literal($1), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $2 IS NULL OR length($2) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid node_name %: give 1 to 200 characters', coalesce(quote_literal($2), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $4 IS NULL OR $4 NOT BETWEEN 1 AND 65535 THEN
        RAISE EXCEPTION 'invalid port %: give a number between 1 and 65535', coalesce($4::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF $5 IS NULL OR $5 NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'invalid priority %: give a number between 1 and 100', coalesce($5::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO steep_repl.nodes AS n (node_id, node_name, host, port, priority, last_seen)
    VALUES ($1, $2, $3, $4, $5, now())
    ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE
        SET node_name = EXCLUDED.node_name,
            host      = EXCLUDED.host,
            port      = EXCLUDED.port,
            priority  = EXCLUDED.priority,
            last_seen = now()
    RETURNING n.* INTO result;
    RETURN result;
END
$fn$;
COMMENT ON FUNCTION steep_repl.register_node(text, text, text, integer, integer)
    IS 'Register a node, or update it when node_id is known (upsert)';

CREATE FUNCTION steep_repl.heartbeat(node_id text) RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH touched AS (
        UPDATE steep_repl.nodes SET last_seen = now() WHERE nodes.node_id = $1 RETURNING 1
    )
    SELECT EXISTS (SELECT FROM touched);
$fn$;
COMMENT ON FUNCTION steep_repl.heartbeat(text) IS 'Record that a node is alive; false when the node is unknown';

CREATE FUNCTION steep_repl.node_status(node_id text DEFAULT NULL)
RETURNS TABLE (node_id text, node_name text, host text, port integer, status text,
               last_seen timestamptz, is_healthy boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT n.node_id, n.node_name, n.host, n.port, n.status, n.last_seen,
           coalesce(n.last_seen > now() - interval '30 seconds', false)
    FROM steep_repl.nodes n
    WHERE $1 IS NULL OR n.node_id = $1
    ORDER BY n.node_id;
$fn$;
COMMENT ON FUNCTION steep_repl.node_status(text)
    IS 'Nodes with their health: healthy means a heartbeat in the last 30 seconds';

CREATE FUNCTION steep_repl.remove_node(node_id text) RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (DELETE FROM steep_repl.nodes WHERE nodes.node_id = $1 RETURNING 1)
    SELECT EXISTS (SELECT FROM gone);
$fn$;
COMMENT ON FUNCTION steep_repl.remove_node(text)
    IS 'Forget a node and its fingerprints; false when the node is unknown';

CREATE FUNCTION steep_repl.set_local_node(node_id text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT FROM steep_repl.nodes n WHERE n.node_id = $1) THEN
        RAISE EXCEPTION 'unknown node %', quote_literal($1)
            USING ERRCODE = 'no_data_found',
                  HINT = 'Register it first with steep_repl.register_node().';
    END IF;
    INSERT INTO steep_repl.coordinator_state AS s (key, value)
    VALUES ('local_node_id', to_jsonb($1))
    ON CONFLICT ON CONSTRAINT coordinator_state_pkey DO UPDATE
        SET value = EXCLUDED.value, updated_at = now();
END
$fn$;
COMMENT ON FUNCTION steep_repl.set_local_node(text) IS 'Record which registered node this database is';

CREATE FUNCTION steep_repl.local_node_id() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT value #>> '{}' FROM steep_repl.coordinator_state WHERE key = 'local_node_id';
$fn$;
COMMENT ON FUNCTION steep_repl.local_node_id() IS 'The node this database is (set by steep init), or NULL';
