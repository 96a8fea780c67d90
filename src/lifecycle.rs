//! The extension's life on a server: what is there (versions, preload, catalog), what this binary
//! embeds, and bringing the one to the other: install the package files, CREATE / ALTER EXTENSION,
//! shared_preload_libraries, and a repair that reinstalls while keeping the tables' rows.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::embedded::{self, version_key, EXTENSION};
use crate::paths;
use crate::sql::{quote_ident, quote_literal};

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

// ---------------------------------------------------------------------------------------------
// Catalog signature

/// One catalog object of the extension.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SigEntry {
    pub kind: String,
    pub identity: String,
    pub definition: String,
}

impl std::fmt::Display for SigEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.identity)
    }
}

/// The extension's catalog objects as this server has them.
pub fn catalog_signature(client: &mut postgres::Client) -> Result<Vec<SigEntry>> {
    let mut tx = client.transaction()?;
    // Names come out schema-qualified only when their schema is not on the search_path.
    tx.batch_execute("SET LOCAL search_path = pg_catalog, pg_temp")?;
    let rows = tx
        .query(embedded::catalog_signature_query(), &[])
        .context("reading the steep_repl catalog signature")?;
    tx.commit()?;
    let mut out: Vec<SigEntry> = rows
        .iter()
        .map(|r| SigEntry {
            kind: r.get(0),
            identity: r.get(1),
            definition: r.get(2),
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Text form, one object per line: kind, identity, definition separated by tabs.
pub fn render_signature(entries: &[SigEntry]) -> String {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "{}\t{}\t{}\n",
            esc(&e.kind),
            esc(&e.identity),
            esc(&e.definition)
        ));
    }
    out
}

pub fn parse_signature(text: &str) -> Result<Vec<SigEntry>> {
    let unesc = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some(o) => out.push(o),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        let [kind, identity, definition] = parts[..] else {
            bail!("malformed signature line {}: {line:?}", i + 1);
        };
        out.push(SigEntry {
            kind: unesc(kind),
            identity: unesc(identity),
            definition: unesc(definition),
        });
    }
    out.sort();
    Ok(out)
}

/// The signature `version` ships with.
pub fn embedded_signature(version: &str) -> Option<Vec<SigEntry>> {
    embedded::signature_text(version).and_then(|t| parse_signature(t).ok())
}

#[derive(Debug, Default, Serialize)]
pub struct SigDiff {
    pub missing: Vec<SigEntry>,
    pub extra: Vec<SigEntry>,
    /// (expected, actual)
    pub changed: Vec<(SigEntry, SigEntry)>,
}

impl SigDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }

    /// A one-line summary naming up to a few objects.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let names = |v: &mut dyn Iterator<Item = &SigEntry>| {
            let all: Vec<String> = v.map(ToString::to_string).collect();
            let shown = all.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if all.len() > 3 {
                format!("{shown} and {} more", all.len() - 3)
            } else {
                shown
            }
        };
        if !self.missing.is_empty() {
            parts.push(format!("missing {}", names(&mut self.missing.iter())));
        }
        if !self.extra.is_empty() {
            parts.push(format!("unexpected {}", names(&mut self.extra.iter())));
        }
        if !self.changed.is_empty() {
            parts.push(format!(
                "changed {}",
                names(&mut self.changed.iter().map(|(e, _)| e))
            ));
        }
        parts.join("; ")
    }
}

