-- Background operations (0.2.0): progress columns on snapshots, merges, the work queue, and row
-- security so a role sees and changes only the operations of roles whose privileges it has.
-- This file is both part of a fresh install and of the 0.1.0 -> 0.2.0 upgrade, so new columns are
-- added with ALTER TABLE in both (the same column order either way).

ALTER TABLE steep_repl.snapshots
    ADD COLUMN phase            text,
    ADD COLUMN parallel         integer NOT NULL DEFAULT 4 CHECK (parallel BETWEEN 1 AND 64),
    ADD COLUMN tables_completed integer NOT NULL DEFAULT 0 CHECK (tables_completed >= 0),
    ADD COLUMN overall_percent  double precision NOT NULL DEFAULT 0
                                CHECK (overall_percent BETWEEN 0 AND 100),
    ADD COLUMN current_table    text,
    ADD COLUMN bytes_processed  bigint NOT NULL DEFAULT 0 CHECK (bytes_processed >= 0),
    ADD COLUMN bytes_total      bigint CHECK (bytes_total >= 0),
    ADD COLUMN rows_processed   bigint NOT NULL DEFAULT 0 CHECK (rows_processed >= 0),
    ADD COLUMN eta_seconds      integer CHECK (eta_seconds >= 0),
    ADD COLUMN mode             text NOT NULL DEFAULT 'direct' CHECK (mode IN ('direct', 'client'));

CREATE TABLE steep_repl.merges (
    merge_id         text PRIMARY KEY CHECK (length(merge_id) BETWEEN 1 AND 200),
    peer_node        text,
    peer             text NOT NULL,
    tables           text[] NOT NULL DEFAULT '{}',
    strategy         text NOT NULL DEFAULT 'prefer-local'
                     CHECK (strategy IN ('prefer-local', 'prefer-remote', 'last-modified', 'ask')),
    dry_run          boolean NOT NULL DEFAULT false,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'complete', 'failed', 'cancelled')),
    current_table    text,
    tables_completed integer NOT NULL DEFAULT 0 CHECK (tables_completed >= 0),
    tables_total     integer NOT NULL DEFAULT 0 CHECK (tables_total >= 0),
    rows_merged      bigint NOT NULL DEFAULT 0 CHECK (rows_merged >= 0),
    conflict_count   bigint NOT NULL DEFAULT 0 CHECK (conflict_count >= 0),
    error_message    text,
    created_by       name NOT NULL DEFAULT current_user,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz
);
COMMENT ON TABLE steep_repl.merges IS 'One row per merge of two nodes; peer never holds a password';

CREATE TABLE steep_repl.work_queue (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation     text NOT NULL CHECK (operation IN ('snapshot_generate', 'snapshot_apply',
                                                     'bidirectional_merge', 'selftest')),
    snapshot_id   text REFERENCES steep_repl.snapshots (snapshot_id) ON DELETE CASCADE,
    merge_id      text REFERENCES steep_repl.merges (merge_id) ON DELETE CASCADE,
    params        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'complete', 'failed', 'cancelled')),
    created_by    name NOT NULL DEFAULT current_user,
    database      name NOT NULL DEFAULT current_database(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    completed_at  timestamptz,
    error_message text,
    worker_pid    integer,
    progress      jsonb,
    result        jsonb
);
CREATE INDEX work_queue_pending_idx ON steep_repl.work_queue (id) WHERE status = 'pending';
CREATE INDEX work_queue_snapshot_idx ON steep_repl.work_queue (snapshot_id)
    WHERE snapshot_id IS NOT NULL;
COMMENT ON TABLE steep_repl.work_queue
    IS 'Operations for the background workers; each runs with the privileges of created_by';

-- A job runs as created_by, so nobody may queue or change a job for a role whose privileges they
-- do not already have. Superusers and the extension owner (the workers) bypass row security.
CREATE FUNCTION steep_repl._acts_as(role_name name) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT FROM pg_roles r
                   WHERE r.rolname = $1 AND pg_has_role(current_user, r.oid, 'USAGE'));
$fn$;
COMMENT ON FUNCTION steep_repl._acts_as(name)
    IS 'Whether the current role has the privileges of role_name (row security of steep_repl)';

ALTER TABLE steep_repl.work_queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY work_queue_owner ON steep_repl.work_queue
    USING (steep_repl._acts_as(created_by)) WITH CHECK (steep_repl._acts_as(created_by));
ALTER TABLE steep_repl.snapshots ENABLE ROW LEVEL SECURITY;
CREATE POLICY snapshots_owner ON steep_repl.snapshots
    USING (steep_repl._acts_as(created_by)) WITH CHECK (steep_repl._acts_as(created_by));
ALTER TABLE steep_repl.merges ENABLE ROW LEVEL SECURITY;
CREATE POLICY merges_owner ON steep_repl.merges
    USING (steep_repl._acts_as(created_by)) WITH CHECK (steep_repl._acts_as(created_by));

SELECT pg_catalog.pg_extension_config_dump('steep_repl.merges', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.work_queue', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.work_queue_id_seq', '');
