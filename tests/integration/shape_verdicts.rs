//! `steep schema compare` and `steep snapshot apply --schema verify` are one comparison: on the
//! same pair of schemas they reach the same verdict (partitioned tables, generated columns).

use crate::common::*;
use crate::snapshot::client_snapshot;

/// The verdicts of both for source schema `a` and target schema `b`: (compare blocks, verify
/// blocks), each checked to be a clean exit 0 or a blocking exit 3.
fn verdicts(a: &str, b: &str) -> (bool, bool, String) {
    let home = temp_home();
    let (na, nb) = (node(), node());
    let (ca, cb) = (na.connection_uri("postgres"), nb.connection_uri("postgres"));
    init(home.path(), &ca, &[]);
    init(home.path(), &cb, &[]);
    sql(&ca, a);
    sql(&cb, b);
    let o = steep(home.path())
        .args(["schema", "compare", "--json", "-c", &ca, "--peer", &cb])
        .output()
        .unwrap();
    let compare_code = o.status.code().unwrap();
    assert!(compare_code == 0 || compare_code == 3, "{}", stderr(&o));
    let out = client_snapshot(home.path(), &ca, "v");
    let o = steep(home.path())
        .args(["snapshot", "apply", "--client", "-i", &out, "-c", &cb])
        .output()
        .unwrap();
    let verify_code = o.status.code().unwrap();
    let err = stderr(&o);
    assert!(verify_code == 0 || verify_code == 3, "{err}");
    (compare_code == 3, verify_code == 3, err)
}

const PARTITIONED: &str = "
    CREATE TABLE p (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
    CREATE TABLE p_a PARTITION OF p FOR VALUES IN ('a');
    CREATE TABLE p_b PARTITION OF p FOR VALUES IN ('b');
    INSERT INTO p VALUES (1, 'a'), (2, 'b');";

const GENERATED: &str = "
    CREATE TABLE g (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
    INSERT INTO g (id, a) VALUES (1, 1), (2, 2);";

#[test]
fn partitioned_tables_get_one_verdict() {
    // The same partitioned table on both: neither blocks.
    let (compare, verify, err) = verdicts(PARTITIONED, PARTITIONED);
    assert!(
        !compare && !verify,
        "compare {compare}, verify {verify}: {err}"
    );
    // The parent is a plain table on the target (the partitions too): both block.
    let plain = "CREATE TABLE p (id int, region text, PRIMARY KEY (id, region));
                 CREATE TABLE p_a (id int, region text, PRIMARY KEY (id, region));
                 CREATE TABLE p_b (id int, region text, PRIMARY KEY (id, region));";
    let (compare, verify, err) = verdicts(PARTITIONED, plain);
    assert!(
        compare && verify,
        "compare {compare}, verify {verify}: {err}"
    );
    assert!(
        err.contains("partitioned in the snapshot, plain on the target"),
        "{err}"
    );
}

#[test]
fn generated_columns_get_one_verdict() {
    // Generated on the source, a plain column on the target: the load would leave it empty.
    let plain = "CREATE TABLE g (id int PRIMARY KEY, a int, b int);";
    let (compare, verify, err) = verdicts(GENERATED, plain);
    assert!(
        compare && verify,
        "compare {compare}, verify {verify}: {err}"
    );
    assert!(
        err.contains("generated in the snapshot, stored on the target"),
        "{err}"
    );
    // A generated column only on the target is computed there: neither blocks.
    let extra = "CREATE TABLE g (id int PRIMARY KEY, a int,
                                 b int GENERATED ALWAYS AS (a * 2) STORED,
                                 c int GENERATED ALWAYS AS (a * 3) STORED);";
    let (compare, verify, err) = verdicts(GENERATED, extra);
    assert!(
        !compare && !verify,
        "compare {compare}, verify {verify}: {err}"
    );
}
