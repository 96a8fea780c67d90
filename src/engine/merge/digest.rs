//! Row and key digests, computed by each node on its own rows.
//!
//! A row's text is `ROW(columns sorted by name)::text` — generated columns left out (each node
//! computes its own), NULL an empty field and the empty string `""`, so the two differ — under
//! fixed session settings, so TimeZone, DateStyle, IntervalStyle, extra_float_digits,
//! bytea_output, lc_monetary and search_path of either node change nothing. A key's text is
//! `ROW(primary key columns)::text` too — never through a cast to json, which a type's owner could
//! define and so run code as whoever compares. Both are hashed to 64 bits with
//! `hashtextextended(... COLLATE "C", 0)`: the bytes, never a collation's sort key, so buckets do
//! not depend on the nodes' collations. That hash is PostgreSQL's internal one, so preflight first
//! checks that both nodes compute the same values on a probe.

use crate::engine::catalog::{TableInfo, SESSION_SETTINGS};
use crate::sql::quote_ident;

/// Set on every connection of an analysis, on both nodes (on top of the engine's settings). The
/// bucket aggregate of a large table holds up to a million groups: with the default work_mem it
/// spills to disk and takes twice as long.
pub const SETTINGS: &str =
    "SET lc_monetary = 'C'; SET quote_all_identifiers = off; SET work_mem = '256MB'";

/// Apply the session settings digests depend on.
pub fn prepare(c: &mut postgres::Client) -> anyhow::Result<()> {
    use anyhow::Context;
    c.batch_execute(SESSION_SETTINGS)
        .and_then(|()| c.batch_execute(SETTINGS))
        .context("preparing the session for digests")
}

/// The probe both nodes must hash alike: text, and a row with a NULL, an empty string and a
/// float. ASCII only: every server encoding can hold it.
pub const PROBE: &str = "SELECT pg_catalog.hashtextextended('steep probe 1234567890 ~!' COLLATE \"C\", 0)::text
            || ' ' || pg_catalog.hashtextextended(ROW(1, ''::text, NULL::text, 1.5::float8)::text COLLATE \"C\", 0)::text";

fn hash(expr: &str) -> String {
    format!("pg_catalog.hashtextextended(({expr}) COLLATE \"C\", 0)")
}

/// The expressions for one table.
#[derive(Debug, Clone)]
pub struct Digest {
    /// `FROM ONLY schema.table` (a partition or an inheritance parent holds only its own rows).
    pub from: String,
    /// The key's text (the primary key's values as PostgreSQL writes a row: `(NZ,AKL)`).
    pub key: String,
    /// The key's 64-bit hash.
    pub key_hash: String,
    /// The row's 64-bit hash.
    pub row_hash: String,
}

impl Digest {
    pub fn of(t: &TableInfo) -> Self {
        let key = format!(
            "ROW({})::text",
            t.primary_key
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut columns: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        columns.sort_unstable();
        let row = format!(
            "ROW({})::text",
            columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Self {
            from: format!("ONLY {}", t.qualified()),
            key_hash: hash(&key),
            row_hash: hash(&row),
            key,
        }
    }

    /// Per bucket (the key hash's low bits), in bucket order: its row count and the sum of its
    /// row hashes modulo 2^64 (a sum, not an XOR: two equal rows must not cancel out), packed as
    /// (int4 bucket, int4 rows, int8 sum) records, 4096 buckets to a row (`packed`).
    pub fn buckets_sql(&self, mask: i64) -> String {
        format!(
            "SELECT pg_catalog.string_agg(pg_catalog.int4send(b::int4)
                        || pg_catalog.int4send(n::int4) || pg_catalog.int8send(d), ''::bytea
                        ORDER BY b)
               FROM (SELECT ({kh} & {mask}) AS b, pg_catalog.count(*) AS n,
                            ((pg_catalog.sum({rh}) % {M} + {M}) % {M} - {HALF})::int8 AS d
                       FROM {from} GROUP BY 1) x
              GROUP BY b >> 12 ORDER BY b >> 12",
            kh = self.key_hash,
            rh = self.row_hash,
            from = self.from,
            M = "18446744073709551616::numeric",
            HALF = "9223372036854775808::numeric",
        )
    }

    /// (key hash, row hash, key) of the rows in the buckets `$1` (an int8 array), or of every
    /// row, in key-hash order (so both sides merge as they stream), packed as (int8, int8,
    /// int4 length, UTF-8 key) records, in 256 rows by the hash's top byte.
    pub fn pairs_sql(&self, mask: i64, every_row: bool) -> String {
        let filter = if every_row {
            String::new()
        } else {
            format!(
                " WHERE ({} & {mask})::int8 = ANY($1::int8[])",
                self.key_hash
            )
        };
        format!(
            "SELECT pg_catalog.string_agg(pg_catalog.int8send(kh) || pg_catalog.int8send(rh)
                        || pg_catalog.int4send(pg_catalog.length(k)) || k, ''::bytea ORDER BY kh)
               FROM (SELECT {kh} AS kh, {rh} AS rh, pg_catalog.convert_to({key}, 'UTF8') AS k
                       FROM {from}{filter}) x
              GROUP BY kh >> 56 ORDER BY kh >> 56",
            kh = self.key_hash,
            key = self.key,
            rh = self.row_hash,
            from = self.from
        )
    }
}

/// The bucket mask for a table of about `rows` rows on the larger side: about 16 rows a bucket,
/// at least 1024 and at most 2^19 buckets (8 MiB of bucket records), a power of two.
pub fn mask_for(rows: i64) -> i64 {
    let want = (rows.max(0) as u64 / 16).clamp(1024, 1 << 19);
    want.next_power_of_two() as i64 - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::manifest::Column;

    fn col(name: &str) -> Column {
        Column {
            name: name.into(),
            type_name: "text".into(),
            not_null: false,
        }
    }

    #[test]
    fn columns_are_sorted_by_name_and_names_quoted() {
        let t = TableInfo {
            oid: 1,
            schema: "s".into(),
            name: "T".into(),
            columns: vec![col("z"), col("Id"), col("a b")],
            primary_key: vec!["Id".into()],
            size_bytes: 0,
        };
        let d = Digest::of(&t);
        assert_eq!(d.from, "ONLY \"s\".\"T\"");
        assert_eq!(d.key, "ROW(\"Id\")::text");
        assert!(
            d.row_hash.contains("ROW(\"Id\", \"a b\", \"z\")::text"),
            "{}",
            d.row_hash
        );
        assert!(d.pairs_sql(1023, false).contains("= ANY($1::int8[])"));
        assert!(!d.pairs_sql(1023, true).contains("WHERE"));
    }

    #[test]
    fn masks_are_powers_of_two_minus_one() {
        assert_eq!(mask_for(-1), 1023);
        assert_eq!(mask_for(100), 1023);
        assert_eq!(mask_for(1_000_000), 65_535);
        assert_eq!(mask_for(i64::MAX), (1 << 19) - 1);
    }
}
