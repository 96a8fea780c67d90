//! Objects a snapshot must carry as pg_dump | pg_restore does.

use crate::common::*;
use crate::snapshot::{
    client_snapshot, direct_round_trip, plain_node, snapshot_dir_of, table_hashes,
};

#[test]
fn a_foreign_key_to_a_partitioned_table_survives_schema_create_in_both_modes() {
    let home = temp_home();
    let (src, conn) = {
        let n = node();
        let c = n.connection_string("postgres");
        (n, c)
    };
    init(home.path(), &conn, &[]);
    sql(
        &conn,
        "CREATE TABLE p (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE p_a PARTITION OF p FOR VALUES IN ('a');
         CREATE TABLE p_b PARTITION OF p FOR VALUES IN ('b');
         CREATE TABLE c (id int PRIMARY KEY, pid int, region text, FOREIGN KEY (pid, region) REFERENCES p);
         INSERT INTO p SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 100) g;
         INSERT INTO c SELECT g, g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 100) g;",
    );
    let snap = client_snapshot(home.path(), &conn, "partfk");
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    ok(steep(home.path()).args([
        "snapshot", "apply", "--client", "-i", &snap, "--schema", "create", "-j", "2", "-c", &dconn,
    ]));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
    let fk_valid: bool = connect(&dconn)
        .query_one(
            "SELECT count(*) > 0 AND bool_and(convalidated) FROM pg_constraint
             WHERE conrelid = 'c'::regclass AND contype = 'f'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(fk_valid);
    // Direct mode, into another database of the source's server.
    sql(&conn, "CREATE DATABASE partfk_dst");
    let d2 = src.connection_string("partfk_dst");
    init(home.path(), &d2, &[]);
    direct_round_trip(home.path(), &conn, "partfk-direct", &d2);
    assert_eq!(table_hashes(&d2), table_hashes(&conn));
}

/// (A deferrable foreign key queues checks for commit: triggers are enabled again after them.)
const TRIGGERED: &str = "
    CREATE TABLE audit (id serial PRIMARY KEY, note text);
    CREATE TABLE tr (id int PRIMARY KEY, v text,
                     aid int REFERENCES audit DEFERRABLE INITIALLY DEFERRED);";

const TRIGGERS: &str = "
    CREATE FUNCTION bang() RETURNS trigger LANGUAGE plpgsql AS
      $f$BEGIN NEW.v := NEW.v || '!'; RETURN NEW; END$f$;
    CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS
      $f$BEGIN INSERT INTO public.audit (note) VALUES ('loaded ' || NEW.id); RETURN NULL; END$f$;
    CREATE TRIGGER bang BEFORE INSERT ON tr FOR EACH ROW EXECUTE FUNCTION bang();
    CREATE TRIGGER note AFTER INSERT ON tr FOR EACH ROW EXECUTE FUNCTION note();
    ALTER TABLE tr ENABLE ALWAYS TRIGGER note;";

