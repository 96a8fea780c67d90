-- steep_repl tables (0.1.0). Enumerated columns carry CHECK constraints; every table is marked as
-- an extension configuration table so pg_dump keeps its rows.

CREATE TABLE steep_repl.nodes (
    node_id    text PRIMARY KEY CHECK (length(node_id) BETWEEN 1 AND 200),
    node_name  text NOT NULL CHECK (length(node_name) BETWEEN 1 AND 200),
    host       text,
    port       integer NOT NULL DEFAULT 5432 CHECK (port BETWEEN 1 AND 65535),
    priority   integer NOT NULL DEFAULT 50 CHECK (priority BETWEEN 1 AND 100),
    status     text NOT NULL DEFAULT 'active'
               CHECK (status IN ('active', 'inactive', 'initializing', 'failed')),
    last_seen  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE steep_repl.nodes IS 'Nodes known to this database; register with steep_repl.register_node()';

CREATE TABLE steep_repl.coordinator_state (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE steep_repl.coordinator_state IS 'Key/value state of this node (for example local_node_id)';

CREATE TABLE steep_repl.schema_fingerprints (
    node_id            text NOT NULL REFERENCES steep_repl.nodes (node_id) ON DELETE CASCADE,
    schema_name        text NOT NULL,
    table_name         text NOT NULL,
    fingerprint        text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    column_definitions jsonb NOT NULL CHECK (jsonb_typeof(column_definitions) = 'array'),
    primary_key        text[] NOT NULL DEFAULT '{}',
    captured_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, schema_name, table_name)
);
COMMENT ON TABLE steep_repl.schema_fingerprints IS 'Per-table schema fingerprints by node; see capture_fingerprints()';

CREATE TABLE steep_repl.snapshots (
    snapshot_id   text PRIMARY KEY CHECK (length(snapshot_id) BETWEEN 1 AND 200),
    kind          text NOT NULL CHECK (kind IN ('generate', 'apply')),
    node_id       text REFERENCES steep_repl.nodes (node_id) ON DELETE SET NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'complete', 'failed', 'cancelled')),
    storage_path  text,
    compression   text NOT NULL DEFAULT 'none' CHECK (compression IN ('none', 'gzip', 'lz4', 'zstd')),
    table_count   integer CHECK (table_count >= 0),
    lsn           pg_lsn,
    error_message text,
    created_by    name NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    completed_at  timestamptz
);
CREATE INDEX snapshots_active_idx ON steep_repl.snapshots (created_at)
    WHERE status IN ('pending', 'running');
COMMENT ON TABLE steep_repl.snapshots IS 'One row per snapshot generate or apply';

CREATE TABLE steep_repl.merge_audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merge_id    text NOT NULL,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    pk          jsonb NOT NULL,
    category    text NOT NULL CHECK (category IN ('conflict', 'local_only', 'remote_only')),
    resolution  text CHECK (resolution IN ('keep_local', 'keep_remote', 'skip',
                                           'copied_to_local', 'copied_to_remote')),
    local_row   jsonb,
    remote_row  jsonb,
    decided_by  text,
    decided_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merge_audit_log_merge_idx ON steep_repl.merge_audit_log (merge_id, schema_name, table_name);
COMMENT ON TABLE steep_repl.merge_audit_log IS 'One row per non-matching row of a merge, with its resolution';

SELECT pg_catalog.pg_extension_config_dump('steep_repl.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.coordinator_state', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.schema_fingerprints', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.merge_audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('steep_repl.merge_audit_log_id_seq', '');
