//! Compression of snapshot data files: none, gzip, lz4 or zstd, each with a level.

use std::io::{self, Read, Write};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    None,
    Gzip,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    pub algorithm: Algorithm,
    pub level: i32,
}

impl Compression {
    pub const NONE: Self = Self {
        algorithm: Algorithm::None,
        level: 0,
    };

    /// `none`, `gzip`, `lz4`, `zstd`, optionally `:LEVEL` (e.g. `zstd:9`); `level` overrides.
    pub fn parse(spec: &str, level: Option<i32>) -> Result<Self> {
        let (name, lvl) = match spec.split_once(':') {
            Some((n, l)) => (
                n,
                Some(l.parse::<i32>().map_err(|_| {
                    anyhow::anyhow!("invalid compression level {l:?} in {spec:?}: give a number")
                })?),
            ),
            None => (spec, None),
        };
        let algorithm = match name.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Algorithm::None,
            "gzip" | "gz" => Algorithm::Gzip,
            "lz4" => Algorithm::Lz4,
            "zstd" | "zst" => Algorithm::Zstd,
            other => bail!("unknown compression {other:?}: use none, gzip, lz4 or zstd"),
        };
        let level = level.or(lvl).unwrap_or(Self::default_level(algorithm));
        let (lo, hi) = Self::level_range(algorithm);
        if !(lo..=hi).contains(&level) {
            bail!("compression level {level} is out of range for {name}: use {lo}..{hi}");
        }
        Ok(Self { algorithm, level })
    }

    pub fn default_level(a: Algorithm) -> i32 {
        match a {
            Algorithm::None => 0,
            Algorithm::Gzip => 6,
            Algorithm::Lz4 => 1,
            Algorithm::Zstd => 3,
        }
    }

    pub fn level_range(a: Algorithm) -> (i32, i32) {
        match a {
            Algorithm::None => (0, 0),
            Algorithm::Gzip => (1, 9),
            Algorithm::Lz4 => (1, 12),
            Algorithm::Zstd => (1, 19),
        }
    }

    pub fn extension(&self) -> &'static str {
        match self.algorithm {
            Algorithm::None => "",
            Algorithm::Gzip => ".gz",
            Algorithm::Lz4 => ".lz4",
            Algorithm::Zstd => ".zst",
        }
    }

    /// How the SQL API and the snapshots table name it (`zstd`, `gzip:9`, ...).
    pub fn name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::None => "none",
            Algorithm::Gzip => "gzip",
            Algorithm::Lz4 => "lz4",
            Algorithm::Zstd => "zstd",
        }
    }

    pub fn encoder<W: Write>(&self, w: W) -> Result<Encoder<W>> {
        Ok(match self.algorithm {
            Algorithm::None => Encoder::Plain(w),
            Algorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(self.level as u32),
            )),
            Algorithm::Lz4 => Encoder::Lz4(
                lz4::EncoderBuilder::new()
                    .level(self.level as u32)
                    .block_size(lz4::BlockSize::Max4MB)
                    .build(w)?,
            ),
            Algorithm::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(w, self.level)?),
        })
    }

    pub fn decoder<'a, R: Read + 'a>(&self, r: R) -> Result<Box<dyn Read + 'a>> {
        Ok(match self.algorithm {
            Algorithm::None => Box::new(r),
            Algorithm::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Algorithm::Lz4 => Box::new(lz4::Decoder::new(r)?),
            Algorithm::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

/// A compressing writer that must be finished to write its trailer.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Lz4(lz4::Encoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn finish(self) -> Result<W> {
        Ok(match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Lz4(e) => {
                let (w, r) = e.finish();
                r?;
                w
            }
            Encoder::Zstd(e) => e.finish()?,
        })
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Lz4(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Lz4(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for spec in ["none", "gzip", "gzip:1", "lz4", "lz4:9", "zstd", "zstd:19"] {
            let c = Compression::parse(spec, None).unwrap();
            let mut e = c.encoder(Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let stored = e.finish().unwrap();
            let mut back = Vec::new();
            c.decoder(&stored[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{spec}");
        }
    }

    #[test]
    fn parse_levels_and_errors() {
        assert_eq!(Compression::parse("zstd", None).unwrap().level, 3);
        assert_eq!(Compression::parse("zstd:7", None).unwrap().level, 7);
        assert_eq!(Compression::parse("gzip", Some(9)).unwrap().level, 9);
        assert!(Compression::parse("rar", None)
            .unwrap_err()
            .to_string()
            .contains("unknown compression"));
        assert!(Compression::parse("zstd:99", None)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(Compression::parse("gzip:x", None).is_err());
        assert_eq!(Compression::parse("lz4", None).unwrap().extension(), ".lz4");
    }
}
