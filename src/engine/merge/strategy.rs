//! How a merge decides a conflict (the same primary key, a different row on each node), and what
//! it does with a row one node lacks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A merge's rule for conflicts, per run and overridable per table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Strategy {
    PreferLocal,
    PreferRemote,
    /// The row whose named column holds the later value wins (timestamp, date or integer
    /// columns). A NULL counts as older than any value; equal values keep the local row.
    LastModifiedColumn(String),
    /// The row committed later wins, by `track_commit_timestamp` on both nodes. A row without a
    /// commit timestamp (frozen, loaded with COPY FREEZE, or older than the setting) counts as
    /// older than any row with one; equal or both unknown keep the local row.
    LastModified,
    /// The operator decides each conflict (interactively, or through a decisions file); what is
    /// not decided stays as it is on both nodes and is reported.
    Ask,
}

impl Strategy {
    /// The name `merges.strategy` keeps (its CHECK knows four).
    pub fn family(&self) -> &'static str {
        match self {
            Strategy::PreferLocal => "prefer-local",
            Strategy::PreferRemote => "prefer-remote",
            Strategy::LastModified | Strategy::LastModifiedColumn(_) => "last-modified",
            Strategy::Ask => "ask",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::LastModifiedColumn(c) => write!(f, "last-modified:{c}"),
            other => f.write_str(other.family()),
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "prefer-local" => Strategy::PreferLocal,
            "prefer-remote" => Strategy::PreferRemote,
            "last-modified" => Strategy::LastModified,
            "ask" => Strategy::Ask,
            _ => match s.strip_prefix("last-modified:") {
                Some(c) if !c.is_empty() => Strategy::LastModifiedColumn(c.to_string()),
                _ => {
                    return Err(format!(
                        "unknown strategy {s:?}: use prefer-local, prefer-remote, \
                         last-modified (commit timestamps), last-modified:COLUMN or ask"
                    ))
                }
            },
        })
    }
}

impl From<Strategy> for String {
    fn from(s: Strategy) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Strategy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// `TABLE:STRATEGY` of `--table`: the table, and its own strategy if one is given.
pub fn table_arg(s: &str) -> Result<(String, Option<Strategy>), String> {
    match s.split_once(':') {
        Some((t, st)) if !t.is_empty() => Ok((t.to_string(), Some(st.parse()?))),
        Some(_) => Err(format!("no table in {s:?}: give TABLE or TABLE:STRATEGY")),
        None => Ok((s.to_string(), None)),
    }
}

/// What happens to one differing row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// A conflict: the local row is written to the peer.
    KeepLocal,
    /// A conflict: the peer's row is written here.
    KeepRemote,
    /// Left as it is on both nodes, and recorded.
    Skip,
    /// A row the peer lacks, copied there.
    CopiedToRemote,
    /// A row this node lacks, copied here.
    CopiedToLocal,
}

impl Resolution {
    /// The name `merge_audit_log.resolution` keeps.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::KeepLocal => "keep_local",
            Resolution::KeepRemote => "keep_remote",
            Resolution::Skip => "skip",
            Resolution::CopiedToRemote => "copied_to_remote",
            Resolution::CopiedToLocal => "copied_to_local",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Resolution::KeepLocal,
            Resolution::KeepRemote,
            Resolution::Skip,
            Resolution::CopiedToRemote,
            Resolution::CopiedToLocal,
        ]
        .into_iter()
        .find(|r| r.name() == s)
    }
}

/// The later of two "last modified" values (microseconds, or the integer itself): true when the
/// peer's row wins. NULL is older than anything; a tie keeps the local row.
pub fn remote_is_newer(local: Option<i64>, remote: Option<i64>) -> bool {
    match (local, remote) {
        (Some(l), Some(r)) => r > l,
        (None, Some(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_and_print_alike() {
        for s in [
            "prefer-local",
            "prefer-remote",
            "last-modified",
            "last-modified:updated_at",
            "ask",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        assert!("last-modified:".parse::<Strategy>().is_err());
        assert!("newest"
            .parse::<Strategy>()
            .unwrap_err()
            .contains("prefer-local"));
    }

    #[test]
    fn table_args_split_at_the_first_colon() {
        assert_eq!(table_arg("t").unwrap(), ("t".into(), None));
        assert_eq!(
            table_arg("s.t:last-modified:at").unwrap(),
            (
                "s.t".into(),
                Some(Strategy::LastModifiedColumn("at".into()))
            )
        );
        assert!(table_arg(":ask").is_err());
        assert!(table_arg("t:whatever").is_err());
    }

    #[test]
    fn null_is_oldest_and_ties_keep_local() {
        assert!(remote_is_newer(Some(1), Some(2)));
        assert!(!remote_is_newer(Some(2), Some(2)));
        assert!(!remote_is_newer(Some(3), Some(2)));
        assert!(remote_is_newer(None, Some(0)));
        assert!(!remote_is_newer(Some(0), None));
        assert!(!remote_is_newer(None, None));
    }
}
