-- What a pg_dump of a database with steep_repl carries (0.4.0). A DBA's backup must restore with
-- `pg_restore -j N`, which loads tables' data in any order: no foreign key links the tables
-- whose rows are dumped. Jobs are runtime state (a restored job would claim to run where nothing
-- runs): their rows are not dumped; nodes, this node's identity, fingerprints, snapshot records,
-- merges and the merge audit log are.

SELECT pg_catalog.pg_extension_config_dump('steep_repl.work_queue', 'WHERE false');

ALTER TABLE steep_repl.work_queue DROP CONSTRAINT work_queue_snapshot_id_fkey;
ALTER TABLE steep_repl.work_queue DROP CONSTRAINT work_queue_merge_id_fkey;
ALTER TABLE steep_repl.schema_fingerprints DROP CONSTRAINT schema_fingerprints_node_id_fkey;

-- The cascade the fingerprints' foreign key did, done by the function that removes a node.
CREATE OR REPLACE FUNCTION steep_repl.remove_node(node_id text) RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH fingerprints AS (DELETE FROM steep_repl.schema_fingerprints f WHERE f.node_id = $1),
         gone AS (DELETE FROM steep_repl.nodes WHERE nodes.node_id = $1 RETURNING 1)
    SELECT EXISTS (SELECT FROM gone);
$fn$;
