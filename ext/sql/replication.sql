-- Replication init (0.7.0). steep brings two nodes into logical replication with PostgreSQL's
-- own publications, slots and subscriptions, all named steep_<setup>[_<node tag>]; what steep
-- keeps besides them is here: the marker rows that prove each direction carries changes, and
-- the key scheme it gave the replicated tables' sequences (so `replication drop` can undo it).

-- Written by replication init on each node and published with the replicated tables: a row
-- written on one node arriving on the other proves that direction works end to end.
CREATE TABLE steep_repl.replication_markers (
    setup_name text NOT NULL,
    node_tag   text NOT NULL,
    marker     bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (setup_name, node_tag, marker)
);
COMMENT ON TABLE steep_repl.replication_markers IS 'Rows replication init writes on each node to check that the other receives them';
REVOKE ALL ON steep_repl.replication_markers FROM PUBLIC;

-- The non-overlapping key scheme of a bidirectional setup: every sequence numbering a replicated
-- table's column (serial or identity) counts in steps of `step` from values congruent to
-- `node_offset`, different on each node. `increment_before` is what `replication drop` restores.
CREATE TABLE steep_repl.replication_sequences (
    setup_name       text NOT NULL,
    sequence_name    text NOT NULL,
    table_name       text NOT NULL,
    column_name      text NOT NULL,
    node_offset      integer NOT NULL CHECK (node_offset >= 1),
    step             integer NOT NULL CHECK (step >= 2 AND node_offset <= step),
    increment_before bigint NOT NULL,
    set_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (setup_name, sequence_name)
);
COMMENT ON TABLE steep_repl.replication_sequences IS 'The key scheme replication init gave each replicated sequence on this node, and its increment before';
REVOKE ALL ON steep_repl.replication_sequences FROM PUBLIC;
GRANT SELECT ON steep_repl.replication_sequences TO PUBLIC;

-- What replication steep set up on this node: its slots (with how far the subscriber is behind
-- and how much WAL the slot holds), subscriptions (enabled, errors, last message), publications
-- and key scheme. Readable by anyone who may read the catalogs it comes from.
CREATE FUNCTION steep_repl.replication_status()
RETURNS TABLE (kind text, name text, active boolean, lag_bytes numeric, detail jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'slot', s.slot_name::text, s.active,
           pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn),
           jsonb_build_object(
               'wal_status', s.wal_status,
               'restart_lsn', s.restart_lsn::text,
               'confirmed_flush_lsn', s.confirmed_flush_lsn::text,
               'retained_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn),
               'active_pid', s.active_pid)
      FROM pg_replication_slots s
     WHERE s.slot_name LIKE 'steep\_%' AND s.database = current_database()
    UNION ALL
    SELECT 'subscription', sub.subname::text, sub.subenabled AND st.pid IS NOT NULL,
           NULL::numeric,
           jsonb_build_object(
               'enabled', sub.subenabled,
               'slot_name', sub.subslotname::text,
               'publications', to_jsonb(sub.subpublications),
               'received_lsn', st.received_lsn::text,
               'latest_end_lsn', st.latest_end_lsn::text,
               'last_msg_receipt_time', st.last_msg_receipt_time,
               'apply_error_count', ss.apply_error_count,
               'sync_error_count', ss.sync_error_count)
      FROM pg_subscription sub
      LEFT JOIN pg_stat_subscription st ON st.subid = sub.oid AND st.relid IS NULL
      LEFT JOIN pg_stat_subscription_stats ss ON ss.subid = sub.oid
     WHERE sub.subname LIKE 'steep\_%'
       AND sub.subdbid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
    UNION ALL
    SELECT 'publication', p.pubname::text, NULL::boolean, NULL::numeric,
           jsonb_build_object('tables',
               (SELECT count(*) FROM pg_publication_rel r WHERE r.prpubid = p.oid))
      FROM pg_publication p
     WHERE p.pubname LIKE 'steep\_%'
    UNION ALL
    SELECT 'sequence', q.sequence_name, NULL::boolean, NULL::numeric,
           jsonb_build_object(
               'setup', q.setup_name,
               'table', q.table_name,
               'column', q.column_name,
               'node_offset', q.node_offset,
               'step', q.step,
               'increment_before', q.increment_before)
      FROM steep_repl.replication_sequences q
$$;
COMMENT ON FUNCTION steep_repl.replication_status() IS 'steep''s replication on this node: slots (lag, retained WAL), subscriptions (errors), publications, the key scheme';

-- Replication init and drop as jobs (the slot with an exported snapshot is a replication-protocol
-- command, which SQL cannot run): the worker drives the library's steps, the same the CLI drives.
ALTER TABLE steep_repl.work_queue DROP CONSTRAINT work_queue_operation_check;
ALTER TABLE steep_repl.work_queue ADD CONSTRAINT work_queue_operation_check
    CHECK (operation IN ('snapshot_generate', 'snapshot_apply', 'bidirectional_merge',
                         'selftest', 'merge_analysis', 'merge', 'replication_init',
                         'replication_drop'));