#[test]
fn the_targets_user_triggers_do_not_fire_during_a_load_unless_asked() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(&conn, TRIGGERED);
    sql(
        &conn,
        "INSERT INTO audit (note) SELECT 'old ' || g FROM generate_series(1, 5) g;
         INSERT INTO tr SELECT g, 'A', 1 + g % 5 FROM generate_series(1, 50) g;",
    );
    let snap = client_snapshot(home.path(), &conn, "triggers");
    let dst = node();
    let dconn = dst.connection_string("postgres");
    init(home.path(), &dconn, &[]);
    sql(&dconn, TRIGGERED);
    sql(&dconn, TRIGGERS);
    let apply = |extra: &[&str], conn: &str| {
        let mut cmd = steep(home.path());
        cmd.args(["snapshot", "apply", "--client", "-i", &snap, "-c", conn])
            .args(extra);
        cmd
    };
    // Neither the BEFORE trigger nor the AFTER one (ALWAYS included) fires; both stay enabled.
    ok(&mut apply(&[], &dconn));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
    let enabled: Vec<String> = connect(&dconn)
        .query(
            "SELECT tgname::text || tgenabled::text FROM pg_trigger
             WHERE tgrelid = 'tr'::regclass AND NOT tgisinternal ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(enabled, ["bangO", "noteA"]);
    // Asked to, they fire.
    ok(&mut apply(&["--fire-triggers", "-j", "1"], &dconn));
    let v: String = connect(&dconn)
        .query_one("SELECT v FROM tr WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "A!");
    // A role that may load tr but does not own it cannot keep the triggers from firing: refused
    // with the option, and nothing changes.
    sql(
        &dconn,
        "CREATE ROLE loader LOGIN;
         GRANT SELECT, INSERT, DELETE, TRUNCATE ON tr, audit TO loader;
         GRANT USAGE, UPDATE ON SEQUENCE audit_id_seq TO loader;",
    );
    let lconn = format!(
        "host=127.0.0.1 port={} user=loader dbname=postgres",
        dst.port()
    );
    let before = table_hashes(&dconn);
    let err = fails(&mut apply(&["--schema", "skip"], &lconn), 1);
    assert!(
        err.contains("--fire-triggers") && err.contains("tr"),
        "{err}"
    );
    assert_eq!(table_hashes(&dconn), before);
    ok(&mut apply(&["--schema", "skip", "--fire-triggers"], &lconn));

    // Direct mode: the same default.
    sql(&dconn, "CREATE DATABASE trg_direct");
    let d2 = dst.connection_string("trg_direct");
    init(home.path(), &d2, &[]);
    sql(&d2, TRIGGERED);
    sql(&d2, TRIGGERS);
    let out = dst.snapshot_dir().join("triggers");
    let st = std::process::Command::new("cp")
        .args(["-r", &snap])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new("chown")
        .args([
            "-R",
            &std::env::var("STEEP_RUN_AS").unwrap_or("postgres".into()),
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let r = json(&ok(steep(home.path()).args([
        "snapshot", "apply", "--direct", "-i", "triggers", "--json", "-c", &d2,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(table_hashes(&d2), table_hashes(&conn));
}

/// Owners, privileges and default privileges of what a snapshot creates, by name.
fn acls(conn: &str) -> Vec<String> {
    connect(conn)
        .query(
            "SELECT format('%s %s owner=%s acl=%s', c.relkind, c.oid::regclass,
                           pg_get_userbyid(c.relowner), coalesce(c.relacl::text, '-'))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('public', 'app') AND c.relkind IN ('r', 'v', 'S')
             UNION ALL
             SELECT format('schema %s owner=%s acl=%s', nspname, pg_get_userbyid(nspowner),
                           coalesce(nspacl::text, '-'))
             FROM pg_namespace WHERE nspname IN ('public', 'app')
             UNION ALL
             SELECT format('column %s.%s acl=%s', attrelid::regclass, attname, attacl::text)
             FROM pg_attribute WHERE attacl IS NOT NULL AND attrelid::regclass::text NOT LIKE 'pg_%'
             UNION ALL
             SELECT format('default %s %s %s', pg_get_userbyid(defaclrole),
                           defaclobjtype, defaclacl::text)
             FROM pg_default_acl
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

const ROLES: &str = "CREATE ROLE alice NOLOGIN; CREATE ROLE reader NOLOGIN;";

#[test]
fn owners_and_privileges_come_through_as_pg_restore_brings_them() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(&conn, ROLES);
    sql(
        &conn,
        "CREATE SCHEMA app AUTHORIZATION alice;
         CREATE TABLE app.orders (id int PRIMARY KEY, secret text, total int);
         ALTER TABLE app.orders OWNER TO alice;
         INSERT INTO app.orders VALUES (1, 's', 10);
         GRANT USAGE ON SCHEMA app TO reader;
         GRANT SELECT (id, total) ON app.orders TO reader;
         CREATE TABLE public.notes (id int PRIMARY KEY);
         GRANT SELECT, INSERT ON public.notes TO reader;
         REVOKE ALL ON SCHEMA public FROM PUBLIC;
         ALTER SCHEMA public OWNER TO alice;
         ALTER DEFAULT PRIVILEGES FOR ROLE alice IN SCHEMA app GRANT SELECT ON TABLES TO reader;",
    );
    let snap = client_snapshot(home.path(), &conn, "acl");
    let apply = |conn: &str, extra: &[&str]| {
        let mut cmd = steep(home.path());
        cmd.args([
            "snapshot", "apply", "--client", "-i", &snap, "--schema", "create", "-c", conn,
        ])
        .args(extra);
        cmd
    };
    // A target with the roles: the same owners and privileges as the source.
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(&dconn, ROLES);
    ok(&mut apply(&dconn, &[]));
    assert_eq!(acls(&dconn), acls(&conn));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));

    // A target without them: refused before anything changes, naming the roles and the option.
    let bare = plain_node();
    let bconn = bare.connection_string("postgres");
    let err = fails(&mut apply(&bconn, &[]), 1);
    assert!(
        err.contains("alice") && err.contains("--no-owner") && err.contains("nothing was changed"),
        "{err}"
    );
    let tables: i64 = connect(&bconn)
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'orders'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    // As pg_restore --no-owner --no-privileges: everything is the applying role's.
    ok(&mut apply(&bconn, &["--no-owner", "--no-privileges"]));
    assert_eq!(table_hashes(&bconn), table_hashes(&conn));
    let owner: String = connect(&bconn)
        .query_one(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'app.orders'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "postgres");
}

/// Each large object's oid, owner and contents (md5), in oid order.
fn large_objects(conn: &str) -> Vec<String> {
    connect(conn)
        .query(
            "SELECT format('%s %s %s', m.oid, pg_get_userbyid(m.lomowner), md5(lo_get(m.oid)))
             FROM pg_largeobject_metadata m ORDER BY m.oid",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn large_objects_come_through_in_both_modes_and_again() {
    let home = temp_home();
    let (src, conn) = {
        let n = node();
        let c = n.connection_string("postgres");
        (n, c)
    };
    init(home.path(), &conn, &[]);
    sql(&conn, "CREATE ROLE lo_owner NOLOGIN");
    sql(
        &conn,
        "CREATE TABLE doc (id int PRIMARY KEY, body oid);
         INSERT INTO doc VALUES (1, lo_from_bytea(0, 'hello')),
                                (2, lo_from_bytea(0, convert_to(repeat('x', 300000), 'UTF8')));
         DO $$ BEGIN EXECUTE format('ALTER LARGE OBJECT %s OWNER TO lo_owner',
                                    (SELECT body FROM doc WHERE id = 1)); END $$;",
    );
    let snap = client_snapshot(home.path(), &conn, "lo");
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    sql(&dconn, "CREATE ROLE lo_owner NOLOGIN");
    for extra in [&["--schema", "create"][..], &[][..], &["--resume"][..]] {
        ok(steep(home.path())
            .args(["snapshot", "apply", "--client", "-i", &snap, "-c", &dconn])
            .args(extra));
        assert_eq!(large_objects(&dconn), large_objects(&conn), "{extra:?}");
    }
    let hello: Vec<u8> = connect(&dconn)
        .query_one("SELECT lo_get(body) FROM doc WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(hello, b"hello");
    // Direct mode, into another database of the source's server.
    sql(&conn, "CREATE DATABASE lo_dst");
    let d2 = src.connection_string("lo_dst");
    init(home.path(), &d2, &[]);
    let r = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--direct",
        "-o",
        "lo-direct",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    // (Large objects are cluster-wide per database: the target database has none yet.)
    let r = json(&ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--direct",
        "-i",
        "lo-direct",
        "--schema",
        "create",
        "--json",
        "-c",
        &d2,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(large_objects(&d2), large_objects(&conn));
}

#[test]
fn an_extension_the_target_lacks_is_named_before_anything_changes() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE EXTENSION citext;
         CREATE TABLE tags (name citext PRIMARY KEY);
         INSERT INTO tags VALUES ('A'), ('b');",
    );
    let snap = client_snapshot(home.path(), &conn, "ext");
    // A PostgreSQL without citext's files.
    let tree = tempfile::tempdir().unwrap();
    let copy = tree_without_extension(tree.path());
    for e in std::fs::read_dir(copy.sharedir.join("extension")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("citext")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let dst = node_with_install(
        copy,
        steep::cli::sandbox::ClusterOptions {
            preload: false,
            durable: false,
            ..Default::default()
        },
    );
    let dconn = dst.connection_string("postgres");
    let err = fails(
        steep(home.path()).args([
            "snapshot", "apply", "--client", "-i", &snap, "--schema", "create", "-c", &dconn,
        ]),
        1,
    );
    assert!(
        err.contains("citext") && err.contains("nothing was changed"),
        "{err}"
    );
    let tables: i64 = connect(&dconn)
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'tags'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

#[test]
fn tables_are_chosen_with_pg_dumps_patterns() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE SCHEMA sales; CREATE SCHEMA hr;
         CREATE TABLE sales.orders (id int PRIMARY KEY); CREATE TABLE sales.order_lines (id int PRIMARY KEY);
         CREATE TABLE sales.audit (id int PRIMARY KEY); CREATE TABLE hr.people (id int PRIMARY KEY);
         CREATE TABLE public.misc (id serial PRIMARY KEY);
         INSERT INTO sales.orders VALUES (1); INSERT INTO sales.order_lines VALUES (1);
         INSERT INTO sales.audit VALUES (1); INSERT INTO hr.people VALUES (1);
         INSERT INTO public.misc DEFAULT VALUES;",
    );
    let out = crate::snapshot::snapshot_dir_of(home.path()).join("chosen");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-n",
        "sales",
        "-T",
        "sales.aud*",
        "-o",
        out.to_str().unwrap(),
        "-c",
        &conn,
    ]));
    let m = steep::engine::manifest::Manifest::read(&out).unwrap();
    let names: Vec<String> = m.tables.iter().map(|t| t.qualified()).collect();
    assert_eq!(names, ["\"sales\".\"order_lines\"", "\"sales\".\"orders\""]);
    assert!(m.sequences.is_empty(), "{:?}", m.sequences);
    // The schema archive holds the same (pg_dump resolved the patterns).
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    ok(steep(home.path()).args([
        "snapshot",
        "apply",
        "--client",
        "-i",
        out.to_str().unwrap(),
        "--schema",
        "create",
        "-c",
        &dconn,
    ]));
    let got: Vec<String> = connect(&dconn)
        .query(
            "SELECT format('%s.%s', schemaname, tablename) FROM pg_tables
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, ["sales.order_lines", "sales.orders"]);
    // A pattern that matches nothing, and a table the role may not read: named, with the fix.
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "generate",
            "--client",
            "-t",
            "nothing_like_this",
            "-o",
            out.with_extension("none").to_str().unwrap(),
            "-c",
            &conn,
        ]),
        1,
    );
    assert!(
        err.contains("no table") || err.contains("no matching"),
        "{err}"
    );
    sql(
        &conn,
        "CREATE ROLE peeker LOGIN; GRANT USAGE ON SCHEMA sales, hr TO peeker;
         GRANT SELECT ON ALL TABLES IN SCHEMA sales TO peeker;
         GRANT SELECT ON public.misc, public.misc_id_seq TO peeker;",
    );
    let pconn = format!(
        "host=127.0.0.1 port={} user=peeker dbname=postgres",
        src.port()
    );
    let err = fails(
        steep(home.path()).args([
            "snapshot",
            "generate",
            "--client",
            "-o",
            out.with_extension("peek").to_str().unwrap(),
            "-c",
            &pconn,
        ]),
        1,
    );
    assert!(err.contains("hr.people") && err.contains("-T"), "{err}");
    ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--client",
        "-T",
        "hr.*",
        "-o",
        out.with_extension("peek2").to_str().unwrap(),
        "-c",
        &pconn,
    ]));
    // Direct mode: the job's pg_dump resolves the same patterns.
    init(home.path(), &conn, &[]);
    let r = json(&ok(steep(home.path()).args([
        "snapshot",
        "generate",
        "--direct",
        "-t",
        "hr.people",
        "-t",
        "public.mis?",
        "-o",
        "chosen-direct",
        "--json",
        "-c",
        &conn,
    ])));
    assert_eq!(r["status"], "complete", "{r}");
    let m =
        steep::engine::manifest::Manifest::read(&src.snapshot_dir().join("chosen-direct")).unwrap();
    let names: Vec<String> = m.tables.iter().map(|t| t.qualified()).collect();
    assert_eq!(names, ["\"hr\".\"people\"", "\"public\".\"misc\""]);
    assert_eq!(m.sequences.len(), 1, "{:?}", m.sequences);
}