pub fn diff_signatures(expected: &[SigEntry], actual: &[SigEntry]) -> SigDiff {
    let key = |e: &SigEntry| (e.kind.clone(), e.identity.clone());
    let exp: BTreeMap<_, _> = expected.iter().map(|e| (key(e), e)).collect();
    let act: BTreeMap<_, _> = actual.iter().map(|e| (key(e), e)).collect();
    let mut d = SigDiff::default();
    for (k, e) in &exp {
        match act.get(k) {
            None => d.missing.push((*e).clone()),
            Some(a) if a.definition != e.definition => d.changed.push(((*e).clone(), (*a).clone())),
            Some(_) => {}
        }
    }
    for (k, a) in &act {
        if !exp.contains_key(k) {
            d.extra.push((*a).clone());
        }
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Packages: the built extension files `steep init` installs into a server on this machine.

#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    #[serde(skip)]
    pub dir: PathBuf,
    pub version: String,
    pub pg_major: u32,
}

/// `explicit`, else `STEEP_PACKAGE_DIR`, else `$STEEP_HOME/packages/pg<major>` (written by
/// scripts/install-extension.sh, which ./install.sh runs).
pub fn package_dir(major: u32, explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("STEEP_PACKAGE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| paths::steep_home().join(format!("packages/pg{major}")))
}

pub fn open_package(dir: &Path) -> Result<Package> {
    let meta = dir.join("package.json");
    let text = fs::read_to_string(&meta).with_context(|| {
        format!(
            "no steep_repl package at {} (build one with ./install.sh or \
             scripts/install-extension.sh --pg <major>, or pass --package DIR)",
            dir.display()
        )
    })?;
    let mut pkg: Package =
        serde_json::from_str(&text).with_context(|| format!("reading {}", meta.display()))?;
    pkg.dir = dir.to_path_buf();
    for f in [pkg.library(), pkg.dir.join("extension/steep_repl.control")] {
        if !f.is_file() {
            bail!(
                "the package at {} is incomplete: {} is missing",
                dir.display(),
                f.display()
            );
        }
    }
    Ok(pkg)
}

impl Package {
    pub fn library(&self) -> PathBuf {
        self.dir.join("lib/steep_repl.so")
    }

    pub fn extension_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for e in fs::read_dir(self.dir.join("extension"))? {
            let p = e?.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// The server's library and share directories, from the `pg_config` view (superuser only).
pub fn server_dirs(client: &mut postgres::Client) -> Result<(PathBuf, PathBuf)> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_config WHERE name IN ('PKGLIBDIR', 'SHAREDIR')",
            &[],
        )
        .map_err(|e| {
            anyhow!(
                "cannot read the server's pg_config view ({}): installing files needs a superuser",
                crate::db_error::describe(&e)
            )
        })?;
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == name)
            .map(|r| PathBuf::from(r.get::<_, String>(1)))
            .ok_or_else(|| anyhow!("the server's pg_config view has no {name}"))
    };
    Ok((get("PKGLIBDIR")?, get("SHAREDIR")?))
}

