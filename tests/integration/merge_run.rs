//! Merge, part 2: two nodes that both hold rows made to hold the same rows — strategies, foreign
//! keys, sequences, decisions files, the audit, dry runs, reruns and resumes.

use crate::common::*;
use crate::merge_analysis::table;
use serde_json::Value;

/// Two started nodes (steep initialised on the first) and their connection strings.
pub(crate) fn pair(
    home: &std::path::Path,
) -> (
    steep::cli::sandbox::TempCluster,
    steep::cli::sandbox::TempCluster,
    String,
    String,
) {
    let (a, b, ac, bc) = crate::merge_analysis::two_nodes();
    init(home, &ac, &[]);
    (a, b, ac, bc)
}

pub(crate) fn both(ac: &str, bc: &str, statements: &str) {
    sql(ac, statements);
    sql(bc, statements);
}

fn merge(home: &std::path::Path, ac: &str, bc: &str, extra: &[&str]) -> Value {
    let mut cmd = steep(home);
    cmd.args(["merge", "run", "--json", "-c", ac, "--peer", bc])
        .args(extra);
    json(&ok(&mut cmd))
}

/// Every row of a table as text, in key order.
fn rows(conn: &str, table: &str) -> Vec<String> {
    connect(conn)
        .query(
            &format!("SELECT x::text AS row_text FROM {table} x ORDER BY x"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn n(t: &Value, k: &str) -> u64 {
    t[k].as_u64().unwrap_or_else(|| panic!("no {k}: {t}"))
}

const SIMPLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text, n int)";

/// 1 matches, 2 conflicts, 3 only on A, 4 only on B.
fn simple_overlap(ac: &str, bc: &str) {
    both(ac, bc, SIMPLE);
    sql(
        ac,
        "INSERT INTO t VALUES (1, 'same', 1), (2, 'from A', 2), (3, 'A only', 3)",
    );
    sql(
        bc,
        "INSERT INTO t VALUES (1, 'same', 1), (2, 'from B', NULL), (4, 'B only', 4)",
    );
}

#[test]
fn prefer_local_and_prefer_remote_leave_both_nodes_equal_and_audited() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    simple_overlap(&ac, &bc);

    // A dry run: exact counts, nothing written.
    let dry = merge(
        home.path(),
        &ac,
        &bc,
        &["--strategy", "prefer-local", "--dry-run"],
    );
    let t = table(&dry, "t");
    assert_eq!(
        [
            n(t, "match"),
            n(t, "conflict"),
            n(t, "local_only"),
            n(t, "remote_only")
        ],
        [1, 1, 1, 1]
    );
    assert_eq!(
        [
            n(t, "local_inserted"),
            n(t, "local_updated"),
            n(t, "remote_inserted"),
            n(t, "remote_updated")
        ],
        [1, 0, 1, 1],
        "{t}"
    );
    assert_eq!(rows(&ac, "t").len(), 3);
    assert_eq!(rows(&bc, "t").len(), 3);

    let done = merge(home.path(), &ac, &bc, &["--strategy", "prefer-local"]);
    let want = [
        "(1,same,1)",
        "(2,\"from A\",2)",
        "(3,\"A only\",3)",
        "(4,\"B only\",4)",
    ];
    assert_eq!(rows(&ac, "t"), want);
    assert_eq!(rows(&bc, "t"), want);
    // The audit: one row per non-matching row, with both images of the conflict.
    let id = done["merge_id"].as_str().unwrap().to_string();
    let audit: Vec<String> = connect(&ac)
        .query(
            "SELECT concat_ws(' | ', pk::text, category, resolution,
                              coalesce(local_row->>'v', '-'), coalesce(remote_row->>'v', '-'),
                              coalesce(remote_row->>'n', 'NULL'), decided_by)
               FROM steep_repl.merge_audit_log WHERE merge_id = $1 ORDER BY pk::text",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        audit,
        [
            "{\"id\": \"2\"} | conflict | keep_local | from A | from B | NULL | strategy prefer-local (postgres)",
            "{\"id\": \"3\"} | local_only | copied_to_remote | A only | - | NULL | one-sided rows are copied",
            "{\"id\": \"4\"} | remote_only | copied_to_local | - | B only | 4 | one-sided rows are copied",
        ]
    );
    let status: String = connect(&ac)
        .query_one(
            "SELECT status FROM steep_repl.merges WHERE merge_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "complete");

    // A second run finds everything matching and changes nothing.
    let again = merge(home.path(), &ac, &bc, &["--strategy", "prefer-remote"]);
    let t = table(&again, "t");
    assert_eq!((n(t, "match"), n(t, "conflict")), (4, 0));
    assert_eq!(t["state"], "unchanged");
    assert_eq!(rows(&ac, "t"), want);

    // prefer-remote: the peer's version wins.
    sql(&bc, "UPDATE t SET v = 'B again', n = NULL WHERE id = 2");
    merge(home.path(), &ac, &bc, &["--strategy", "prefer-remote"]);
    assert_eq!(rows(&ac, "t")[1], "(2,\"B again\",)");
    assert_eq!(rows(&ac, "t"), rows(&bc, "t"));
}

#[test]
fn one_sided_rows_are_copied_both_ways() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(
        &ac,
        &bc,
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE TABLE c (id int PRIMARY KEY, v text)",
    );
    sql(
        &ac,
        "INSERT INTO a VALUES (1), (2), (3); INSERT INTO b VALUES (1), (2);
         INSERT INTO c SELECT g, 'v' || g FROM generate_series(1, 500) g",
    );
    sql(
        &bc,
        "INSERT INTO a VALUES (1); INSERT INTO b VALUES (3), (4);
         INSERT INTO c SELECT g, 'v' || g FROM generate_series(250, 750) g",
    );
    let r = merge(home.path(), &ac, &bc, &["--strategy", "prefer-local"]);
    assert_eq!(rows(&bc, "a"), ["(1)", "(2)", "(3)"]);
    assert_eq!(rows(&ac, "b"), ["(1)", "(2)", "(3)", "(4)"]);
    assert_eq!(rows(&bc, "b"), rows(&ac, "b"));
    assert_eq!(rows(&ac, "c").len(), 750);
    assert_eq!(rows(&ac, "c"), rows(&bc, "c"));
    let c = table(&r, "c");
    assert_eq!(
        (n(c, "remote_inserted"), n(c, "local_inserted")),
        (249, 250)
    );
    // --keep-one-sided leaves them where they are.
    sql(&ac, "INSERT INTO a VALUES (10)");
    let kept = merge(
        home.path(),
        &ac,
        &bc,
        &["--strategy", "prefer-local", "--keep-one-sided", "-t", "a"],
    );
    assert_eq!(n(table(&kept, "a"), "skipped"), 1);
    assert_eq!(rows(&bc, "a"), ["(1)", "(2)", "(3)"]);
}