#[test]
fn what_the_target_lacks_is_listed_before_anything_changes() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE ROLE reader NOLOGIN; CREATE ROLE auditor NOLOGIN;
         CREATE SCHEMA kinds;
         CREATE TYPE kinds.mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN kinds.score AS int CHECK (VALUE >= 0);
         CREATE TABLE entry (id int PRIMARY KEY, m kinds.mood[], s kinds.score);
         INSERT INTO entry VALUES (1, '{happy}', 3);
         GRANT SELECT ON entry TO reader;
         ALTER TABLE entry ENABLE ROW LEVEL SECURITY;
         CREATE POLICY audit ON entry FOR SELECT TO auditor USING (true);",
    );
    // Only the table: its types stay behind in schema kinds.
    let snap = snapshot_dir_of(home.path()).join("needs");
    ok(steep(home.path())
        .args([
            "snapshot",
            "generate",
            "--client",
            "-t",
            "public.entry",
            "-o",
        ])
        .arg(&snap)
        .args(["-c", &conn]));
    let snap = snap.to_str().unwrap().to_string();
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    let apply = |extra: &[&str]| {
        let mut cmd = steep(home.path());
        cmd.args([
            "snapshot", "apply", "--client", "-i", &snap, "--schema", "create", "-c", &dconn,
        ])
        .args(extra);
        cmd
    };
    let tables = || -> i64 {
        connect(&dconn)
            .query_one("SELECT count(*) FROM pg_class WHERE relname = 'entry'", &[])
            .unwrap()
            .get(0)
    };
    let err = fails(&mut apply(&[]), 1);
    for want in [
        "nothing was changed",
        "reader",
        "--no-privileges",
        "auditor",
        "kinds.mood",
        "kinds.score",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(tables(), 0);
    // Without grants the grantee is not needed; the policy's role and the types still are.
    let err = fails(&mut apply(&["--no-privileges"]), 1);
    assert!(!err.contains("reader"), "{err}");
    assert!(
        err.contains("auditor") && err.contains("kinds.mood"),
        "{err}"
    );
    assert_eq!(tables(), 0);
    sql(
        &dconn,
        "CREATE ROLE auditor NOLOGIN; CREATE SCHEMA kinds;
         CREATE TYPE kinds.mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN kinds.score AS int CHECK (VALUE >= 0);",
    );
    ok(&mut apply(&["--no-privileges"]));
    assert_eq!(table_hashes(&dconn), table_hashes(&conn));
}

