//! manifest.json: what a snapshot holds. It is written last and atomically (temp file, fsync,
//! rename, fsync of the directory), so its presence means the snapshot is complete.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::compress::Compression;
use crate::schema_shape::{ColumnShape, TableShape};

pub const FILE: &str = "manifest.json";
/// The largest count or size a manifest may state (what SQL's bigint holds).
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// 2: the schema is a pg_dump custom-format archive (1 held pre-data and post-data SQL text),
/// and the manifest names the role that made the snapshot. 3: the source's table shapes
/// (`shapes`), which `--schema verify` compares with the target's; format 2 is still read (its
/// shapes are derived from the tables). 4: what the schema needs on a target and does not create
/// (`needs`: roles its grants and policies name, types from schemas left out); 2 and 3 are still
/// read (their needs are what the archive's table of contents names).
pub const FORMAT: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub snapshot_id: String,
    /// direct (a background worker on the server) or client (the steep CLI).
    pub mode: String,
    pub created_at: String,
    pub source: Source,
    /// WAL position when the snapshot was taken (pg_current_wal_lsn in the exporting
    /// transaction).
    pub lsn: String,
    /// The logical replication slot whose consistent point the snapshot is at (`snapshot
    /// generate --slot`, replication init); `lsn` is then that consistent point.
    pub slot: Option<String>,
    pub compression: Compression,
    pub parallel: usize,
    pub tables: Vec<Table>,
    pub sequences: Vec<Sequence>,
    /// Schema DDL written by pg_dump (None when it was not requested or not available).
    pub schema: Option<SchemaFiles>,
    pub generator: String,
    /// The role that made the snapshot (current_user of its connections). On the server, only
    /// that role, its members, superusers and pg_read_server_files may apply it.
    #[serde(default)]
    pub owner: Option<String>,
    /// The source's table shapes (partitioned tables and generated columns included), read in the
    /// snapshot's transaction with the one shape query. Empty in format 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<TableShape>,
    /// What the schema archive needs on a target that it does not create (format 4).
    #[serde(default, skip_serializing_if = "Needs::is_empty")]
    pub needs: Needs,
}

/// Roles and types a snapshot's schema names but does not create (engine::needs reads them on
/// the source and checks them on the target).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    /// Roles granted privileges on what the snapshot holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grantees: Vec<String>,
    /// Roles named by row-security policies (`TO role`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_roles: Vec<String>,
    /// Schema-qualified types the tables use that the archive does not create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.grantees.is_empty() && self.policy_roles.is_empty() && self.types.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub node_id: Option<String>,
    pub database: String,
    pub server_version: String,
    pub system_identifier: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// format_type() with search_path = pg_catalog (schema-qualified where not in pg_catalog).
    #[serde(rename = "type")]
    pub type_name: String,
    pub not_null: bool,
}

/// The columns as a SELECT list: `"a", "b"` (empty is valid there).
pub fn select_list(columns: &[Column]) -> String {
    let names: Vec<String> = columns
        .iter()
        .map(|c| crate::sql::quote_ident(&c.name))
        .collect();
    names.join(", ")
}

