//! An operation's progress (`ProgressEvent`: the `progress` column of its row, the CLI's view) and
//! the signal on the `steep_repl_progress` channel that it moved (`ProgressSignal`): one
//! definition for the worker that sends them and the CLI that reads them.

use serde::{Deserialize, Serialize};

/// The NOTIFY channel every operation reports on.
pub const CHANNEL: &str = "steep_repl_progress";

/// PostgreSQL rejects NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7900;

/// Statuses after which an operation changes no more.
pub const TERMINAL: [&str; 3] = ["complete", "failed", "cancelled"];

/// What a NOTIFY on CHANNEL carries: which operation moved, and when. Any role may LISTEN on any
/// channel and NOTIFY on it, so the payload holds nothing else — no status, table, error or
/// snapshot id — and a listener reads the progress itself through
/// `steep_repl.operation_progress(id)`, which shows only operations it may see. A forged signal
/// makes a listener read again, nothing more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSignal {
    /// work_queue id.
    pub id: i64,
    /// When the worker sent it (ms since the Unix epoch), for latency measurements.
    #[serde(default)]
    pub sent_at_ms: i64,
}

impl ProgressSignal {
    pub fn now(id: i64) -> Self {
        Self {
            id,
            sent_at_ms: now_ms(),
        }
    }

    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_payload(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

/// The same signal built in SQL (the pending-cancel and orphan paths), from the column `id`.
pub const SIGNAL_SQL: &str = "pg_catalog.json_build_object('id', id, 'sent_at_ms', \
     (extract(epoch FROM pg_catalog.clock_timestamp()) * 1000)::bigint)::text";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Operation kind: selftest, snapshot_generate, snapshot_apply, ...
    pub op: String,
    /// work_queue id.
    pub id: i64,
    /// pending, running, complete, failed, cancelled.
    pub status: String,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub percent: f64,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub tables_completed: i64,
    #[serde(default)]
    pub tables_total: i64,
    #[serde(default)]
    pub bytes: i64,
    #[serde(default)]
    pub rows: i64,
    #[serde(default)]
    pub eta_seconds: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    /// The snapshot this operation works on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// When the worker sent it (ms since the Unix epoch), for latency measurements.
    #[serde(default)]
    pub sent_at_ms: i64,
}

/// Milliseconds since the Unix epoch: `sent_at_ms` on the worker's side, the receipt time on the
/// CLI's (the latency measure needs one clock reading on both).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ProgressEvent {
    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.status.as_str())
    }

    /// JSON under the NOTIFY limit: long free text is cut first.
    pub fn to_payload(&self) -> String {
        let mut e = self.clone();
        let mut json = serde_json::to_string(&e).unwrap_or_default();
        let mut budget = 2000;
        while json.len() > MAX_PAYLOAD && budget > 16 {
            for s in [&mut e.error, &mut e.table, &mut e.phase]
                .into_iter()
                .flatten()
            {
                *s = truncate(s, budget);
            }
            budget /= 2;
            json = serde_json::to_string(&e).unwrap_or_default();
        }
        json
    }

    pub fn from_payload(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_limit() {
        let e = ProgressEvent {
            op: "selftest".into(),
            id: 7,
            status: "running".into(),
            percent: 42.5,
            error: Some("é".repeat(20_000)),
            table: Some("t".repeat(20_000)),
            ..Default::default()
        };
        let p = e.to_payload();
        assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
        let back = ProgressEvent::from_payload(&p).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(back.percent, 42.5);
        assert!(back.error.as_deref().unwrap().ends_with("..."));
        assert!(!back.is_terminal());
        assert!(ProgressEvent::from_payload("not json").is_none());
    }

    #[test]
    fn a_signal_says_which_operation_and_when_only() {
        let s = ProgressSignal {
            id: 9,
            sent_at_ms: 5,
        };
        assert_eq!(s.to_payload(), r#"{"id":9,"sent_at_ms":5}"#);
        assert_eq!(ProgressSignal::from_payload(&s.to_payload()), Some(s));
        assert!(ProgressSignal::from_payload("{}").is_none());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééééé", 6), "é...");
    }
}
