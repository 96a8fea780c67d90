//! The extension SQL compiled into the binary (`embedded_sql/`): one install script per version
//! and the upgrade scripts between versions. Versions are derived from the file names, so adding a
//! script is all a new version needs here.

use include_dir::{include_dir, Dir};
use serde::Serialize;

static EMBEDDED_SQL: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/embedded_sql");

pub const EXTENSION: &str = "steep_repl";

/// A dotted numeric version such as 0.2.0, ordered numerically.
pub fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// What the binary carries, for `steep version` and the lifecycle checks.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Embedded {
    /// The version `steep init` installs or upgrades to: the newest install script.
    pub default_version: String,
    /// Every version with an install script, oldest first.
    pub versions: Vec<String>,
    /// Every upgrade script as (from, to).
    pub upgrades: Vec<(String, String)>,
}

pub fn embedded() -> Embedded {
    let prefix = format!("{EXTENSION}--");
    let mut versions = Vec::new();
    let mut upgrades = Vec::new();
    for f in EMBEDDED_SQL.files() {
        let Some(name) = f.path().file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name
            .strip_prefix(&prefix)
            .and_then(|n| n.strip_suffix(".sql"))
        else {
            continue;
        };
        match stem.split_once("--") {
            Some((from, to)) => upgrades.push((from.to_string(), to.to_string())),
            None => versions.push(stem.to_string()),
        }
    }
    versions.sort_by_key(|v| version_key(v));
    upgrades.sort_by_key(|(f, t)| (version_key(f), version_key(t)));
    Embedded {
        default_version: versions.last().cloned().unwrap_or_default(),
        versions,
        upgrades,
    }
}

/// The query that lists the extension's catalog objects (see `lifecycle::catalog_signature`).
pub fn catalog_signature_query() -> &'static str {
    EMBEDDED_SQL
        .get_file("catalog_signature.sql")
        .and_then(|f| f.contents_utf8())
        .expect("embedded_sql/catalog_signature.sql is compiled in")
}

/// The catalog signature `version` ships with (`steep_repl--<version>.signature`), if embedded.
pub fn signature_text(version: &str) -> Option<&'static str> {
    EMBEDDED_SQL
        .get_file(format!("{EXTENSION}--{version}.signature"))
        .and_then(|f| f.contents_utf8())
}

/// The install script of `version`, if embedded.
pub fn install_script(version: &str) -> Option<&'static str> {
    EMBEDDED_SQL
        .get_file(format!("{EXTENSION}--{version}.sql"))
        .and_then(|f| f.contents_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_versions_are_consistent() {
        let e = embedded();
        assert!(!e.versions.is_empty(), "no install script embedded");
        assert_eq!(e.default_version, *e.versions.last().unwrap());
        for v in &e.versions {
            assert!(install_script(v).is_some_and(|s| !s.is_empty()));
            assert!(
                signature_text(v).is_some_and(|s| !s.is_empty()),
                "no signature for {v}: run STEEP_BLESS=1 scripts/test.sh --pg 18 -- catalog"
            );
        }
        for (from, to) in &e.upgrades {
            assert!(e.versions.contains(from) && e.versions.contains(to));
        }
    }

    #[test]
    fn default_version_is_the_extension_crate_version() {
        let cargo = include_str!("../../ext/Cargo.toml");
        let line = cargo
            .lines()
            .find(|l| l.starts_with("version = "))
            .expect("ext/Cargo.toml has a version");
        let v = line.trim_start_matches("version = ").trim_matches('"');
        assert_eq!(embedded().default_version, v);
    }

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("0.10.0") > version_key("0.9.1"));
    }
}