/// The columns after a COPY table name: ` ("a", "b")`, or nothing when there are none (a table
/// without columns, or with generated ones only, is copied as empty rows).
pub fn copy_list(columns: &[Column]) -> String {
    if columns.is_empty() {
        String::new()
    } else {
        format!(" ({})", select_list(columns))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// The columns COPY carries, in order (generated columns are left out).
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub rows: u64,
    /// Bytes of COPY text before compression.
    pub raw_bytes: u64,
    /// Bytes on disk.
    pub stored_bytes: u64,
    pub files: Vec<DataFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// Relative to the snapshot directory, e.g. data/t00003.001.copy.zst.
    pub name: String,
    pub rows: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaFiles {
    /// The pg_dump custom-format archive (pre-data and post-data sections), restored with pg_restore.
    pub archive: DataFile,
    /// pg_dump's version line.
    pub pg_dump: String,
    /// The source's large objects (pg_dump's custom format: metadata, owners, privileges and
    /// contents), when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<DataFile>,
}

impl Table {
    pub fn qualified(&self) -> String {
        crate::sql::qualified(&self.schema, &self.name)
    }
}

impl Manifest {
    /// Read and validate DIR/manifest.json.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let text = match crate::engine::paths::open_inside(dir, FILE).and_then(|mut f| {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut f, &mut t).map(|_| t)
        }) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} has no {FILE}: the snapshot is incomplete (generate did not finish) or this is \
                 not a steep snapshot directory",
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid steep manifest", path.display()))?;
        m.validate()
            .with_context(|| format!("{} is not a valid steep manifest", path.display()))?;
        Ok(m)
    }

    /// Structural checks: version, file names confined to the directory, sums that add up.
    pub fn validate(&self) -> Result<()> {
        if self.format == 1 {
            bail!(
                "format 1 was written by an older steep (its schema is SQL text, which this steep \
                 no longer runs): generate the snapshot again with this steep"
            );
        }
        if !(2..=FORMAT).contains(&self.format) {
            bail!(
                "format {} is not supported by this steep (it reads format {FORMAT}): use a \
                 matching steep release",
                self.format
            );
        }
        let mut names = std::collections::HashSet::new();
        // Every number is checked as it is added: counts that wrap (2^64 - 1 plus 1 is 0) would
        // otherwise add up, and anything beyond i64 cannot be stored or compared in SQL.
        let sum = |what: &str, values: Vec<u64>| -> Result<u64> {
            values
                .into_iter()
                .try_fold(0u64, |acc, v| {
                    (v <= MAX_COUNT).then_some(()).and(acc.checked_add(v))
                })
                .filter(|total| *total <= MAX_COUNT)
                .ok_or_else(|| anyhow::anyhow!("{what}: a count is out of range"))
        };
        let (mut all_raw, mut all_rows, mut all_stored) = (0u64, 0u64, 0u64);
        for t in &self.tables {
            let what = format!("table {}", t.qualified());
            let rows = sum(&what, t.files.iter().map(|f| f.rows).collect())?;
            let raw = sum(&what, t.files.iter().map(|f| f.raw_bytes).collect())?;
            let stored = sum(&what, t.files.iter().map(|f| f.stored_bytes).collect())?;
            if rows != t.rows || raw != t.raw_bytes || stored != t.stored_bytes {
                bail!("table {}: the per-file counts do not add up", t.qualified());
            }
            for (total, n) in [
                (&mut all_raw, raw),
                (&mut all_rows, rows),
                (&mut all_stored, stored),
            ] {
                *total = total
                    .checked_add(n)
                    .filter(|t| *t <= MAX_COUNT)
                    .ok_or_else(|| anyhow::anyhow!("the snapshot's totals are out of range"))?;
            }
            for f in &t.files {
                check_file_name(&f.name)?;
                if !names.insert(f.name.clone()) {
                    bail!("file {} is listed twice", f.name);
                }
            }
        }
        if let Some(s) = &self.schema {
            check_file_name(&s.archive.name)?;
            if let Some(lo) = &s.large_objects {
                check_file_name(&lo.name)?;
                if lo.stored_bytes > MAX_COUNT {
                    bail!("the large objects' archive size is out of range");
                }
            }
            if s.archive.stored_bytes > MAX_COUNT || s.archive.raw_bytes > MAX_COUNT {
                bail!("the schema archive's size is out of range");
            }
        }
        Ok(())
    }

    /// The source's table shapes; for a format-2 snapshot, what its tables say (no partitioned
    /// parents, no generated columns, no defaults).
    pub fn table_shapes(&self) -> Vec<TableShape> {
        if !self.shapes.is_empty() || self.format > 2 {
            return self.shapes.clone();
        }
        self.tables
            .iter()
            .map(|t| TableShape {
                schema: t.schema.clone(),
                name: t.name.clone(),
                partitioned: false,
                columns: t
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ColumnShape {
                        name: c.name.clone(),
                        position: i as i32 + 1,
                        type_name: c.type_name.clone(),
                        not_null: c.not_null,
                        default: None,
                        // Format 2 left generated columns out without saying so.
                        generated: None,
                    })
                    .collect(),
                primary_key: t.primary_key.clone(),
            })
            .collect()
    }

    /// Write DIR/manifest.json atomically and durably.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, dir.join(FILE))
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    pub fn raw_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.raw_bytes).sum()
    }

    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.stored_bytes).sum()
    }

    /// What a finished generate reports (the job's result, the CLI's --json).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "snapshot_id": self.snapshot_id,
            "mode": self.mode,
            "tables": self.tables.len(),
            "rows": self.rows(),
            "raw_bytes": self.raw_bytes(),
            "stored_bytes": self.stored_bytes(),
            "sequences": self.sequences.len(),
            "schema": self.schema.is_some(),
            "lsn": self.lsn,
            "slot": self.slot,
        })
    }
}

