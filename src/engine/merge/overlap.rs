//! One table's overlap: bucket digests on both nodes at once, then (key, row hash) pairs of the
//! buckets that differ only — or of every row, when most buckets differ and asking for them
//! bucket by bucket would cost more than it saves.

use anyhow::{Context, Result};

use crate::engine::catalog::TableInfo;
use crate::engine::merge::digest::{mask_for, Digest};
use crate::engine::merge::packed::Records;
use crate::engine::merge::{unique, Cost, Keys, TableOverlap};

/// Stream every pair instead when more than this share of the buckets differ.
const STREAM_ABOVE: f64 = 0.5;
/// "Both nodes numbered their own keys": more than half the common keys conflict, of at least
/// this many.
const SERIAL_MIN_COMMON: u64 = 10;

/// What comparing the two nodes' bucket digests found.
#[derive(Default)]
struct BucketDiff {
    /// Buckets either node has rows in.
    buckets: u64,
    /// Those whose count or sum differ (or that one node lacks), in order.
    differing: Vec<i64>,
    /// Rows of the equal buckets.
    matched: u64,
    local_rows: u64,
    remote_rows: u64,
}

/// Stream both nodes' bucket digests in bucket order and compare them as they come: memory
/// holds the differing buckets' ids only.
fn compare_buckets(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    sql: &str,
) -> Result<BucketDiff> {
    let none = std::iter::empty::<&(dyn postgres::types::ToSql + Sync)>;
    let mut l = Records::new(local.query_raw(sql, none()).context("on the local node")?);
    let mut p = Records::new(peer.query_raw(sql, none()).context("on the peer")?);
    let (mut a, mut b) = (l.bucket()?, p.bucket()?);
    let mut d = BucketDiff::default();
    loop {
        match (a, b) {
            (None, None) => break,
            (Some((ka, na, sa)), Some((kb, nb, sb))) if ka == kb => {
                if na == nb && sa == sb {
                    d.matched += na as u64;
                } else {
                    d.differing.push(ka);
                }
                d.local_rows += na as u64;
                d.remote_rows += nb as u64;
                (a, b) = (l.bucket()?, p.bucket()?);
            }
            (Some((ka, na, _)), Some((kb, _, _))) if ka < kb => {
                d.differing.push(ka);
                d.local_rows += na as u64;
                a = l.bucket()?;
            }
            (Some((ka, na, _)), None) => {
                d.differing.push(ka);
                d.local_rows += na as u64;
                a = l.bucket()?;
            }
            (_, Some((kb, nb, _))) => {
                d.differing.push(kb);
                d.remote_rows += nb as u64;
                b = p.bucket()?;
            }
        }
        d.buckets += 1;
    }
    Ok(d)
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

/// Keys kept per category and table (the counts stay exact beyond it): what an operator reviews,
/// and a bound on the memory a backend or worker spends on a table where most rows differ.
pub const MAX_KEYS: usize = 100_000;

/// A row that does not match: its key and its row hash on each side that holds it (both: a
/// conflict; one: a row on that side only). A merge binds its decisions to the two hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differing {
    pub key: String,
    pub local: Option<i64>,
    pub remote: Option<i64>,
}

/// What the merge of the two pair streams found.
#[derive(Default)]
struct Tally {
    matched: u64,
    conflict: u64,
    local_only: u64,
    remote_only: u64,
    pairs_local: u64,
    pairs_remote: u64,
    keys: Keys,
    /// Every differing row, uncapped (a merge's compare; None for an analysis).
    rows: Option<Vec<Differing>>,
}

impl Tally {
    fn keep(list: &mut Vec<String>, key: &str) {
        if list.len() < MAX_KEYS {
            list.push(key.to_string());
        }
    }

    fn differs(&mut self, key: &str, local: Option<i64>, remote: Option<i64>) {
        if let Some(rows) = &mut self.rows {
            rows.push(Differing {
                key: key.to_string(),
                local,
                remote,
            });
        }
    }

    /// One key hash's rows of both sides (almost always one row or none each).
    fn group(&mut self, mine: &[(String, i64)], theirs: &[(String, i64)]) {
        for (k, h) in mine {
            match theirs.iter().find(|(o, _)| o == k) {
                Some((_, oh)) if oh == h => self.matched += 1,
                Some((_, oh)) => {
                    self.conflict += 1;
                    Self::keep(&mut self.keys.conflict, k);
                    self.differs(k, Some(*h), Some(*oh));
                }
                None => {
                    self.local_only += 1;
                    Self::keep(&mut self.keys.local_only, k);
                    self.differs(k, Some(*h), None);
                }
            }
        }
        for (k, h) in theirs {
            if !mine.iter().any(|(m, _)| m == k) {
                self.remote_only += 1;
                Self::keep(&mut self.keys.remote_only, k);
                self.differs(k, None, Some(*h));
            }
        }
    }
}

