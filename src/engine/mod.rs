//! The snapshot engine, shared by the CLI (client mode) and the extension's workers (direct mode):
//! one implementation of the format, compression, checksums, FK ordering and progress.

pub mod apply;
pub mod catalog;
pub mod checksum;
pub mod compress;
pub mod counters;
pub mod driver;
pub mod error;
pub mod file_check;
pub mod fkorder;
pub mod generate;
pub mod manifest;
pub mod merge;
pub mod needs;
pub mod partial_output;
pub mod paths;
pub mod private_dir;
pub mod replication;
pub mod scheduler;
pub mod schema_archive;
pub mod session_proxy;
pub mod snapshot_row;
pub mod triggers;
pub mod wire;

/// Which libpq program is to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// pg_dump: runs only its own catalog queries, never SQL the snapshot or a user supplies.
    PgDump,
    /// pg_restore: runs the archive's SQL, which whoever made the snapshot controls.
    PgRestore,
}

/// How a libpq program (pg_dump, pg_restore) reaches the server with the rights of the role the
/// work belongs to.
pub enum ToolAccess {
    /// With these parameters (the password is passed in the child's environment), and `--role`
    /// when set.
    Params {
        params: crate::conn::ConnParams,
        role: Option<String>,
    },
    /// Through the session proxy (direct mode): its sessions are the engine's own, restricted
    /// to the job's owner. `user` is only what the program reports; the proxy decides who the
    /// session is.
    Proxy { dbname: String, user: String },
}

/// Opens connections to one server, each ready for the engine and acting with exactly the
/// rights of the role the work belongs to (the implementation decides how: client mode connects
/// as the user; direct mode restricts each session to the job's owner).
pub trait Connect: Send + Sync {
    fn connect(&self) -> anyhow::Result<postgres::Client>;

    /// How pg_dump or pg_restore reaches this server with the same rights.
    fn tool_access(&self, tool: Tool) -> anyhow::Result<ToolAccess>;

    /// A connection on the fast COPY path (see `wire`), when this server and these settings allow
    /// one; None means use `connect`.
    fn connect_wire(&self) -> anyhow::Result<Option<wire::Wire>> {
        Ok(None)
    }

    /// The fast path when it is available, else a `postgres` crate connection.
    fn session(&self) -> anyhow::Result<wire::Session> {
        Ok(match self.connect_wire()? {
            Some(w) => wire::Session::Wire(w),
            None => wire::Session::Pg(Box::new(self.connect()?)),
        })
    }
}

/// A snapshot id: snap-YYYYMMDD-HHMMSS-<random hex>.
pub fn new_snapshot_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let rand = unique_bits(now.subsec_nanos());
    format!(
        "snap-{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{:06x}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        rand >> 40
    )
}

/// Bits that differ between processes and calls (the clock's nanoseconds mixed with the pid):
/// for names that must not collide, not for secrets.
pub(crate) fn unique_bits(salt: u32) -> u64 {
    (u64::from(salt) ^ u64::from(std::process::id()).rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ids() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
        let id = new_snapshot_id();
        assert!(id.starts_with("snap-2") && id.len() == 27, "{id}");
    }
}