-- Both are for superusers only: the job opens a replication connection to this server with the
-- worker's credentials (a walsender cannot be restricted to a role) and reaches the peer with the
-- server's own. Other roles run `steep replication init` in client mode with their own.
CREATE FUNCTION steep_repl.start_replication_init(peer text, source text DEFAULT 'snapshot',
                                                  options jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    o jsonb := coalesce($3, '{}');
    bad text;
    job bigint;
BEGIN
    IF NOT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false) THEN
        RAISE EXCEPTION 'replication init as a job needs a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the job reaches this server''s walsender and the peer with the server''s own credentials; run steep replication in client mode (the default) with your own';
    END IF;
    PERFORM steep_repl._require_workers();
    IF $2 IS NULL OR $2 NOT IN ('snapshot', 'merge', 'empty') THEN
        RAISE EXCEPTION 'unknown source %', coalesce(quote_literal($2), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use snapshot, merge or empty';
    END IF;
    IF jsonb_typeof(o) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('%s (%s)', k, coalesce(t, 'unknown')), ', ') INTO bad
      FROM (SELECT e.key AS k,
                   CASE e.key WHEN 'setup' THEN 'string'
                              WHEN 'one_way' THEN 'boolean'
                              WHEN 'key_step' THEN 'number'
                              WHEN 'a_conninfo' THEN 'string'
                              WHEN 'b_conninfo' THEN 'string'
                              WHEN 'strategy' THEN 'string'
                              WHEN 'schema' THEN 'string'
                              WHEN 'parallel' THEN 'number'
                              WHEN 'chunk_size_mb' THEN 'number'
                              WHEN 'marker_timeout_seconds' THEN 'number' END AS t,
                   jsonb_typeof(e.value) AS have
              FROM jsonb_each(o) e) x
     WHERE t IS DISTINCT FROM have;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid options: %', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'known options: setup, a_conninfo (how the peer''s server reaches this one), b_conninfo, strategy, schema (strings), one_way (boolean), key_step, parallel, chunk_size_mb, marker_timeout_seconds (numbers)';
    END IF;
    -- The options are kept in work_queue (and its dumps): no password in them.
    IF (o ->> 'a_conninfo') ~* '(^|[\s?&])password\s*=' OR (o ->> 'b_conninfo') ~* '(^|[\s?&])password\s*='
       OR (o ->> 'a_conninfo') ~* '^postgres(ql)?://[^/@]*:[^/@]*@'
       OR (o ->> 'b_conninfo') ~* '^postgres(ql)?://[^/@]*:[^/@]*@' THEN
        RAISE EXCEPTION 'options.a_conninfo and b_conninfo must not hold a password: the job''s options are kept in steep_repl.work_queue'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'give the servers'' OS users a passfile or service file, or use certificates';
    END IF;
    IF coalesce(o ->> 'schema', 'verify') NOT IN ('verify', 'create') THEN
        RAISE EXCEPTION 'options.schema must be verify or create' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF o ->> 'a_conninfo' IS NULL THEN
        RAISE EXCEPTION 'options.a_conninfo is needed: how the peer''s server reaches this one (kept in its subscription)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The peer as the caller may use it (a defined peer, or a connection string without a
    -- password): checked now and again by the job.
    PERFORM steep_repl._authorize_peer($1);
    INSERT INTO steep_repl.work_queue (operation, params)
    VALUES ('replication_init', jsonb_build_object('peer', $1, 'source', $2, 'options', o))
    RETURNING id INTO job;
    RETURN job;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_replication_init(text, text, jsonb)
    IS 'Queue replication init between this database and a peer (source snapshot, merge or empty; options: setup, one_way, key_step, a_conninfo, b_conninfo, strategy, schema, parallel, chunk_size_mb, marker_timeout_seconds); superusers; returns the job id';

CREATE FUNCTION steep_repl.start_replication_drop(setup text DEFAULT 'main')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    job bigint;
BEGIN
    IF NOT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false) THEN
        RAISE EXCEPTION 'replication drop as a job needs a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'the job reaches this server''s walsender and the peer with the server''s own credentials; run steep replication in client mode (the default) with your own';
    END IF;
    PERFORM steep_repl._require_workers();
    IF $1 IS NULL OR $1 !~ '^[a-z0-9_]{1,24}$' THEN
        RAISE EXCEPTION 'invalid setup name %', coalesce(quote_literal($1), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use 1 to 24 lower-case letters, digits or underscores';
    END IF;
    INSERT INTO steep_repl.work_queue (operation, params)
    VALUES ('replication_drop', jsonb_build_object('setup', $1))
    RETURNING id INTO job;
    RETURN job;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_replication_drop(text)
    IS 'Queue the removal of a setup from this database (subscriptions, slots, publication, key scheme); superusers; returns the job id';
