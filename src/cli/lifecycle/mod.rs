//! The extension's life on a server: what is there (versions, preload, catalog), what this binary
//! embeds, and bringing the one to the other: install the package files, CREATE / ALTER EXTENSION,
//! shared_preload_libraries, and a repair that reinstalls while keeping the tables' rows.

mod grants;
mod package;
mod repair;
mod signature;

pub use grants::*;
pub use package::*;
pub use repair::*;
pub use signature::*;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::embedded::{version_key, EXTENSION};
use crate::sql::quote_literal;

pub const MIN_SERVER_VERSION_NUM: i32 = 150000;

/// What a server has of steep_repl, read in one go.
#[derive(Debug, Clone, Serialize)]
pub struct ServerState {
    pub server_version: String,
    pub server_version_num: i32,
    pub database: String,
    pub user: String,
    pub superuser: bool,
    /// Versions the server's extension directory can install (pg_available_extension_versions).
    pub available_versions: Vec<String>,
    /// `pg_extension.extversion` in this database.
    pub installed: Option<String>,
    /// `steep_repl.version()`: the loaded library's version.
    pub library: Option<String>,
    /// The running value of shared_preload_libraries (None when this role may not read it).
    pub shared_preload_libraries: Option<String>,
    /// The value in the configuration files (None when this role may not read them).
    pub configured_preload: Option<String>,
    /// Whether steep_repl was loaded at server start: from the setting, else from the library
    /// itself (health()), else unknown.
    pub preloaded: Option<bool>,
}

impl ServerState {
    pub fn preload_active(&self) -> bool {
        self.preloaded == Some(true)
    }

    /// steep_repl is in the configuration but the server has not been restarted since.
    pub fn preload_pending(&self) -> bool {
        !self.preload_active()
            && self
                .configured_preload
                .as_deref()
                .is_some_and(lists_library)
    }

    pub fn available(&self, version: &str) -> bool {
        self.available_versions.iter().any(|v| v == version)
    }
}

/// Whether a shared_preload_libraries value names steep_repl.
pub fn lists_library(list: &str) -> bool {
    split_list(list)
        .iter()
        .any(|l| l == EXTENSION || l.ends_with("/steep_repl"))
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `ALTER SYSTEM` adding steep_repl to the libraries already configured.
pub fn preload_statement(current: &str) -> String {
    let mut libs = split_list(current);
    if !libs.iter().any(|l| l == EXTENSION) {
        libs.push(EXTENSION.to_string());
    }
    let values: Vec<String> = libs.iter().map(|l| quote_literal(l)).collect();
    format!(
        "ALTER SYSTEM SET shared_preload_libraries = {}",
        values.join(", ")
    )
}

pub fn inspect(client: &mut postgres::Client) -> Result<ServerState> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'),
                    current_setting('server_version_num')::int,
                    current_database()::text, current_user::text,
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                    coalesce((SELECT array_agg(version::text ORDER BY version)
                              FROM pg_available_extension_versions WHERE name = $1), '{}'),
                    (SELECT extversion FROM pg_extension WHERE extname = $1),
                    -- Superuser-only to read; CASE keeps others from an error.
                    CASE WHEN pg_has_role('pg_read_all_settings', 'MEMBER')
                         THEN current_setting('shared_preload_libraries') END",
            &[&EXTENSION],
        )
        .context("reading the server's state")?;
    let installed: Option<String> = row.get(6);
    let shared_preload_libraries: Option<String> = row.get(7);
    // The functions may be gone (a damaged install): that is for doctor to report.
    let (library, library_preloaded) = match installed {
        Some(_) => (
            client
                .query_one("SELECT steep_repl.version()", &[])
                .ok()
                .map(|r| r.get(0)),
            client
                .query_one(
                    "SELECT shared_memory_available FROM steep_repl.health()",
                    &[],
                )
                .ok()
                .map(|r| r.get::<_, bool>(0)),
        ),
        None => (None, None),
    };
    let preloaded = shared_preload_libraries
        .as_deref()
        .map(lists_library)
        .or(library_preloaded);
    // Readable by superusers and pg_read_all_settings members only.
    let configured_preload = client
        .query_opt(
            // A value waiting for a restart carries error 'setting could not be applied'.
            "SELECT setting FROM pg_file_settings
             WHERE name = 'shared_preload_libraries'
             ORDER BY seqno DESC LIMIT 1",
            &[],
        )
        .ok()
        .map(|r| r.map(|r| r.get::<_, String>(0)).unwrap_or_default());
    Ok(ServerState {
        server_version: row.get(0),
        server_version_num: row.get(1),
        database: row.get(2),
        user: row.get(3),
        superuser: row.get::<_, Option<bool>>(4).unwrap_or(false),
        available_versions: row.get(5),
        installed,
        library,
        shared_preload_libraries,
        configured_preload,
        preloaded,
    })
}

/// Compare dotted versions numerically.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    version_key(a).cmp(&version_key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_lists() {
        assert!(lists_library("pg_stat_statements, steep_repl"));
        assert!(lists_library("\"steep_repl\""));
        assert!(!lists_library("steep_replx"));
        assert!(!lists_library(""));
        assert_eq!(
            preload_statement("pg_stat_statements"),
            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', 'steep_repl'"
        );
        assert_eq!(
            preload_statement(""),
            "ALTER SYSTEM SET shared_preload_libraries = 'steep_repl'"
        );
    }

    #[test]
    fn signature_round_trip_and_diff() {
        let a = vec![
            SigEntry {
                kind: "function".into(),
                identity: "steep_repl.f(text)".into(),
                definition: "returns\ttext".into(),
            },
            SigEntry {
                kind: "table".into(),
                identity: "steep_repl.t".into(),
                definition: String::new(),
            },
        ];
        let parsed = parse_signature(&render_signature(&a)).unwrap();
        assert_eq!(parsed, a);
        let mut b = a.clone();
        b[0].definition = "returns int".into();
        b.remove(1);
        b.push(SigEntry {
            kind: "view".into(),
            identity: "steep_repl.v".into(),
            definition: String::new(),
        });
        let d = diff_signatures(&a, &b);
        assert_eq!(d.missing.len(), 1);
        assert_eq!(d.extra.len(), 1);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            d.summary(),
            "missing table steep_repl.t; unexpected view steep_repl.v; changed function steep_repl.f(text)"
        );
    }

    #[test]
    fn local_hosts() {
        assert!(is_local(None));
        assert!(is_local(Some("/var/run/postgresql")));
        assert!(is_local(Some("127.0.0.1")));
        assert!(is_local(Some("localhost")));
        assert!(!is_local(Some("db.example.com")));
        assert!(!is_local(Some("10.0.0.5")));
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("0.10.0", "0.9.0"), Greater);
        assert_eq!(version_cmp("0.1.0", "0.1.0"), Equal);
    }
}
