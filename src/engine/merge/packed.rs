//! Reading the digests nodes send packed: each result row is one `bytea` holding many fixed-layout
//! records (big-endian, as `int4send`/`int8send` write them), so a million buckets cost 16 bytes
//! each on the wire instead of a protocol row each (about 55 bytes).

use anyhow::{bail, Context, Result};
use postgres::fallible_iterator::FallibleIterator;

/// Records of a query whose rows are single `bytea` columns, one record at a time.
pub struct Records<'a> {
    rows: postgres::RowIter<'a>,
    chunk: Vec<u8>,
    at: usize,
}

impl<'a> Records<'a> {
    pub fn new(rows: postgres::RowIter<'a>) -> Self {
        Self {
            rows,
            chunk: Vec::new(),
            at: 0,
        }
    }

    /// The next `n` bytes of the stream, or None at its end (between records only).
    fn bytes(&mut self, n: usize) -> Result<Option<&[u8]>> {
        while self.at == self.chunk.len() {
            match self.rows.next()? {
                Some(r) => {
                    self.chunk = r.try_get(0)?;
                    self.at = 0;
                }
                None => return Ok(None),
            }
        }
        let Some(b) = self.chunk.get(self.at..self.at + n) else {
            bail!("a packed digest ends inside a record");
        };
        self.at += n;
        Ok(Some(b))
    }

    fn i64(&mut self) -> Result<Option<i64>> {
        Ok(self
            .bytes(8)?
            .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes"))))
    }

    fn i32(&mut self) -> Result<Option<i32>> {
        Ok(self
            .bytes(4)?
            .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes"))))
    }

    /// A bucket record: (bucket, rows, digest).
    pub fn bucket(&mut self) -> Result<Option<(i64, i64, i64)>> {
        let Some(b) = self.i32()? else {
            return Ok(None);
        };
        let n = self.i32()?.context("a bucket record without its count")?;
        let d = self.i64()?.context("a bucket record without its digest")?;
        Ok(Some((i64::from(b), i64::from(n), d)))
    }

    /// A pair record: (key hash, row hash, key).
    pub fn pair(&mut self) -> Result<Option<(i64, i64, String)>> {
        let Some(kh) = self.i64()? else {
            return Ok(None);
        };
        let rh = self.i64()?.context("a pair record without its row hash")?;
        let len = self.i32()?.context("a pair record without its key")?;
        let len = usize::try_from(len).context("a negative key length")?;
        let key = self.bytes(len)?.context("a pair record without its key")?;
        Ok(Some((kh, rh, String::from_utf8(key.to_vec())?)))
    }
}
