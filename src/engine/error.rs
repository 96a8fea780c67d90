//! Kinds of engine failure that change what happens next — a job's end status, the CLI's exit
//! code — told apart by their type, never by searching message text (a table named
//! `cancelled_orders`, or a server speaking another language, must not change an outcome).

use serde::{Deserialize, Serialize};

use crate::engine::apply::SchemaMismatch;
use crate::engine::merge::Refused;

/// The operation stopped because it was asked to; what it had written was removed or rolled back.
#[derive(Debug)]
pub struct Cancelled(pub String);

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cancelled {}

/// A cancellation, with what became of the work.
pub fn cancelled(what: &str) -> anyhow::Error {
    Cancelled(format!("cancelled; {what}")).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Cancelled,
    /// The target's tables differ from the snapshot's: a blocking finding (exit 3).
    SchemaMismatch,
    /// Two nodes cannot be compared (merge preflight): a blocking finding (exit 3).
    MergeRefused,
    /// Replication cannot be set up (replication init's preflight): a blocking finding (exit 3).
    ReplicationRefused,
}

impl ErrorKind {
    /// The kind of an engine error, through any context added on the way up.
    pub fn of(e: &anyhow::Error) -> Option<Self> {
        if e.downcast_ref::<Cancelled>().is_some() {
            Some(Self::Cancelled)
        } else if e.downcast_ref::<SchemaMismatch>().is_some() {
            Some(Self::SchemaMismatch)
        } else if e.downcast_ref::<Refused>().is_some() {
            Some(Self::MergeRefused)
        } else if e
            .downcast_ref::<crate::engine::replication::init::Refused>()
            .is_some()
        {
            Some(Self::ReplicationRefused)
        } else {
            None
        }
    }

    /// As stored in a job's `result` (`{"error_kind": "schema_mismatch"}`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::SchemaMismatch => "schema_mismatch",
            Self::MergeRefused => "merge_refused",
            Self::ReplicationRefused => "replication_refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_through_context_and_never_from_text() {
        let e = cancelled("the partial snapshot was removed").context("copying \"t\"");
        assert_eq!(ErrorKind::of(&e), Some(ErrorKind::Cancelled));
        let e = anyhow::anyhow!("loading \"cancelled_orders\": violates check constraint");
        assert_eq!(ErrorKind::of(&e), None);
        let e = anyhow::Error::from(SchemaMismatch(vec!["x".into()])).context("apply");
        assert_eq!(ErrorKind::of(&e), Some(ErrorKind::SchemaMismatch));
        assert_eq!(ErrorKind::SchemaMismatch.name(), "schema_mismatch");
    }
}
