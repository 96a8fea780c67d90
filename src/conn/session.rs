//! Choosing the server among several hosts as libpq does: in order (or shuffled with
//! load_balance_hosts=random), on to the next host when one cannot be reached, and checking each
//! session against target_session_attrs after it is open.

use anyhow::{anyhow, Result};
use postgres::error::SqlState;
use postgres::SimpleQueryMessage;

use super::ConnParams;

/// What target_session_attrs asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSession {
    Any,
    ReadWrite,
    ReadOnly,
    Primary,
    Standby,
    /// A standby if any host is one, else any server (a second pass over the hosts).
    PreferStandby,
}

impl TargetSession {
    /// The setting of `params` (values were checked when they were set).
    pub fn of(params: &ConnParams) -> Self {
        match params.get("target_session_attrs") {
            Some("read-write") => Self::ReadWrite,
            Some("read-only") => Self::ReadOnly,
            Some("primary") => Self::Primary,
            Some("standby") => Self::Standby,
            Some("prefer-standby") => Self::PreferStandby,
            _ => Self::Any,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::PreferStandby => "prefer-standby",
        }
    }
}

/// Why one host was not used.
pub enum HostFailure {
    /// libpq would go on to the next host: nothing answered, no answer in time, or the server
    /// cannot accept connections yet.
    TryNext(anyhow::Error),
    /// libpq would stop: the server answered and refused (authentication, no such database, TLS).
    Stop(anyhow::Error),
}

/// Whether libpq would try the next host after this error of the `postgres` crate.
pub fn try_next_host(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => db.code() == &SqlState::CANNOT_CONNECT_NOW,
        // The crate exposes no error kind; failures to resolve, reach or connect the socket are
        // the ones it words this way.
        None => e.to_string().starts_with("error connecting to server"),
    }
}

/// Connect to the first server of `params.targets()` that `open` reaches and that satisfies
/// target_session_attrs. Returns the session and the parameters of the server it is on.
pub fn connect_first<F>(params: &ConnParams, mut open: F) -> Result<(postgres::Client, ConnParams)>
where
    F: FnMut(&ConnParams) -> Result<postgres::Client, HostFailure>,
{
    let want = TargetSession::of(params);
    let mut targets = params.targets()?;
    if params.get("load_balance_hosts") == Some("random") {
        shuffle(&mut targets);
    }
    let passes: &[TargetSession] = match want {
        TargetSession::PreferStandby => &[TargetSession::PreferStandby, TargetSession::Any],
        _ => &[want],
    };
    let mut failures = Vec::new();
    for &pass in passes {
        for target in &targets {
            match open(target) {
                Ok(mut client) => match unmet(&mut client, pass) {
                    Ok(None) => return Ok((client, target.clone())),
                    Ok(Some(why)) => failures.push(format!(
                        "{}: {why} (target_session_attrs={})",
                        target.endpoint(),
                        want.name()
                    )),
                    Err(e) => {
                        return Err(e.context(format!(
                            "checking {} for target_session_attrs={}",
                            target.endpoint(),
                            want.name()
                        )))
                    }
                },
                Err(HostFailure::TryNext(e)) => failures.push(format!("{e:#}")),
                Err(HostFailure::Stop(e)) => return Err(e),
            }
        }
    }
    if failures.len() == 1 {
        return Err(anyhow!(failures.remove(0)));
    }
    Err(anyhow!(
        "no server of {} was usable: {}",
        params.endpoint(),
        failures.join("; ")
    ))
}

/// What `client`'s session lacks for `want`, in libpq's words; None when it will do. Like libpq
/// for servers of version 14 and later: read-only means default_transaction_read_only or
/// in_hot_standby is on, a standby is a server in hot standby (older servers: transaction_read_only
/// and pg_is_in_recovery()).
fn unmet(client: &mut postgres::Client, want: TargetSession) -> Result<Option<&'static str>> {
    if matches!(want, TargetSession::Any) {
        return Ok(None);
    }
    let rows = client.simple_query(
        "SELECT pg_catalog.current_setting('default_transaction_read_only'),
                pg_catalog.current_setting('in_hot_standby', true),
                pg_catalog.current_setting('transaction_read_only'),
                pg_catalog.pg_is_in_recovery()",
    )?;
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the server returned no row"))?;
    let on = |i: usize| row.get(i) == Some("on");
    let (read_only, standby) = match row.get(1) {
        Some(_) => (on(0) || on(1), on(1)),
        None => (on(2), row.get(3) == Some("t")),
    };
    Ok(match want {
        TargetSession::ReadWrite if read_only => Some("session is read-only"),
        TargetSession::ReadOnly if !read_only => Some("session is not read-only"),
        TargetSession::Primary if standby => Some("server is in hot standby mode"),
        TargetSession::Standby | TargetSession::PreferStandby if !standby => {
            Some("server is not in hot standby mode")
        }
        _ => None,
    })
}

/// Fisher-Yates with std's randomly seeded hasher: enough to spread connections over hosts.
fn shuffle<T>(items: &mut [T]) {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    for i in (1..items.len()).rev() {
        let mut h = seed.build_hasher();
        h.write_usize(i);
        items.swap(i, (h.finish() % (i as u64 + 1)) as usize);
    }
}
