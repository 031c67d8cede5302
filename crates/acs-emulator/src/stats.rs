//! Counters of data-plane requests by operation and answered status, so a test or benchmark
//! can tell how many ACS calls a client made (and how many were refused).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Name under which requests that matched no operation are counted.
pub const UNROUTED: &str = "unknown";

#[derive(Debug, Default)]
pub struct RequestStats {
    counts: Mutex<BTreeMap<&'static str, BTreeMap<u16, u64>>>,
    bearer_uses: Mutex<BTreeMap<String, u64>>,
}

/// `{"total": n, "operations": {"issueToken": {"200": 3, "429": 1}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsView {
    pub total: u64,
    pub operations: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// Accepted bearer tokens on the ACS endpoints, by the client id they were issued to.
    #[serde(rename = "bearerUses", skip_serializing_if = "BTreeMap::is_empty")]
    pub bearer_uses: BTreeMap<String, u64>,
}

impl RequestStats {
    pub fn record(&self, operation: &'static str, status: u16) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts
            .entry(operation)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    /// An ACS request accepted with a bearer token issued to `client_id`.
    pub fn record_bearer(&self, client_id: &str) {
        let mut uses = self
            .bearer_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *uses.entry(client_id.to_string()).or_default() += 1;
    }

    pub fn view(&self) -> StatsView {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let operations: BTreeMap<&'static str, BTreeMap<String, u64>> = counts
            .iter()
            .map(|(op, by_status)| {
                let by_status = by_status
                    .iter()
                    .map(|(status, n)| (status.to_string(), *n))
                    .collect();
                (*op, by_status)
            })
            .collect();
        let total = counts.values().flat_map(BTreeMap::values).sum();
        let bearer_uses = self
            .bearer_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        StatsView {
            total,
            operations,
            bearer_uses,
        }
    }

    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.bearer_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_and_status() {
        let stats = RequestStats::default();
        stats.record("issueToken", 200);
        stats.record("issueToken", 200);
        stats.record("issueToken", 429);
        stats.record(UNROUTED, 404);
        let view = stats.view();
        assert_eq!(view.total, 4);
        assert_eq!(view.operations["issueToken"]["200"], 2);
        assert_eq!(view.operations["issueToken"]["429"], 1);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["operations"]["unknown"]["404"], 1);
        stats.reset();
        assert_eq!(stats.view().total, 0);
    }
}