#[test]
fn last_modified_picks_the_newer_row_and_composite_keys_and_nulls_conflict() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(
        &ac,
        &bc,
        "CREATE TABLE r (country text, code text, label text, updated_at timestamptz,
                         PRIMARY KEY (country, code))",
    );
    sql(
        &ac,
        "INSERT INTO r VALUES ('NZ', 'AKL', 'A newer', '2026-05-01'),
                              ('DE', 'BER', 'A older', '2026-01-01'),
                              ('AT', 'WIE', NULL, '2026-03-01'),
                              ('FR', 'PAR', 'A no time', NULL)",
    );
    sql(
        &bc,
        "INSERT INTO r VALUES ('NZ', 'AKL', 'B older', '2026-04-01'),
                              ('DE', 'BER', 'B newer', '2026-02-01'),
                              ('AT', 'WIE', 'B value', '2026-03-01'),
                              ('FR', 'PAR', 'B has time', '2020-01-01')",
    );
    let r = merge(
        home.path(),
        &ac,
        &bc,
        &[
            "--strategy",
            "prefer-local",
            "-t",
            "r:last-modified:updated_at",
        ],
    );
    let t = table(&r, "r");
    assert_eq!(t["strategy"], "last-modified:updated_at");
    assert_eq!(
        (n(t, "local_updated"), n(t, "remote_updated")),
        (2, 2),
        "{t}"
    );
    let want = [
        "(AT,WIE,,\"2026-03-01 00:00:00+00\")",
        "(DE,BER,\"B newer\",\"2026-02-01 00:00:00+00\")",
        "(FR,PAR,\"B has time\",\"2020-01-01 00:00:00+00\")",
        "(NZ,AKL,\"A newer\",\"2026-05-01 00:00:00+00\")",
    ];
    // (a tie keeps the local row: NULL label stays; a NULL time is older than any.)
    assert_eq!(rows(&ac, "r"), want);
    assert_eq!(rows(&bc, "r"), want);
    // A column that is not a time is refused before anything is written.
    let err = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &ac,
            "--peer",
            &bc,
            "--strategy",
            "last-modified:label",
        ]),
        3,
    );
    assert!(err.contains("last-modified needs a timestamp"), "{err}");
}

