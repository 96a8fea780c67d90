-- Jobs act as their owner (0.3.0). Row security that needs no helper function (so no role needs
-- EXECUTE on an internal function to see its own rows), a job row may name only a snapshot or
-- merge of the same role, and internal functions are not executable by PUBLIC: `steep init
-- --grant ROLE` grants those the SQL API calls on a role's behalf.

DROP POLICY work_queue_owner ON steep_repl.work_queue;
CREATE POLICY work_queue_owner ON steep_repl.work_queue
    USING (pg_catalog.pg_has_role(current_user,
               (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = work_queue.created_by),
               'USAGE'))
    -- Queueing work as a role needs the right to become it (SET on 16+, where a member may
    -- inherit a role's privileges without being allowed to become it; membership on 15):
    -- a job acts as its owner, superuser status included.
    WITH CHECK ((work_queue.created_by = current_user
                 OR CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
                         THEN pg_catalog.pg_has_role(current_user,
                                  (SELECT r.oid FROM pg_catalog.pg_roles r
                                   WHERE r.rolname = work_queue.created_by), 'SET')
                         ELSE pg_catalog.pg_has_role(current_user,
                                  (SELECT r.oid FROM pg_catalog.pg_roles r
                                   WHERE r.rolname = work_queue.created_by), 'MEMBER')
                    END)
                AND work_queue.database = pg_catalog.current_database()
                AND (work_queue.snapshot_id IS NULL
                     OR EXISTS (SELECT FROM steep_repl.snapshots s
                                WHERE s.snapshot_id = work_queue.snapshot_id
                                  AND s.created_by = work_queue.created_by))
                AND (work_queue.merge_id IS NULL
                     OR EXISTS (SELECT FROM steep_repl.merges m
                                WHERE m.merge_id = work_queue.merge_id
                                  AND m.created_by = work_queue.created_by)));

DROP POLICY snapshots_owner ON steep_repl.snapshots;
CREATE POLICY snapshots_owner ON steep_repl.snapshots
    USING (pg_catalog.pg_has_role(current_user,
               (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = snapshots.created_by),
               'USAGE'))
    WITH CHECK (pg_catalog.pg_has_role(current_user,
                    (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = snapshots.created_by),
                    'USAGE'));

DROP POLICY merges_owner ON steep_repl.merges;
CREATE POLICY merges_owner ON steep_repl.merges
    USING (pg_catalog.pg_has_role(current_user,
               (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = merges.created_by),
               'USAGE'))
    WITH CHECK (pg_catalog.pg_has_role(current_user,
                    (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = merges.created_by),
                    'USAGE'));

-- A merge's audit rows (row images of both nodes) are seen by whoever may see the merge.
ALTER TABLE steep_repl.merge_audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_audit_log_owner ON steep_repl.merge_audit_log
    USING (EXISTS (SELECT FROM steep_repl.merges m WHERE m.merge_id = merge_audit_log.merge_id))
    WITH CHECK (EXISTS (SELECT FROM steep_repl.merges m
                        WHERE m.merge_id = merge_audit_log.merge_id));

-- A snapshot row records which node it ran on; removing a node from the registry (any granted
-- role may) must neither rewrite other roles' rows nor block their next snapshot.
ALTER TABLE steep_repl.snapshots DROP CONSTRAINT snapshots_node_id_fkey;

-- No policy calls it any more.
DROP FUNCTION steep_repl._acts_as(name);
REVOKE ALL ON FUNCTION steep_repl._work_queue_wake() FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._compression(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._manifest_snapshot_id(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._new_snapshot_id() FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._require_workers() FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._snapshot_path(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._wake_on_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION steep_repl._restrict_session(text) FROM PUBLIC;

-- Roles that were granted steep before 0.3.0 (USAGE on the schema) called these through PUBLIC:
-- an upgrade keeps what worked for them. (A fresh install has no such role: a no-op.)
DO $grant$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT a.rolname FROM pg_catalog.pg_roles a
             WHERE NOT a.rolsuper
               AND pg_catalog.has_schema_privilege(a.oid, 'steep_repl', 'USAGE')
               AND a.oid <> (SELECT n.nspowner FROM pg_catalog.pg_namespace n
                             WHERE n.nspname = 'steep_repl')
    LOOP
        -- Which node this database is belongs to `steep init`, not to every granted role.
        EXECUTE pg_catalog.format(
            'REVOKE INSERT, UPDATE, DELETE ON steep_repl.coordinator_state FROM %I', r.rolname);
        EXECUTE pg_catalog.format(
            'GRANT EXECUTE ON FUNCTION steep_repl._snapshot_path(text, boolean),
                 steep_repl._compression(text), steep_repl._new_snapshot_id(),
                 steep_repl._manifest_snapshot_id(text), steep_repl._require_workers(),
                 steep_repl._wake_on_commit() TO %I', r.rolname);
    END LOOP;
END
$grant$;
