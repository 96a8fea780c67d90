//! The key scheme of a bidirectional setup: inserts on both nodes must not collide, and
//! PostgreSQL does not replicate sequences. Every sequence that numbers a replicated table's
//! column (serial or identity: the sequence depends on the column) counts in steps of `step` on
//! both nodes, from values congruent to the node's offset (A: 1, B: 2), above every value either
//! node has used. `undo` restores each sequence's increment (values go on from where they are).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::db_error::db_error;

/// One sequence given the scheme on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assigned {
    pub sequence: String,
    pub table: String,
    pub column: String,
    pub node_offset: i32,
    pub step: i32,
    /// The first value the node's inserts take.
    pub next_value: i64,
}

/// A sequence numbering an integer column of one of `tables` (oids): owned by the column
/// (serial, identity) or named by its default (`DEFAULT nextval(...)`). (sequence, table,
/// column, its increment), names quoted and schema-qualified.
pub fn owned_sequences(
    c: &mut postgres::Client,
    tables: &[i64],
) -> Result<Vec<(String, String, String, i64)>> {
    Ok(c.query(
        "SELECT DISTINCT
                pg_catalog.format('%I.%I', sn.nspname, s.relname),
                pg_catalog.format('%I.%I', tn.nspname, t.relname),
                pg_catalog.quote_ident(a.attname), q.seqincrement
           FROM (SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS att
                   FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.deptype IN ('a', 'i')
                 UNION
                 SELECT d.refobjid, ad.adrelid, ad.adnum
                   FROM pg_catalog.pg_depend d
                   JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
                  WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) x
           JOIN pg_catalog.pg_class s ON s.oid = x.seq AND s.relkind = 'S'
           JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
           JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
           JOIN pg_catalog.pg_class t ON t.oid = x.rel
           JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
           JOIN pg_catalog.pg_attribute a ON a.attrelid = x.rel AND a.attnum = x.att
          WHERE x.rel::pg_catalog.int8 = ANY($1)
            AND a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype,
                               'pg_catalog.int4'::pg_catalog.regtype,
                               'pg_catalog.int8'::pg_catalog.regtype)
          ORDER BY 1, 2, 3",
        &[&tables],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect())
}

/// The smallest value above `high` congruent to `offset` modulo `step`.
pub fn next_in_scheme(high: i64, offset: i64, step: i64) -> i64 {
    let r = (offset - high).rem_euclid(step);
    if r == 0 {
        high + step
    } else {
        high + r
    }
}

