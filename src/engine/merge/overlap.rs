//! One table's overlap: bucket digests on both nodes at once, then (key, row hash) pairs of the
//! buckets that differ only — or of every row, when most buckets differ and asking for them
//! bucket by bucket would cost more than it saves.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result};

use crate::engine::catalog::TableInfo;
use crate::engine::merge::digest::{mask_for, Digest};
use crate::engine::merge::{unique, Cost, Keys, TableOverlap};

/// Stream every pair instead when more than this share of the buckets differ.
const STREAM_ABOVE: f64 = 0.5;
/// "Both nodes numbered their own keys": more than half the common keys conflict, of at least
/// this many.
const SERIAL_MIN_COMMON: u64 = 10;

type Buckets = HashMap<i64, (i64, String)>;

fn buckets(c: &mut postgres::Client, sql: &str) -> Result<Buckets> {
    Ok(c.query(sql, &[])?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

fn pairs(c: &mut postgres::Client, sql: &str, which: &[i64]) -> Result<HashMap<String, i64>> {
    let rows = if sql.contains("$1") {
        c.query(sql, &[&which])?
    } else {
        c.query(sql, &[])?
    };
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The planner's row estimate (it only sizes the buckets).
fn estimate(c: &mut postgres::Client, t: &TableInfo) -> Result<i64> {
    Ok(c.query_opt(
        "SELECT greatest(reltuples, 0)::int8 FROM pg_catalog.pg_class
          WHERE oid = pg_catalog.to_regclass($1)",
        &[&t.qualified()],
    )?
    .map_or(0, |r| r.get(0)))
}

/// Run `a` on the local connection and `b` on the peer's at the same time.
fn both<A: Send, B: Send>(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    a: impl FnOnce(&mut postgres::Client) -> Result<A> + Send,
    b: impl FnOnce(&mut postgres::Client) -> Result<B> + Send,
) -> Result<(A, B)> {
    std::thread::scope(|s| {
        let h = s.spawn(|| b(peer));
        let ra = a(local);
        let rb = h
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a digest thread panicked")));
        Ok((ra.context("on the local node")?, rb.context("on the peer")?))
    })
}

/// Compare one table. Both connections are in a REPEATABLE READ transaction of the caller's, so
/// every step of a node sees the same rows.
pub fn compare(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    t: &TableInfo,
) -> Result<TableOverlap> {
    let d = Digest::of(t);
    let (le, pe) = both(local, peer, |c| estimate(c, t), |c| estimate(c, t))?;
    let mask = mask_for(le.max(pe));
    let sql = d.buckets_sql(mask);
    let (lb, pb) = both(local, peer, |c| buckets(c, &sql), |c| buckets(c, &sql))?;
    let count = |b: &Buckets| b.values().map(|(n, _)| *n as u64).sum::<u64>();
    let (local_rows, remote_rows) = (count(&lb), count(&pb));
    let all: BTreeSet<i64> = lb.keys().chain(pb.keys()).copied().collect();
    let differing: Vec<i64> = all
        .iter()
        .copied()
        .filter(|b| lb.get(b) != pb.get(b))
        .collect();
    let streamed = !all.is_empty() && differing.len() as f64 > STREAM_ABOVE * all.len() as f64;
    // Rows of equal buckets match (same count, same sum of 64-bit row hashes).
    let mut matched: u64 = all
        .iter()
        .filter(|b| lb.get(b) == pb.get(b))
        .map(|b| lb.get(b).map_or(0, |(n, _)| *n as u64))
        .sum();
    let (lp, pp) = if differing.is_empty() {
        (HashMap::new(), HashMap::new())
    } else {
        let sql = d.pairs_sql(mask, streamed);
        both(
            local,
            peer,
            |c| pairs(c, &sql, &differing),
            |c| pairs(c, &sql, &differing),
        )?
    };
    let mut keys = Keys::default();
    if streamed {
        matched = 0;
    }
    for (k, h) in &lp {
        match pp.get(k) {
            Some(ph) if ph == h => matched += 1,
            Some(_) => keys.conflict.push(k.clone()),
            None => keys.local_only.push(k.clone()),
        }
    }
    keys.remote_only = pp
        .keys()
        .filter(|k| !lp.contains_key(*k))
        .cloned()
        .collect();
    keys.sort();
    let common = matched + keys.conflict.len() as u64;
    let suspect_serial_keys =
        common >= SERIAL_MIN_COMMON && keys.conflict.len() as u64 * 2 > common;
    let unique_collisions = unique::collisions(local, peer, t, &d, &keys)?;
    Ok(TableOverlap {
        schema: t.schema.clone(),
        table: t.name.clone(),
        matched,
        conflict: keys.conflict.len() as u64,
        local_only: keys.local_only.len() as u64,
        remote_only: keys.remote_only.len() as u64,
        local_rows,
        remote_rows,
        suspect_serial_keys,
        unique_collisions,
        cost: Cost {
            buckets: all.len() as u64,
            buckets_differing: differing.len() as u64,
            pairs_local: lp.len() as u64,
            pairs_remote: pp.len() as u64,
            streamed,
        },
        keys,
    })
}
