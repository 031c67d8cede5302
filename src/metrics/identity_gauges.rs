//! Per-identity gauges (token expiry, renewal time, Ready condition), kept as one small record
//! per identity and written out on scrape. A registered gauge per series would cost about
//! five label sets of owned strings per identity; at 10,000 identities that was ~9 MB.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::BTreeMap;
use std::sync::RwLock;

/// The values of one identity's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRecord {
    /// Unix seconds when the token in the Secret expires.
    pub expires: Option<i64>,
    /// Unix seconds when the operator renews it.
    pub renewal: Option<i64>,
    pub ready: ReadyValue,
}

/// The status of the Ready condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyValue {
    True,
    False,
    Unknown,
}

impl ReadyValue {
    const ALL: [(ReadyValue, &'static str); 3] = [
        (ReadyValue::True, "True"),
        (ReadyValue::False, "False"),
        (ReadyValue::Unknown, "Unknown"),
    ];

    pub fn parse(status: Option<&str>) -> ReadyValue {
        match status {
            Some("True") => ReadyValue::True,
            Some("False") => ReadyValue::False,
            _ => ReadyValue::Unknown,
        }
    }
}

/// (namespace, name) of an identity.
type Key = (Box<str>, Box<str>);

/// One timestamp family: metric name, help, and the value of a record.
type TimestampFamily = (
    &'static str,
    &'static str,
    fn(&IdentityRecord) -> Option<i64>,
);

/// The records of all identities.
#[derive(Debug, Default)]
pub struct IdentityGauges(RwLock<BTreeMap<Key, IdentityRecord>>);

impl IdentityGauges {
    pub fn set(&self, namespace: &str, name: &str, record: IdentityRecord) {
        let mut all = self.0.write().expect("gauges lock");
        match all.get_mut(&(namespace.into(), name.into())) {
            Some(existing) => *existing = record,
            None => {
                all.insert((namespace.into(), name.into()), record);
            }
        }
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.0
            .write()
            .expect("gauges lock")
            .remove(&(namespace.into(), name.into()));
    }
}

impl Collector for IdentityGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.0.read().expect("gauges lock");
        let timestamps: [TimestampFamily; 2] = [
            (
                "acs_identity_token_expiration_timestamp_seconds",
                "When the token in the identity's Secret expires (Unix time)",
                |r| r.expires,
            ),
            (
                "acs_identity_token_renewal_timestamp_seconds",
                "When the operator renews the identity's token (Unix time)",
                |r| r.renewal,
            ),
        ];
        for (metric, help, value) in timestamps {
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for ((namespace, name), record) in all.iter() {
                let Some(seconds) = value(record) else {
                    continue;
                };
                let labels = [("namespace", &**namespace), ("name", &**name)];
                ConstGauge::new(seconds as f64).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "acs_identity_ready_status",
            "Ready condition of the identity: 1 for the current condition value",
            None,
            MetricType::Gauge,
        )?;
        for ((namespace, name), record) in all.iter() {
            for (value, condition) in ReadyValue::ALL {
                let labels = [
                    ("namespace", &**namespace),
                    ("name", &**name),
                    ("condition", condition),
                ];
                ConstGauge::new(i64::from(record.ready == value))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
