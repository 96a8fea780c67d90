//! Checking a snapshot's files against its manifest: stored size and SHA-256 always, and with
//! `deep` also the decompressed bytes and row count. Shared by apply (before it touches the
//! target) and `steep snapshot verify`.

use crate::engine::scheduler::{self, Tasks};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Result;

use crate::engine::checksum::HashingReader;
use crate::engine::counters::Counters;
use crate::engine::manifest::{DataFile, Manifest};

/// One file that does not match the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub file: String,
    pub table: Option<String>,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(t) => write!(f, "{} (table {t}): {}", self.file, self.problem),
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

/// Check every file of the snapshot, `parallel` at a time; returns the problems found.
pub fn check(
    dir: &Path,
    m: &Manifest,
    deep: bool,
    parallel: usize,
    progress: &Counters,
) -> Vec<Problem> {
    let mut work: Vec<(&DataFile, Option<String>, bool)> = Vec::new();
    for t in &m.tables {
        for f in &t.files {
            work.push((f, Some(format!("{}.{}", t.schema, t.name)), true));
        }
    }
    if let Some(s) = &m.schema {
        work.push((&s.archive, None, false));
        if let Some(lo) = &s.large_objects {
            work.push((lo, None, false));
        }
    }
    progress.bytes_total.store(
        work.iter()
            .map(|(f, _, _)| f.stored_bytes)
            .sum::<u64>()
            .max(1),
        Ordering::Relaxed,
    );
    let ran = scheduler::run(
        Tasks {
            count: work.len(),
            ..Default::default()
        },
        parallel,
        &|| progress.cancelled(),
        || Ok(()),
        |_, i, _| {
            let (f, table, compressed) = &work[i];
            Ok(check_one(dir, m, f, deep && *compressed, progress)
                .err()
                .map(|e| Problem {
                    file: f.name.clone(),
                    table: table.clone(),
                    problem: format!("{e:#}"),
                }))
        },
    );
    let problems: Vec<Problem> = ran.results.into_iter().flatten().flatten().collect();
    let mut p = problems;
    p.sort_by(|a, b| a.file.cmp(&b.file));
    p
}

/// Raw bytes and rows of a compressed stream, reading at most one byte more than `limit` (a
/// small compressed file can expand to gigabytes).
fn decode_counts<R: Read>(m: &Manifest, r: R, limit: u64) -> Result<(u64, u64)> {
    let mut dec = m.compression.decoder(r)?.take(limit.saturating_add(1));
    let (mut raw, mut rows) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            return Ok((raw, rows));
        }
        raw += n as u64;
        rows += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
}

fn check_one(
    dir: &Path,
    m: &Manifest,
    f: &DataFile,
    deep: bool,
    progress: &Counters,
) -> Result<()> {
    let file = crate::engine::paths::open_inside(dir, &f.name)
        .map_err(|e| anyhow::anyhow!("missing or unreadable ({e})"))?;
    let len = file.metadata()?.len();
    if len != f.stored_bytes {
        anyhow::bail!("{len} bytes on disk, the manifest says {}", f.stored_bytes);
    }
    let mut hashing = HashingReader::new(BufReader::with_capacity(
        1 << 20,
        Cancellable {
            inner: file,
            progress,
        },
    ));
    // Decompress (deep) while hashing; whatever decompression says, the rest of the file is
    // still hashed, and a checksum mismatch (the root cause) is what gets reported.
    let decoded = if deep {
        Some(decode_counts(m, &mut hashing, f.raw_bytes))
    } else {
        None
    };
    let copied = std::io::copy(&mut hashing, &mut std::io::sink());
    if progress.cancelled() {
        // Not a finding: the caller reports the cancel.
        return Ok(());
    }
    copied?;
    let (sha, _) = hashing.finish();
    progress.bytes_done.fetch_add(len, Ordering::Relaxed);
    if sha != f.sha256 {
        anyhow::bail!("checksum mismatch: the file is damaged or was changed");
    }
    match decoded {
        Some(Ok((raw, _))) if raw > f.raw_bytes => anyhow::bail!(
            "decompresses to more than the {} bytes the manifest says",
            f.raw_bytes
        ),
        Some(Ok((raw, rows))) if raw != f.raw_bytes || rows != f.rows => anyhow::bail!(
            "decompresses to {raw} bytes / {rows} rows, the manifest says {} / {}",
            f.raw_bytes,
            f.rows
        ),
        Some(Err(e)) => return Err(e.context("decompressing")),
        _ => {}
    }
    Ok(())
}

/// A file that stops being readable once the run is cancelled, so a check of a large file ends
/// within a read (1 MiB) of the cancel.
struct Cancellable<'a, R> {
    inner: R,
    progress: &'a Counters,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.progress.cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}