/// Give `sequences` (from `owned_sequences` on node A) the scheme on both nodes: A gets offset 1,
/// B offset 2. Each node's sequences are altered in one transaction that holds them (inserts
/// wait) while the highest used value is read on both, so no value already taken is handed out.
pub fn apply(
    a: &mut postgres::Client,
    b: &mut postgres::Client,
    setup: &str,
    sequences: &[(String, String, String, i64)],
    step: i64,
) -> Result<Vec<(String, Assigned)>> {
    if !(2..=1000).contains(&step) {
        bail!("the key step must be between 2 and 1000 (got {step})");
    }
    let mut ta = a.transaction()?;
    let mut tb = b.transaction()?;
    // ALTER SEQUENCE waits for transactions that used the sequence; inserts queue behind it.
    // Bounded, so a forgotten idle transaction fails the init instead of stalling every insert.
    for t in [&mut ta, &mut tb] {
        t.batch_execute("SET LOCAL lock_timeout = '10s'")?;
    }
    let mut out = Vec::new();
    for (seq, table, column, _) in sequences {
        let mut high = i64::MIN;
        let mut before = [0i64; 2];
        let mut maxes = [i64::MAX; 2];
        for (i, t) in [&mut ta, &mut tb].into_iter().enumerate() {
            let found = t
                .query_opt(
                    "SELECT q.seqincrement, q.seqmax, q.seqcycle
                       FROM pg_catalog.pg_sequence q
                      WHERE q.seqrelid = pg_catalog.to_regclass($1)",
                    &[seq],
                )
                .map_err(db_error)?;
            let Some(row) = found else {
                bail!(
                    "sequence {seq} is on the first node but not on the second: both nodes need the \
                     same schema"
                );
            };
            let (inc, max, cycle): (i64, i64, bool) = (row.get(0), row.get(1), row.get(2));
            if inc < 0 {
                bail!(
                    "sequence {seq} counts down on node {}: steep's key scheme gives ascending \
                     sequences node offsets; make it ascending or leave its table out",
                    if i == 0 { "A" } else { "B" }
                );
            }
            if cycle {
                bail!(
                    "sequence {seq} cycles: after its maximum both nodes would hand out the same \
                     values again; ALTER SEQUENCE {seq} NO CYCLE first"
                );
            }
            maxes[i] = max;
            before[i] = inc;
            // Holding the sequence (ALTER SEQUENCE's lock) makes concurrent nextval wait until
            // the new scheme commits.
            t.batch_execute(&format!("ALTER SEQUENCE {seq} INCREMENT BY {step}"))
                .map_err(db_error)
                .with_context(|| format!("changing sequence {seq}"))?;
            let r = t
                .query_one(
                    &format!(
                        "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                                   FROM {seq}),
                                (SELECT max({column})::pg_catalog.int8 FROM {table})"
                    ),
                    &[],
                )
                .map_err(db_error)
                .with_context(|| format!("reading the values {seq} and {table}.{column} used"))?;
            let (last, max): (i64, Option<i64>) = (r.get(0), r.get(1));
            high = high.max(last).max(max.unwrap_or(i64::MIN));
        }
        for (i, t) in [&mut ta, &mut tb].into_iter().enumerate() {
            let offset = i as i64 + 1;
            let next = next_in_scheme(high.max(0), offset, step);
            if next > maxes[i] - step {
                bail!(
                    "sequence {seq} is too close to its maximum ({}) for steps of {step}: raise \
                     its MAXVALUE (or its type), or choose a smaller --key-step",
                    maxes[i]
                );
            }
            t.batch_execute(&format!("ALTER SEQUENCE {seq} RESTART WITH {next}"))
                .map_err(db_error)
                .with_context(|| format!("restarting sequence {seq} at {next}"))?;
            t.execute(
                "INSERT INTO steep_repl.replication_sequences
                        (setup_name, sequence_name, table_name, column_name, node_offset, step,
                         increment_before)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (setup_name, sequence_name) DO UPDATE
                    SET node_offset = EXCLUDED.node_offset, step = EXCLUDED.step, set_at = now()",
                &[
                    &setup,
                    seq,
                    table,
                    column,
                    &(offset as i32),
                    &(step as i32),
                    &before[i],
                ],
            )
            .map_err(db_error)?;
            out.push((
                if i == 0 { "A" } else { "B" }.to_string(),
                Assigned {
                    sequence: seq.clone(),
                    table: table.clone(),
                    column: column.clone(),
                    node_offset: offset as i32,
                    step: step as i32,
                    next_value: next,
                },
            ));
        }
    }
    // A failure between the two commits leaves B's scheme recorded on B: the init's cleanup
    // (or `replication drop`) restores it from that record.
    tb.commit().map_err(db_error)?;
    ta.commit().map_err(db_error)?;
    Ok(out)
}

/// Restore the increments the setup changed on this node and forget them; returns the
/// sequences restored.
pub fn undo(c: &mut postgres::Client, setup: &str) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT sequence_name, increment_before FROM steep_repl.replication_sequences
              WHERE setup_name = $1 ORDER BY 1",
            &[&setup],
        )
        .map_err(db_error)?;
    let mut out = Vec::new();
    for r in rows {
        let (seq, inc): (String, i64) = (r.get(0), r.get(1));
        // The name as PostgreSQL quotes it, of a sequence that exists: never the row's text
        // itself in a statement.
        let quoted: Option<String> = c
            .query_one(
                "SELECT pg_catalog.format('%I.%I', n.nspname, s.relname)
                   FROM pg_catalog.pg_class s
                   JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
                  WHERE s.oid = pg_catalog.to_regclass($1) AND s.relkind = 'S'",
                &[&seq],
            )
            .ok()
            .map(|r| r.get(0));
        if let Some(q) = quoted {
            c.batch_execute(&format!("ALTER SEQUENCE {q} INCREMENT BY {inc}"))
                .map_err(db_error)
                .with_context(|| format!("restoring sequence {seq}'s increment"))?;
        }
        c.execute(
            "DELETE FROM steep_repl.replication_sequences WHERE setup_name = $1 AND sequence_name = $2",
            &[&setup, &seq],
        )
        .map_err(db_error)?;
        out.push(seq);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_values_are_above_and_congruent() {
        assert_eq!(next_in_scheme(0, 1, 10), 1);
        assert_eq!(next_in_scheme(0, 2, 10), 2);
        assert_eq!(next_in_scheme(1, 1, 10), 11);
        assert_eq!(next_in_scheme(57, 1, 10), 61);
        assert_eq!(next_in_scheme(57, 2, 10), 62);
        assert_eq!(next_in_scheme(60, 2, 10), 62);
        assert_eq!(next_in_scheme(62, 2, 10), 72);
    }
}
