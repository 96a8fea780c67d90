//! The snapshot API's library helpers: path confinement, compression specs, manifest checks and
//! snapshot ids, each the shared engine's implementation. The SQL functions are in ../sql/snapshots.sql.

use pgrx::prelude::*;
use steep::engine::compress::Compression;
use steep::engine::manifest::Manifest;

pgrx::extension_sql_file!(
    "../sql/snapshots.sql",
    name = "snapshots",
    requires = [
        "operations_api",
        snapshot_path,
        compression,
        manifest_snapshot_id,
        new_snapshot_id
    ]
);

/// Whether `role` may read or write server files anyway (superuser, pg_write_server_files,
/// pg_read_server_files): such roles are not confined to steep_repl.snapshot_dir.
pub fn may_use_server_files(role: &str, for_write: bool) -> bool {
    let grant = if for_write {
        "pg_write_server_files"
    } else {
        "pg_read_server_files"
    };
    Spi::get_one_with_args::<bool>(
        "SELECT coalesce((SELECT r.rolsuper OR pg_has_role(r.oid, $2, 'USAGE')
                          FROM pg_roles r WHERE r.rolname = $1), false)",
        &[role.into(), grant.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Whether `role` may apply (read) the server-side snapshot at `path`: a snapshot belongs to the
/// role that made it (its manifest's owner); that role, its members, superusers and
/// pg_read_server_files may read it. Ok is the snapshot's manifest; Err says why not.
pub fn may_read_snapshot(role: &str, path: &std::path::Path) -> Result<Manifest, String> {
    let m = Manifest::read(path).map_err(|e| format!("{e:#}"))?;
    let ok = Spi::get_one_with_args::<bool>(
        "SELECT coalesce((SELECT r.rolsuper
                                 OR pg_catalog.pg_has_role(r.oid, 'pg_read_server_files', 'USAGE')
                                 OR (o.oid IS NOT NULL
                                     AND pg_catalog.pg_has_role(r.oid, o.oid, 'USAGE'))
                          FROM pg_catalog.pg_roles r
                          LEFT JOIN pg_catalog.pg_roles o ON o.rolname = $2
                          WHERE r.rolname = $1), false)",
        &[role.into(), m.owner.clone().into()],
    )
    .map_err(|e| e.to_string())?
    .unwrap_or(false);
    if ok {
        Ok(m)
    } else {
        // Neither the snapshot's id nor its owner: they are another role's business.
        Err(format!(
            "the snapshot at {} belongs to another role: only the role that made it, its \
             members, superusers and pg_read_server_files may apply it",
            path.display()
        ))
    }
}

pub fn snapshot_dir() -> Option<String> {
    crate::gucs::SNAPSHOT_DIR
        .get()
        .map(|c| c.to_string_lossy().into_owned())
}

fn current_role() -> String {
    Spi::get_one::<String>("SELECT current_user::text")
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn confined(path: &str, for_write: bool) -> std::path::PathBuf {
    let me = current_role();
    match steep::engine::paths::confine(
        path,
        snapshot_dir().as_deref(),
        may_use_server_files(&me, for_write),
    ) {
        Ok(p) => p,
        Err(e) => error!("{e}"),
    }
}

/// The absolute path for a server-side snapshot, or an error saying why it is refused.
#[pg_extern(volatile, name = "_snapshot_path")]
fn snapshot_path(path: &str, for_write: bool) -> String {
    let p = confined(path, for_write);
    if for_write {
        if let Err(e) = steep::engine::paths::refuse_nested(&p, snapshot_dir().as_deref()) {
            error!("{e}");
        }
    }
    p.to_string_lossy().into_owned()
}

/// A compression spec in canonical form (`zstd:3`), or an error naming the choices.
#[pg_extern(immutable, name = "_compression")]
fn compression(spec: &str) -> String {
    match Compression::parse(spec, None) {
        Ok(c) => format!("{}:{}", c.name(), c.level),
        Err(e) => error!("{e}"),
    }
}

/// A new snapshot id, the same form client mode gives its snapshots.
#[pg_extern(volatile, name = "_new_snapshot_id")]
fn new_snapshot_id() -> String {
    steep::engine::new_snapshot_id()
}

/// The id of the snapshot at `path` (its manifest is read and checked), for a path the caller
/// may name and a snapshot the caller may read: never an oracle for other paths.
#[pg_extern(volatile, name = "_manifest_snapshot_id")]
fn manifest_snapshot_id(path: &str) -> String {
    match may_read_snapshot(&current_role(), &confined(path, false)) {
        Ok(m) => m.snapshot_id,
        Err(e) => error!("{e}"),
    }
}

pgrx::extension_sql_file!(
    "../sql/snapshot_record.sql",
    name = "snapshot_record",
    requires = ["security"]
);

// 0.4.0: start_apply's and start_snapshot's new options (new signatures).
pgrx::extension_sql_file!(
    "../sql/apply_triggers.sql",
    name = "apply_triggers",
    requires = ["snapshots", "security"]
);
pgrx::extension_sql_file!(
    "../sql/snapshot_selection.sql",
    name = "snapshot_selection",
    requires = ["snapshots", "security"]
);