/// A stream of (key hash, key, row hash), ordered by key hash, read a key hash at a time.
struct Pairs<'a> {
    records: Records<'a>,
    next: Option<(i64, i64, String)>,
    read: u64,
}

impl<'a> Pairs<'a> {
    /// `which`: the buckets whose pairs to read, or None for every row.
    fn open(c: &'a mut postgres::Client, sql: &str, which: Option<&'a [i64]>) -> Result<Self> {
        let rows = if let Some(which) = which {
            c.query_raw(sql, [&which as &(dyn postgres::types::ToSql + Sync)])?
        } else {
            c.query_raw(
                sql,
                std::iter::empty::<&(dyn postgres::types::ToSql + Sync)>(),
            )?
        };
        let mut p = Self {
            records: Records::new(rows),
            next: None,
            read: 0,
        };
        p.advance()?;
        Ok(p)
    }

    fn advance(&mut self) -> Result<()> {
        self.next = self.records.pair()?;
        if self.next.is_some() {
            self.read += 1;
        }
        Ok(())
    }

    fn peek_hash(&self) -> Option<i64> {
        self.next.as_ref().map(|(h, _, _)| *h)
    }

    /// The rows of key hash `h` (none when the stream is past it).
    fn take(&mut self, h: i64) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        while self.peek_hash() == Some(h) {
            let (_, rh, k) = self.next.take().expect("peeked");
            out.push((k, rh));
            self.advance()?;
        }
        Ok(out)
    }
}

/// Stream both sides' pairs of the differing buckets (or all) in key-hash order and merge them:
/// memory stays bounded by one key hash's rows and the kept keys, however many rows differ.
fn merge_pairs(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    sql: &str,
    which: Option<&[i64]>,
    tally: &mut Tally,
) -> Result<()> {
    let mut l = Pairs::open(local, sql, which).context("on the local node")?;
    let mut p = Pairs::open(peer, sql, which).context("on the peer")?;
    loop {
        let h = match (l.peek_hash(), p.peek_hash()) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (Some(a), Some(b)) => a.min(b),
        };
        let mine = l.take(h).context("on the local node")?;
        let theirs = p.take(h).context("on the peer")?;
        tally.group(&mine, &theirs);
    }
    tally.pairs_local = l.read;
    tally.pairs_remote = p.read;
    Ok(())
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
    Ok(compare_keeping(local, peer, t, false)?.0)
}

/// Compare one table as a merge does: also every differing row with both row hashes, however
/// many (a merge must write them all).
pub fn compare_rows(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    t: &TableInfo,
) -> Result<(TableOverlap, Vec<Differing>)> {
    compare_keeping(local, peer, t, true)
}

fn compare_keeping(
    local: &mut postgres::Client,
    peer: &mut postgres::Client,
    t: &TableInfo,
    every_row: bool,
) -> Result<(TableOverlap, Vec<Differing>)> {
    let d = Digest::of(t);
    let (le, pe) = both(local, peer, |c| estimate(c, t), |c| estimate(c, t))?;
    let mask = mask_for(le.max(pe));
    let sql = d.buckets_sql(mask);
    let BucketDiff {
        buckets,
        differing,
        mut matched,
        local_rows,
        remote_rows,
    } = compare_buckets(local, peer, &sql)?;
    let streamed = buckets > 0 && differing.len() as f64 > STREAM_ABOVE * buckets as f64;
    // Rows of equal buckets match (same count, same sum of 64-bit row hashes).
    let mut tally = Tally {
        rows: every_row.then(Vec::new),
        ..Default::default()
    };
    if streamed {
        matched = 0;
    }
    if !differing.is_empty() {
        let sql = d.pairs_sql(mask, streamed);
        let which = (!streamed).then_some(&differing[..]);
        merge_pairs(local, peer, &sql, which, &mut tally)?;
    }
    matched += tally.matched;
    let Tally {
        mut keys,
        conflict,
        local_only,
        remote_only,
        pairs_local,
        pairs_remote,
        rows,
        ..
    } = tally;
    keys.sort();
    let common = matched + conflict;
    let suspect_serial_keys = common >= SERIAL_MIN_COMMON && conflict * 2 > common;
    let unique_collisions = unique::collisions(local, peer, t, &d, &keys)?;
    let overlap = TableOverlap {
        schema: t.schema.clone(),
        table: t.name.clone(),
        matched,
        conflict,
        local_only,
        remote_only,
        keys_complete: conflict + local_only + remote_only
            == (keys.conflict.len() + keys.local_only.len() + keys.remote_only.len()) as u64,
        local_rows,
        remote_rows,
        suspect_serial_keys,
        unique_collisions,
        cost: Cost {
            buckets,
            buckets_differing: differing.len() as u64,
            pairs_local,
            pairs_remote,
            streamed,
        },
        keys,
    };
    Ok((overlap, rows.unwrap_or_default()))
}
