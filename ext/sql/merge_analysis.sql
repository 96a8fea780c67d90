-- Merge, part 1 (0.5.0): overlap analysis of two nodes that both hold rows.
--
-- A job connects to the peer itself, with the server's own credentials (its OS user's passfile,
-- peer authentication, certificates): a role that is not superuser must not choose where such a
-- connection goes. Superusers define peers (a connection string without a password, and the roles
-- that may use it); other roles name a peer they may use, or run the analysis in client mode,
-- where the CLI connects with their own credentials.

ALTER TABLE steep_repl.work_queue DROP CONSTRAINT work_queue_operation_check;
ALTER TABLE steep_repl.work_queue ADD CONSTRAINT work_queue_operation_check
    CHECK (operation IN ('snapshot_generate', 'snapshot_apply', 'bidirectional_merge',
                         'selftest', 'merge_analysis'));

-- An analysis is a merges row of its own kind (the merge itself comes with part two).
ALTER TABLE steep_repl.merges
    ADD COLUMN kind text NOT NULL DEFAULT 'merge' CHECK (kind IN ('merge', 'analysis'));

CREATE TABLE steep_repl.peers (
    peer_name     text PRIMARY KEY CHECK (length(peer_name) BETWEEN 1 AND 63),
    conninfo      text NOT NULL,
    allowed_roles name[] NOT NULL DEFAULT '{}',
    created_by    name NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE steep_repl.peers IS
    'Peers a superuser defined for jobs to connect to: a connection string without a password, and the roles that may use it';
-- Roles see the peers they may use; nobody but a superuser (who bypasses row security) writes,
-- and only rows a superuser wrote count: whoever writes a row is stamped on it (a role with
-- BYPASSRLS and write privileges could otherwise add one).
ALTER TABLE steep_repl.peers ENABLE ROW LEVEL SECURITY;
CREATE POLICY peers_usable ON steep_repl.peers FOR SELECT
    USING (EXISTS (SELECT FROM pg_catalog.unnest(peers.allowed_roles) AS a(role)
                   WHERE pg_catalog.pg_has_role(current_user,
                             (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = a.role),
                             'USAGE')));
CREATE FUNCTION steep_repl._peers_stamp() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    NEW.created_by := current_user;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER peers_stamp BEFORE INSERT OR UPDATE ON steep_repl.peers
    FOR EACH ROW EXECUTE FUNCTION steep_repl._peers_stamp();
ALTER TABLE steep_repl.peers ENABLE ALWAYS TRIGGER peers_stamp;

CREATE TABLE steep_repl.merge_overlap (
    merge_id            text NOT NULL REFERENCES steep_repl.merges (merge_id) ON DELETE CASCADE,
    schema_name         text NOT NULL,
    table_name          text NOT NULL,
    match               bigint NOT NULL CHECK (match >= 0),
    conflict            bigint NOT NULL CHECK (conflict >= 0),
    local_only          bigint NOT NULL CHECK (local_only >= 0),
    remote_only         bigint NOT NULL CHECK (remote_only >= 0),
    local_rows          bigint NOT NULL CHECK (local_rows >= 0),
    remote_rows         bigint NOT NULL CHECK (remote_rows >= 0),
    suspect_serial_keys boolean NOT NULL,
    unique_collisions   jsonb NOT NULL DEFAULT '[]',
    cost                jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (merge_id, schema_name, table_name)
);
COMMENT ON TABLE steep_repl.merge_overlap IS 'Per table of an overlap analysis: rows that match, conflict, or exist on one side only';

CREATE TABLE steep_repl.merge_keys (
    merge_id    text NOT NULL REFERENCES steep_repl.merges (merge_id) ON DELETE CASCADE,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    category    text NOT NULL CHECK (category IN ('conflict', 'local_only', 'remote_only')),
    key         text NOT NULL
);
CREATE INDEX merge_keys_idx ON steep_repl.merge_keys (merge_id, schema_name, table_name, category);
COMMENT ON TABLE steep_repl.merge_keys IS 'The primary keys (as rows, e.g. (NZ,AKL)) of the rows an overlap analysis found not matching, for review';

-- Results are seen by whoever may see their merge (its row security: the owner and its members).
ALTER TABLE steep_repl.merge_overlap ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_overlap_owner ON steep_repl.merge_overlap
    USING (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_overlap.merge_id))
    WITH CHECK (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_overlap.merge_id));
ALTER TABLE steep_repl.merge_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_keys_owner ON steep_repl.merge_keys
    USING (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_keys.merge_id))
    WITH CHECK (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_keys.merge_id));

CREATE FUNCTION steep_repl.start_merge_analysis(peer text, tables text[] DEFAULT NULL,
                                                parallel integer DEFAULT 2)
RETURNS steep_repl.merges
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m steep_repl.merges;
BEGIN
    PERFORM steep_repl._require_workers();
    IF $3 IS NULL OR $3 NOT BETWEEN 1 AND 16 THEN
        RAISE EXCEPTION 'invalid parallel %: give 1 to 16', coalesce($3::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO steep_repl.merges (merge_id, peer, tables, kind, dry_run, status)
    VALUES (steep_repl._new_merge_id(), steep_repl._authorize_peer($1), coalesce($2, '{}'),
            'analysis', true, 'pending')
    RETURNING * INTO m;
    INSERT INTO steep_repl.work_queue (operation, merge_id, params)
    VALUES ('merge_analysis', m.merge_id,
            jsonb_build_object('peer', $1, 'tables', coalesce($2, '{}'), 'parallel', $3));
    RETURN m;
END
$fn$;
COMMENT ON FUNCTION steep_repl.start_merge_analysis(text, text[], integer)
    IS 'Queue an overlap analysis of this database and a peer (a peer a superuser defined, or for superusers a connection string without a password); returns at once';

CREATE FUNCTION steep_repl.drop_peer(peer_name text) RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH d AS (DELETE FROM steep_repl.peers p WHERE p.peer_name = $1 RETURNING 1)
    SELECT EXISTS (SELECT FROM d)
$fn$;
COMMENT ON FUNCTION steep_repl.drop_peer(text) IS 'Remove a peer definition (superusers; false when there was none)';

-- Peer definitions are configuration: a backup carries them.
SELECT pg_catalog.pg_extension_config_dump('steep_repl.peers', '');