#[test]
fn foreign_keys_are_merged_parents_first_and_cycles_together() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    // A chain declared child first (d -> c -> b -> a), customers -> orders, and a cycle of
    // deferrable keys.
    both(
        &ac,
        &bc,
        "CREATE TABLE a (id int PRIMARY KEY);
         CREATE TABLE b (id int PRIMARY KEY, a int REFERENCES a);
         CREATE TABLE c (id int PRIMARY KEY, b int REFERENCES b);
         CREATE TABLE d (id int PRIMARY KEY, c int REFERENCES c);
         CREATE TABLE customers (id serial PRIMARY KEY, name text);
         CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                              customer int NOT NULL REFERENCES customers ON DELETE CASCADE);
         CREATE TABLE x (id int PRIMARY KEY, y int);
         CREATE TABLE y (id int PRIMARY KEY, x int REFERENCES x DEFERRABLE);
         ALTER TABLE x ADD FOREIGN KEY (y) REFERENCES y DEFERRABLE;",
    );
    sql(
        &ac,
        "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1, 1); INSERT INTO c VALUES (1, 1);
         INSERT INTO d VALUES (1, 1);
         INSERT INTO customers (id, name) VALUES (10, 'A ten');
         INSERT INTO orders (id, customer) OVERRIDING SYSTEM VALUE VALUES (100, 10);
         BEGIN; SET CONSTRAINTS ALL DEFERRED;
         INSERT INTO x VALUES (1, 1); INSERT INTO y VALUES (1, 1); COMMIT;",
    );
    sql(
        &bc,
        "INSERT INTO a VALUES (2); INSERT INTO b VALUES (2, 2); INSERT INTO c VALUES (2, 2);
         INSERT INTO d VALUES (2, 2);
         INSERT INTO customers (id, name) VALUES (10, 'B ten'), (20, 'B twenty');
         INSERT INTO orders (id, customer) OVERRIDING SYSTEM VALUE VALUES (200, 20), (201, 10);
         BEGIN; SET CONSTRAINTS ALL DEFERRED;
         INSERT INTO x VALUES (2, 2); INSERT INTO y VALUES (2, 2); COMMIT;",
    );
    merge(home.path(), &ac, &bc, &["--strategy", "prefer-remote"]);
    for t in ["a", "b", "c", "d", "customers", "orders", "x", "y"] {
        assert_eq!(rows(&ac, t), rows(&bc, t), "{t}");
    }
    assert_eq!(rows(&ac, "d"), ["(1,1)", "(2,2)"]);
    assert_eq!(rows(&ac, "x"), ["(1,1)", "(2,2)"]);
    assert_eq!(
        rows(&ac, "customers"),
        ["(10,\"B ten\")", "(20,\"B twenty\")"]
    );
    // No cascade: the conflict on customer 10 was an update, A's order 100 is still there.
    assert_eq!(rows(&ac, "orders"), ["(100,10)", "(200,20)", "(201,10)"]);
    // Every sequence on both nodes is past every merged key.
    for conn in [&ac, &bc] {
        let mut c = connect(conn);
        let cust: i32 = c
            .query_one(
                "INSERT INTO customers (name) VALUES ('new') RETURNING id",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(cust > 20, "{cust}");
        let order: i64 = c
            .query_one(
                "INSERT INTO orders (customer) VALUES (10) RETURNING id",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(order > 201, "{order}");
    }
}

#[test]
fn a_failing_table_is_rolled_back_on_both_nodes_and_resume_finishes() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(
        &ac,
        &bc,
        "CREATE TABLE p1 (id int PRIMARY KEY, v text);
         CREATE TABLE p2 (id int PRIMARY KEY, v text)",
    );
    sql(&ac, "INSERT INTO p1 VALUES (1, 'a'); INSERT INTO p2 SELECT g, 'a' FROM generate_series(1, 100) g");
    sql(&bc, "INSERT INTO p1 VALUES (2, 'b'); INSERT INTO p2 SELECT g, 'b' FROM generate_series(50, 150) g");
    // p2 cannot take row 150 on A: the whole table fails there, and on B nothing of it lands.
    sql(&ac, "ALTER TABLE p2 ADD CHECK (id < 150)");
    let out = steep(home.path())
        .args([
            "merge",
            "run",
            "--json",
            "-c",
            &ac,
            "--peer",
            &bc,
            "--strategy",
            "prefer-local",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("p2") && err.contains("--resume"), "{err}");
    let id: String = connect(&ac)
        .query_one(
            "SELECT merge_id FROM steep_repl.merges WHERE kind = 'merge' ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows(&ac, "p1"), rows(&bc, "p1"));
    assert_eq!(rows(&ac, "p2").len(), 100);
    assert_eq!(rows(&bc, "p2").len(), 101);
    assert!(rows(&bc, "p2").iter().all(|r| r.ends_with(",b)")));
    // Fixed, the merge resumes: p1 is not redone, p2 is merged.
    sql(&ac, "ALTER TABLE p2 DROP CONSTRAINT p2_id_check");
    let r = merge(home.path(), &ac, &bc, &["--resume", &id]);
    assert_eq!(table(&r, "p1")["state"], "already merged");
    assert_eq!(table(&r, "p2")["state"], "merged");
    assert_eq!(rows(&ac, "p2").len(), 150);
    assert_eq!(rows(&ac, "p2"), rows(&bc, "p2"));
}

/// t1: conflicts 1, 2, 3 (and 10 only on A); t2: conflicts 1, 2.
fn conflicts(ac: &str, bc: &str) {
    both(
        ac,
        bc,
        "CREATE TABLE t1 (id int PRIMARY KEY, v text); CREATE TABLE t2 (id int PRIMARY KEY, v text)",
    );
    sql(
        ac,
        "INSERT INTO t1 VALUES (1, 'a1'), (2, 'a2'), (3, 'a3'), (10, 'a10');
         INSERT INTO t2 VALUES (1, 'a1'), (2, 'a2')",
    );
    sql(
        bc,
        "INSERT INTO t1 VALUES (1, 'b1'), (2, 'b2'), (3, 'b3');
         INSERT INTO t2 VALUES (1, 'b1'), (2, 'b2')",
    );
}

#[test]
fn a_decisions_file_applies_what_it_decides_and_never_a_row_changed_since() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    conflicts(&ac, &bc);
    // ask without a terminal and without a decisions file: refused at once, nothing written.
    let err = fails(
        steep(home.path()).args(["merge", "run", "-c", &ac, "--peer", &bc]),
        2,
    );
    assert!(err.contains("--decisions"), "{err}");
    assert_eq!(rows(&bc, "t1").len(), 3);

    let file = home.path().join("decisions.json");
    ok(steep(home.path()).args([
        "merge",
        "analyze",
        "-c",
        &ac,
        "--peer",
        &bc,
        "-t",
        "t1",
        "--decisions-out",
        file.to_str().unwrap(),
    ]));
    let mut d: Value = json(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(d["format"], "steep-merge-decisions");
    assert_eq!(d["version"], 1);
    let list = d["conflicts"].as_array_mut().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["key"], "(1)");
    assert_eq!(list[0]["local_row"]["v"], "a1");
    assert_eq!(list[0]["remote_row"]["v"], "b1");
    assert_eq!(list[0]["differing_columns"], serde_json::json!(["v"]));
    assert!(list.iter().all(|c| c["decision"].is_null()));
    list[0]["decision"] = "keep_remote".into();
    list[1]["decision"] = "keep_local".into();
    std::fs::write(&file, d.to_string()).unwrap();
    // Row 2 changes on B after it was decided on: undecided again, not overwritten.
    sql(&bc, "UPDATE t1 SET v = 'b2 changed' WHERE id = 2");

    let out = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &ac,
            "--peer",
            &bc,
            "-t",
            "t1",
            "--decisions",
            file.to_str().unwrap(),
        ]),
        3,
    );
    assert!(out.contains("2 conflicts are undecided"), "{out}");
    assert_eq!(rows(&ac, "t1"), ["(1,b1)", "(2,a2)", "(3,a3)", "(10,a10)"]);
    assert_eq!(
        rows(&bc, "t1"),
        ["(1,b1)", "(2,\"b2 changed\")", "(3,b3)", "(10,a10)"]
    );
    let (status, by): (String, String) = {
        let r = connect(&ac)
            .query_one(
                "SELECT m.status, a.decided_by FROM steep_repl.merges m
                   JOIN steep_repl.merge_audit_log a USING (merge_id)
                  WHERE a.category = 'conflict'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "awaiting_decisions");
    assert!(by.starts_with("decisions file "), "{by}");

    // The rest decided in a second file, on the rows as they are now: the resume completes
    // the table (it was not marked merged while conflicts were undecided).
    let id: String = connect(&ac)
        .query_one(
            "SELECT merge_id FROM steep_repl.merges WHERE kind = 'merge'",
            &[],
        )
        .unwrap()
        .get(0);
    ok(steep(home.path()).args([
        "merge",
        "analyze",
        "-c",
        &ac,
        "--peer",
        &bc,
        "-t",
        "t1",
        "--decisions-out",
        file.to_str().unwrap(),
    ]));
    let mut d: Value = json(&std::fs::read_to_string(&file).unwrap());
    for c in d["conflicts"].as_array_mut().unwrap() {
        c["decision"] = "keep_local".into();
    }
    std::fs::write(&file, d.to_string()).unwrap();
    let r = merge(
        home.path(),
        &ac,
        &bc,
        &["--resume", &id, "--decisions", file.to_str().unwrap()],
    );
    assert_eq!(table(&r, "t1")["state"], "merged");
    assert_eq!(n(table(&r, "t1"), "undecided"), 0);
    for conn in [&ac, &bc] {
        assert_eq!(rows(conn, "t1"), ["(1,b1)", "(2,a2)", "(3,a3)", "(10,a10)"]);
    }
}

