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