/// A data file name must stay inside the snapshot directory.
fn check_file_name(name: &str) -> Result<()> {
    let p = Path::new(name);
    let ok = !name.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !name.contains('\0');
    if !ok {
        bail!("file name {name:?} leaves the snapshot directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            snapshot_id: "s".into(),
            mode: "client".into(),
            created_at: "now".into(),
            source: Source {
                node_id: None,
                database: "db".into(),
                server_version: "18.6".into(),
                system_identifier: "1".into(),
            },
            lsn: "0/0".into(),
            slot: None,
            compression: Compression::NONE,
            parallel: 1,
            tables: vec![Table {
                schema: "public".into(),
                name: "t".into(),
                columns: vec![Column {
                    name: "a".into(),
                    type_name: "integer".into(),
                    not_null: true,
                }],
                primary_key: vec!["a".into()],
                rows: 2,
                raw_bytes: 4,
                stored_bytes: 4,
                files: vec![DataFile {
                    name: "data/t00000.000.copy".into(),
                    rows: 2,
                    raw_bytes: 4,
                    stored_bytes: 4,
                    sha256: "x".into(),
                }],
            }],
            sequences: vec![],
            schema: None,
            generator: "steep".into(),
            owner: Some("alice".into()),
            shapes: Vec::new(),
            needs: Needs::default(),
        }
    }

    #[test]
    fn write_read_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let m = sample();
        m.write(d.path()).unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap(), m);
        assert!(!d.path().join("manifest.json.tmp").exists());
    }

    #[test]
    fn malformed_manifests_are_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let e = Manifest::read(d.path()).unwrap_err().to_string();
        assert!(e.contains("has no manifest.json"), "{e}");
        std::fs::write(d.path().join(FILE), "{ not json").unwrap();
        let e = format!("{:#}", Manifest::read(d.path()).unwrap_err());
        assert!(e.contains("not a valid steep manifest"), "{e}");
        let mut m = sample();
        m.tables[0].files[0].name = "../../etc/passwd".into();
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("leaves the snapshot directory"));
        let mut m = sample();
        m.tables[0].rows = 3;
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("do not add up"));
        let mut m = sample();
        let mut wrap = sample();
        wrap.tables[0].files.push(DataFile {
            name: "data/t00000.001.copy".into(),
            rows: u64::MAX,
            raw_bytes: 0,
            stored_bytes: 0,
            sha256: "y".into(),
        });
        wrap.tables[0].files[0].rows = 1;
        wrap.tables[0].rows = 0; // u64::MAX + 1 wraps to 0 without checked arithmetic
        assert!(wrap
            .validate()
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        m.format = 99;
        assert!(m.validate().unwrap_err().to_string().contains("format 99"));
        let text = serde_json::to_string(&sample())
            .unwrap()
            .replace("\"mode\"", "\"extra\":1,\"mode\"");
        std::fs::write(d.path().join(FILE), text).unwrap();
        assert!(Manifest::read(d.path()).is_err());
    }
}