#[test]
fn keys_equal_by_type_but_not_as_text_are_refused_not_overwritten() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(&ac, &bc, "CREATE TABLE m (k numeric PRIMARY KEY, v text)");
    sql(&ac, "INSERT INTO m VALUES (1.0, 'a'), (2, 'same')");
    sql(&bc, "INSERT INTO m VALUES (1.00, 'b'), (2, 'same')");
    let err = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &ac,
            "--peer",
            &bc,
            "--strategy",
            "prefer-local",
        ]),
        1,
    );
    assert!(err.contains("equal by their type but not as text"), "{err}");
    assert_eq!(rows(&ac, "m"), ["(1.0,a)", "(2,same)"]);
    assert_eq!(rows(&bc, "m"), ["(1.00,b)", "(2,same)"]);
}

/// `steep merge run` at a real pseudo-terminal.
fn at_terminal(home: &std::path::Path, args: &[&str]) -> rexpect::session::PtySession {
    let mut cmd = steep_process(home);
    cmd.env("TERM", "dumb").args(["merge", "run"]).args(args);
    rexpect::session::spawn_command(cmd, Some(60_000)).unwrap()
}

#[test]
fn ask_prompts_at_a_terminal_saves_each_answer_and_resumes_after_a_kill() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    conflicts(&ac, &bc);
    let mut p = at_terminal(
        home.path(),
        &["-c", &ac, "--peer", &bc, "--strategy", "ask"],
    );
    p.exp_string("conflict 1 of 5: \"public\".\"t1\" key (1)")
        .unwrap();
    // Both images side by side.
    p.exp_string("a1").unwrap();
    p.exp_string("b1").unwrap();
    p.exp_string("q stop").unwrap();
    p.send_line("r").unwrap();
    p.exp_string("conflict 2 of 5").unwrap();
    p.exp_string("q stop").unwrap();
    // Killed at the second prompt: the first answer is kept.
    let pid = p.process.child_pid.as_raw();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = p.process.wait();
    let id: String = connect(&ac)
        .query_one(
            "SELECT merge_id FROM steep_repl.merges WHERE kind = 'merge'",
            &[],
        )
        .unwrap()
        .get(0);
    let saved: i64 = connect(&ac)
        .query_one(
            "SELECT count(*) FROM steep_repl.merge_decisions WHERE merge_id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(saved, 1);
    assert_eq!(rows(&bc, "t1").len(), 3, "nothing written yet");

    // The rerun asks from the next undecided conflict: the rest of t1 kept local, then all
    // remaining (t2) kept remote.
    let mut p = at_terminal(home.path(), &["-c", &ac, "--peer", &bc, "--resume", &id]);
    p.exp_string("conflict 1 of 4: \"public\".\"t1\" key (2)")
        .unwrap();
    p.exp_string("q stop").unwrap();
    p.send_line("L").unwrap();
    p.exp_string("conflict 3 of 4: \"public\".\"t2\" key (1)")
        .unwrap();
    p.exp_string("q stop").unwrap();
    p.send_line("r!").unwrap();
    p.exp_string("Merged").unwrap();
    p.exp_eof().unwrap();
    for conn in [&ac, &bc] {
        assert_eq!(rows(conn, "t1"), ["(1,b1)", "(2,a2)", "(3,a3)", "(10,a10)"]);
        assert_eq!(rows(conn, "t2"), ["(1,b1)", "(2,b2)"]);
    }
    let audit: Vec<String> = connect(&ac)
        .query(
            "SELECT table_name || ' ' || (pk->>'id') || ' ' || resolution || ' ' || decided_by
               FROM steep_repl.merge_audit_log
              WHERE merge_id = $1 AND category = 'conflict' ORDER BY 1",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        audit,
        [
            "t1 1 keep_remote operator postgres",
            "t1 2 keep_local operator postgres",
            "t1 3 keep_local operator postgres",
            "t2 1 keep_remote operator postgres",
            "t2 2 keep_remote operator postgres",
        ]
    );
}