/// Copy a package's files into a server's directories. The library is removed before it is
/// copied, so running backends keep the old file (their mapping) instead of seeing it change
/// under them. Returns the paths written.
pub fn install_package(pkg: &Package, libdir: &Path, sharedir: &Path) -> Result<Vec<PathBuf>> {
    let extdir = sharedir.join("extension");
    let mut written = Vec::new();
    let lib_dest = libdir.join("steep_repl.so");
    let denied = |dest: &Path, e: std::io::Error| {
        anyhow!(
            "cannot write {} ({e}): run steep init as root or as the owner of the PostgreSQL \
             installation, or copy {} into {} and {}/* into {} yourself",
            dest.display(),
            pkg.library().display(),
            libdir.display(),
            pkg.dir.join("extension").display(),
            extdir.display()
        )
    };
    match fs::remove_file(&lib_dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(denied(&lib_dest, e)),
    }
    fs::copy(pkg.library(), &lib_dest).map_err(|e| denied(&lib_dest, e))?;
    fs::set_permissions(&lib_dest, fs::Permissions::from_mode(0o755))?;
    written.push(lib_dest);
    for f in pkg.extension_files()? {
        let dest = extdir.join(f.file_name().expect("a file name"));
        let tmp = extdir.join(format!(
            ".{}.steep-tmp",
            f.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        fs::copy(&f, &tmp).map_err(|e| denied(&dest, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &dest).map_err(|e| denied(&dest, e))?;
        written.push(dest);
    }
    Ok(written)
}

/// Whether the connection parameters point at this machine.
pub fn is_local(host: Option<&str>) -> bool {
    match host {
        None => true,
        Some(h) => {
            let h = h.split(',').next().unwrap_or(h).trim();
            h.is_empty()
                || h.starts_with('/')
                || h == "localhost"
                || h == "127.0.0.1"
                || h == "::1"
                || h.starts_with("127.")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Privileges for roles that use steep without being superuser.

/// Internal functions the SQL API calls with the caller's rights (0.3.0 revokes them from
/// PUBLIC): granted to the roles `steep init --grant` names, when the installed version has them.
pub const API_HELPERS: &[&str] = &[
    "steep_repl._snapshot_path(text, boolean)",
    "steep_repl._compression(text)",
    "steep_repl._new_snapshot_id()",
    "steep_repl._manifest_snapshot_id(text)",
    "steep_repl._require_workers()",
    "steep_repl._wake_on_commit()",
];

/// The statements that let `role` use steep without superuser: the registry, fingerprints and the
/// operations API (its jobs run with the role's own rights). Default privileges cover tables
/// later versions add.
pub fn grant_statements(role: &str) -> Vec<String> {
    let r = quote_ident(role);
    let mut v = vec![
        format!("GRANT USAGE ON SCHEMA steep_repl TO {r}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA steep_repl TO {r}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA steep_repl \
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}"
        ),
        // Which node this database is belongs to `steep init`.
        format!("REVOKE INSERT, UPDATE, DELETE ON steep_repl.coordinator_state FROM {r}"),
    ];
    for f in API_HELPERS {
        // Only where the function exists (older versions lack some): one DO block each.
        v.push(format!(
            "DO $grant$ BEGIN IF to_regprocedure({}) IS NOT NULL THEN \
             EXECUTE 'GRANT EXECUTE ON FUNCTION {f} TO ' || {}; END IF; END $grant$",
            quote_literal(f),
            quote_literal(&r)
        ));
    }
    v
}

/// Whether `role` already holds what `grant_statements` gives.
pub fn has_grants(client: &mut postgres::Client, role: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT has_schema_privilege($1, 'steep_repl', 'USAGE')
            AND coalesce(bool_and(has_table_privilege($1, c.oid,
                CASE WHEN c.relname = 'coordinator_state' THEN 'SELECT'
                     ELSE 'SELECT, INSERT, UPDATE, DELETE' END)), true)
            AND (SELECT coalesce(bool_and(has_function_privilege($1, f, 'EXECUTE')), true)
                 FROM unnest($2::text[]) f WHERE to_regprocedure(f) IS NOT NULL)
         FROM pg_class c
         WHERE c.relnamespace = 'steep_repl'::regnamespace AND c.relkind IN ('r', 'p')",
            &[&role, &API_HELPERS],
        )
        .with_context(|| format!("checking the privileges of role {role:?} (does it exist?)"))?;
    Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
}

// ---------------------------------------------------------------------------------------------
// Repair

/// Drop and recreate the extension at its installed version in one transaction, carrying the
/// rows of its tables across. Fails (changing nothing) if other objects depend on it.
pub fn reinstall(client: &mut postgres::Client, version: &str) -> Result<u64> {
    let mut tx = client.transaction()?;
    // The configuration tables, in the order they were registered: parents before children.
    let tables: Vec<(String, String)> = tx
        .query(
            "SELECT c.relname::text, format('%I.%I', n.nspname, c.relname)
             FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS x(oid, ord)
             JOIN pg_class c ON c.oid = x.oid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE e.extname = $1 AND c.relkind IN ('r', 'p')
             ORDER BY x.ord",
            &[&EXTENSION],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (i, (_, qualified)) in tables.iter().enumerate() {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE steep_keep_{i} ON COMMIT DROP AS SELECT * FROM {qualified}"
        ))?;
    }
    tx.batch_execute(&format!("DROP EXTENSION {EXTENSION}"))
        .context("dropping the extension (objects outside steep that depend on it block this)")?;
    tx.batch_execute(&format!(
        "CREATE EXTENSION {EXTENSION} VERSION {}",
        quote_literal(version)
    ))?;
    let mut rows = 0;
    for (i, (_, qualified)) in tables.iter().enumerate() {
        let cols: Vec<String> = tx
            .query(
                "SELECT quote_ident(attname) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                 ORDER BY attnum",
                &[&format!("pg_temp.steep_keep_{i}")],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let list = cols.join(", ");
        rows += tx.execute(
            &format!(
                "INSERT INTO {qualified} ({list}) OVERRIDING SYSTEM VALUE \
                 SELECT {list} FROM pg_temp.steep_keep_{i}"
            ),
            &[],
        )?;
    }
    // Identity and serial sequences continue after the restored rows.
    for (_, qualified) in &tables {
        let seqs: Vec<(String, String)> = tx
            .query(
                "SELECT pg_get_serial_sequence($1, attname), quote_ident(attname) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                   AND pg_get_serial_sequence($1, attname) IS NOT NULL",
                &[qualified],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (seq, col) in seqs {
            tx.execute(
                &format!(
                    "SELECT setval($1::text::regclass, \
                     coalesce((SELECT max({col}) FROM {qualified}), 0) + 1, false)"
                ),
                &[&seq],
            )?;
        }
    }
    tx.commit().context("committing the reinstall")?;
    Ok(rows)
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