#[test]
fn a_large_objects_missing_owner_is_named_before_anything_changes() {
    let home = temp_home();
    let src = node();
    let conn = src.connection_string("postgres");
    sql(
        &conn,
        "CREATE ROLE lo_keeper NOLOGIN;
         CREATE TABLE doc (id int PRIMARY KEY, body oid);
         INSERT INTO doc VALUES (1, lo_from_bytea(0, 'kept'));
         SELECT lo_from_bytea(777001, 'owned');
         ALTER LARGE OBJECT 777001 OWNER TO lo_keeper;",
    );
    let snap = client_snapshot(home.path(), &conn, "lo-owner");
    let dst = plain_node();
    let dconn = dst.connection_string("postgres");
    // The tables exist already (verify mode): only the large objects' owner is missing.
    sql(&dconn, "CREATE TABLE doc (id int PRIMARY KEY, body oid)");
    let apply = |extra: &[&str]| {
        let mut cmd = steep(home.path());
        cmd.args(["snapshot", "apply", "--client", "-i", &snap, "-c", &dconn])
            .args(extra);
        cmd
    };
    let err = fails(&mut apply(&[]), 1);
    assert!(
        err.contains("lo_keeper") && err.contains("nothing was changed"),
        "{err}"
    );
    let rows: i64 = connect(&dconn)
        .query_one("SELECT count(*) FROM doc", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    ok(&mut apply(&["--no-owner"]));
    assert_eq!(large_objects(&dconn).len(), 2);
}