/// A report without what differs between two runs of the same merge.
fn comparable(r: &Value) -> Value {
    let mut r = r.clone();
    r["merge_id"] = Value::Null;
    r
}

#[test]
fn direct_mode_merges_as_client_mode_does_and_is_followed_from_sql() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    simple_overlap(&ac, &bc);
    let args = ["--strategy", "prefer-local", "--dry-run"];
    let client = merge(home.path(), &ac, &bc, &args);
    let direct = merge(home.path(), &ac, &bc, &[&args[..], &["--direct"]].concat());
    assert_eq!(comparable(&client), comparable(&direct));
    assert_eq!(rows(&bc, "t").len(), 3, "a dry run writes nothing");

    let done = merge(
        home.path(),
        &ac,
        &bc,
        &["--strategy", "prefer-local", "--direct"],
    );
    assert_eq!(table(&done, "t")["state"], "merged");
    let want = [
        "(1,same,1)",
        "(2,\"from A\",2)",
        "(3,\"A only\",3)",
        "(4,\"B only\",4)",
    ];
    assert_eq!(rows(&ac, "t"), want);
    assert_eq!(rows(&bc, "t"), want);
    let id = done["merge_id"].as_str().unwrap();
    let mut c = connect(&ac);
    let (status, audit): (String, i64) = {
        let r = c
            .query_one(
                "SELECT status, (SELECT count(*) FROM steep_repl.merge_audit($1))
                   FROM steep_repl.wait_merge($1, 10)",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), audit), ("complete", 3));
}

#[test]
fn a_merge_job_waits_for_decisions_holding_nothing_and_gives_up_or_stops_on_request() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    conflicts(&ac, &bc);
    let mut c = connect(&ac);
    let start = |c: &mut postgres::Client, options: &str| -> String {
        c.query_one(
            "SELECT merge_id FROM steep_repl.start_merge($1, NULL, 'ask', $2::text::jsonb)",
            &[&bc, &options],
        )
        .unwrap()
        .get(0)
    };
    // Options are checked as start_merge receives them: a string is not a boolean.
    let e = c
        .query_one(
            "SELECT steep_repl.start_merge($1, NULL, 'prefer-local', '{\"dry_run\": \"true\"}')",
            &[&bc],
        )
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("22023"), "{e}");
    // It waits: the conflicts are stored with both images, progress counts the undecided.
    let id = start(&mut c, "{\"decision_timeout_seconds\": 2}");
    let status: String = c
        .query_one("SELECT status FROM steep_repl.wait_merge($1, 30)", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(status, "awaiting_decisions");
    let (phase, undecided): (String, i64) = {
        let r = c
            .query_one(
                "SELECT phase, undecided FROM steep_repl.merge_progress($1)",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((phase.as_str(), undecided), ("awaiting_decisions", 5));
    let images: String = c
        .query_one(
            "SELECT local_row->>'v' || ' ' || (remote_row->>'v') FROM steep_repl.merge_conflicts
              WHERE merge_id = $1 AND table_name = 't1' AND key = '(1)'",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(images, "a1 b1");
    // Nothing is locked while it waits: the tables take writes on both nodes.
    sql(&ac, "INSERT INTO t2 VALUES (50, 'written while waiting')");
    sql(&bc, "UPDATE t2 SET v = 'b2' WHERE id = 2");
    // No answer within its timeout: it ends, failed, with the reason; nothing was merged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let r = loop {
        let r = c
            .query_one(
                "SELECT status, error_message FROM steep_repl.merges WHERE merge_id = $1",
                &[&id],
            )
            .unwrap();
        if r.get::<_, String>(0) != "awaiting_decisions" || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (status, error): (String, Option<String>) = (r.get(0), r.get(1));
    assert_eq!(status, "failed", "{error:?}");
    assert!(
        error
            .as_deref()
            .unwrap_or("")
            .contains("5 conflicts still undecided"),
        "{error:?}"
    );
    assert_eq!(rows(&bc, "t1").len(), 3);

    // A cancel stops a waiting job within a second.
    let id = start(&mut c, "{}");
    c.query_one("SELECT status FROM steep_repl.wait_merge($1, 30)", &[&id])
        .unwrap();
    let asked = std::time::Instant::now();
    let ok: bool = c
        .query_one("SELECT steep_repl.cancel_merge($1)", &[&id])
        .unwrap()
        .get(0);
    assert!(ok);
    loop {
        let s: String = c
            .query_one(
                "SELECT w.status FROM steep_repl.work_queue w WHERE w.merge_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if s == "cancelled" {
            break;
        }
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(1),
            "still {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Answered at a terminal while the job waits: it goes on and merges.
    let mut p = at_terminal(
        home.path(),
        &["-c", &ac, "--peer", &bc, "--strategy", "ask", "--direct"],
    );
    p.exp_string("conflict 1 of 5").unwrap();
    p.exp_string("q stop").unwrap();
    p.send_line("r!").unwrap();
    p.exp_string("Merged").unwrap();
    p.exp_eof().unwrap();
    for conn in [&ac, &bc] {
        assert_eq!(rows(conn, "t1"), ["(1,b1)", "(2,b2)", "(3,b3)", "(10,a10)"]);
        assert_eq!(
            rows(conn, "t2"),
            ["(1,b1)", "(2,b2)", "(50,\"written while waiting\")"]
        );
    }
}

#[test]
fn a_killed_merge_job_leaves_every_table_whole_and_resume_finishes() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(
        &ac,
        &bc,
        "CREATE TABLE p1 (id int PRIMARY KEY, v text); CREATE TABLE p2 (id int PRIMARY KEY, v text)",
    );
    sql(
        &ac,
        "INSERT INTO p1 VALUES (1, 'a'); INSERT INTO p2 VALUES (0, 'a')",
    );
    sql(
        &bc,
        "INSERT INTO p1 VALUES (2, 'b');
         INSERT INTO p2 SELECT g, repeat('b', 200) FROM generate_series(1, 400000) g",
    );
    let mut c = connect(&ac);
    let start = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT merge_id FROM steep_repl.start_merge($1, NULL, 'prefer-local')",
            &[&bc],
        )
        .unwrap()
        .get(0)
    };
    // The pid of the job's worker once it works on p2 (p1, first, is merged by then).
    let on_p2 = |c: &mut postgres::Client, id: &str| -> i32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let r = c
                .query_opt(
                    "SELECT w.worker_pid, p.current_table FROM steep_repl.work_queue w
                       LEFT JOIN steep_repl.merge_progress($1) p ON true
                      WHERE w.merge_id = $1 AND w.status = 'running'",
                    &[&id],
                )
                .unwrap();
            if let Some(r) = r {
                if r.get::<_, Option<String>>(1).as_deref() == Some("\"public\".\"p2\"") {
                    return r.get(0);
                }
            }
            assert!(std::time::Instant::now() < deadline, "never reached p2");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    // Cancelled while it works on p2: stopped within a second, p2 untouched on both nodes.
    let id = start(&mut c);
    on_p2(&mut c, &id);
    let asked = std::time::Instant::now();
    assert!(c
        .query_one("SELECT steep_repl.cancel_merge($1)", &[&id])
        .unwrap()
        .get::<_, bool>(0));
    loop {
        let s: String = c
            .query_one(
                "SELECT status FROM steep_repl.work_queue WHERE merge_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        if s == "cancelled" {
            break;
        }
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(1),
            "still {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(rows(&ac, "p1"), rows(&bc, "p1"));
    for (conn, n) in [(&ac, 1i64), (&bc, 400000)] {
        let got: i64 = connect(conn)
            .query_one("SELECT count(*) FROM p2", &[])
            .unwrap()
            .get(0);
        assert_eq!(got, n);
    }
    // Killed while it works on p2.
    let id = start(&mut c);
    let pid = on_p2(&mut c, &id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(mut c) = postgres::Client::connect(&ac, postgres::NoTls) {
            if let Ok(r) = c.query_one(
                "SELECT status FROM steep_repl.merges WHERE merge_id = $1",
                &[&id],
            ) {
                if r.get::<_, String>(0) == "failed" {
                    break;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job was never failed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Every table whole on each node: merged, or as it was.
    assert_eq!(rows(&ac, "p1"), rows(&bc, "p1"));
    let count = |conn: &str| -> i64 {
        connect(conn)
            .query_one("SELECT count(*) FROM p2", &[])
            .unwrap()
            .get(0)
    };
    assert!([1, 400001].contains(&count(&ac)), "{}", count(&ac));
    assert!([400000, 400001].contains(&count(&bc)), "{}", count(&bc));
    // Resumed (in client mode, by the role that started it): p1 is not redone, p2 is merged.
    let r = merge(home.path(), &ac, &bc, &["--resume", &id]);
    assert_eq!(table(&r, "p1")["state"], "already merged");
    assert_eq!(count(&ac), 400001);
    assert_eq!(count(&bc), 400001);
}

#[test]
fn deferred_constraints_are_checked_on_both_nodes_before_either_commits() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(
        &ac,
        &bc,
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY,
                             p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)",
    );
    sql(&ac, "INSERT INTO child VALUES (1, NULL)");
    sql(
        &bc,
        "INSERT INTO parent VALUES (10); INSERT INTO child VALUES (2, 10)",
    );
    // Only child: B's row 2 needs a parent A lacks. Refused before either node commits.
    let err = fails(
        steep(home.path()).args([
            "merge",
            "run",
            "-c",
            &ac,
            "--peer",
            &bc,
            "--strategy",
            "prefer-local",
            "-t",
            "child",
        ]),
        1,
    );
    assert!(err.contains("child_p_fkey"), "{err}");
    assert_eq!(rows(&ac, "child"), ["(1,)"]);
    assert_eq!(rows(&bc, "child"), ["(2,10)"]);
}

#[test]
fn last_modified_by_commit_timestamps_picks_the_later_commit() {
    let home = temp_home();
    let (_a, _b, ac, bc) = pair(home.path());
    both(&ac, &bc, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    // Each statement its own transaction: B's row 1 commits after A's, A's row 2 after B's.
    sql(&ac, "INSERT INTO t VALUES (1, 'a1')");
    sql(&bc, "INSERT INTO t VALUES (1, 'b1'), (2, 'b2')");
    sql(&ac, "INSERT INTO t VALUES (2, 'a2')");
    let r = merge(home.path(), &ac, &bc, &["--strategy", "last-modified"]);
    assert_eq!(table(&r, "t")["strategy"], "last-modified");
    for conn in [&ac, &bc] {
        assert_eq!(rows(conn, "t"), ["(1,b1)", "(2,a2)"]);
    }
}
