//! How many ACS requests wait for the rate limit, by operation, summed over the limiters of
//! every ACS resource in use (read from the limiters on scrape).

use crate::acs::{AcsRateLimiter, Operation};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::{Arc, Mutex, Weak};

/// The limiters made so far; one dropped with its clients stops counting.
#[derive(Debug, Default)]
pub struct WaitingGauge(Mutex<Vec<Weak<AcsRateLimiter>>>);

impl WaitingGauge {
    pub fn watch(&self, limiter: &Arc<AcsRateLimiter>) {
        let mut all = self.0.lock().expect("limiters lock");
        all.retain(|l| l.strong_count() > 0);
        all.push(Arc::downgrade(limiter));
    }

    fn totals(&self) -> [(Operation, usize); 5] {
        let all = self.0.lock().expect("limiters lock");
        let live: Vec<_> = all.iter().filter_map(Weak::upgrade).collect();
        Operation::ALL.map(|op| (op, live.iter().map(|l| l.waiting(op)).sum()))
    }
}

impl Collector for WaitingGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "acs_api_requests_waiting",
            "ACS Identity requests waiting in the operator's line for the rate limit, by operation",
            None,
            MetricType::Gauge,
        )?;
        for (op, waiting) in self.totals() {
            let labels = [("operation", op.as_str())];
            ConstGauge::new(waiting as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
