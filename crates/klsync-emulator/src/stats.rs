//! Request counters served at `GET /__emulator/stats`.

use std::collections::BTreeMap;

use serde::Serialize;

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Requests answered (or dropped) on `/api`.
    pub total: u64,
    /// By `METHOD /api/path/{template}`.
    pub by_operation: BTreeMap<String, u64>,
    /// By status code (`"reset"` for dropped connections).
    pub by_status: BTreeMap<String, u64>,
    /// By operation, then status.
    pub by_operation_status: BTreeMap<String, BTreeMap<String, u64>>,
}

impl StatsSnapshot {
    /// Counts one request.
    pub fn record(&mut self, operation: &str, status: &str) {
        self.total += 1;
        *self.by_operation.entry(operation.to_owned()).or_default() += 1;
        *self.by_status.entry(status.to_owned()).or_default() += 1;
        *self
            .by_operation_status
            .entry(operation.to_owned())
            .or_default()
            .entry(status.to_owned())
            .or_default() += 1;
    }

    /// Requests for `operation` (e.g. `POST /api/lists`).
    pub fn count(&self, operation: &str) -> u64 {
        self.by_operation.get(operation).copied().unwrap_or(0)
    }
}
