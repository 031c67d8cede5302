//! Per-identity gauges (token expiry, renewal time, Ready condition), kept as one small record
//! per identity and written out on scrape, in pieces ([`Pieces`]). A registered gauge per
//! series would cost about five label sets of owned strings per identity; at 10,000
//! identities that was ~9 MB.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

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

/// The three families, in the order a scrape writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Expiration,
    Renewal,
    Ready,
}

impl Family {
    const ALL: [Family; 3] = [Family::Expiration, Family::Renewal, Family::Ready];

    fn descriptor(self) -> (&'static str, &'static str) {
        match self {
            Family::Expiration => (
                "acs_identity_token_expiration_timestamp_seconds",
                "When the token in the identity's Secret expires (Unix time)",
            ),
            Family::Renewal => (
                "acs_identity_token_renewal_timestamp_seconds",
                "When the operator renews the identity's token (Unix time)",
            ),
            Family::Ready => (
                "acs_identity_ready_status",
                "Ready condition of the identity: 1 for the current condition value",
            ),
        }
    }
}

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

    /// The scrape's text of these families, a piece at a time (see [`Pieces`]).
    pub fn pieces(self: &Arc<Self>) -> Pieces {
        Pieces {
            gauges: self.clone(),
            family: 0,
            after: None,
        }
    }
}

/// Identities written per piece of a scrape: about 75 KB of text for the Ready family.
const PER_PIECE: usize = 1_000;

/// The per-identity families of one scrape, written [`PER_PIECE`] identities at a time.
///
/// At 100,000 identities the whole text is about 75 MB: written into one buffer, it was the
/// largest allocation of the process at each scrape and set its peak memory. Each piece is
/// written under the read lock, which is let go between pieces: an identity changed meanwhile
/// shows its new values in the pieces still to come, as with any scrape that does not stop
/// the world. The formatting stays prometheus-client's: each piece goes through its encoder,
/// and a family's `# HELP` and `# TYPE` lines are kept from its first piece only.
pub struct Pieces {
    gauges: Arc<IdentityGauges>,
    /// The index in [`Family::ALL`] of the family being written.
    family: usize,
    /// The last identity written of that family; `None` before its first piece.
    after: Option<Key>,
}

impl Iterator for Pieces {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let family = *Family::ALL.get(self.family)?;
        let last: Arc<Mutex<Option<Key>>> = Arc::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Piece {
            gauges: self.gauges.clone(),
            family,
            after: self.after.clone(),
            last: last.clone(),
        }));
        let mut text = String::with_capacity(PER_PIECE * 80);
        let mut out = Lines {
            out: &mut text,
            keep_comments: self.after.is_none(),
            at_start: true,
            skipping: false,
        };
        encode_registry(&mut out, &registry).expect("writing to a String cannot fail");
        match last.lock().expect("piece lock").take() {
            Some(key) => self.after = Some(key),
            // The family is written out: the next one.
            None => {
                self.family += 1;
                self.after = None;
            }
        }
        Some(text)
    }
}

/// One piece: up to [`PER_PIECE`] identities of one family after `after`. `last` is set to
/// the last identity written when more follow it.
#[derive(Debug)]
struct Piece {
    gauges: Arc<IdentityGauges>,
    family: Family,
    after: Option<Key>,
    last: Arc<Mutex<Option<Key>>>,
}

impl Collector for Piece {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.gauges.0.read().expect("gauges lock");
        let from = match &self.after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let (metric, help) = self.family.descriptor();
        let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
        let mut written: Option<&Key> = None;
        for (n, (key, record)) in all.range((from, Bound::Unbounded)).enumerate() {
            if n == PER_PIECE {
                *self.last.lock().expect("piece lock") = written.cloned();
                break;
            }
            written = Some(key);
            let labels = [("namespace", &*key.0), ("name", &*key.1)];
            let seconds = match self.family {
                Family::Expiration => record.expires,
                Family::Renewal => record.renewal,
                Family::Ready => {
                    for (value, condition) in ReadyValue::ALL {
                        let labels = [labels[0], labels[1], ("condition", condition)];
                        ConstGauge::new(i64::from(record.ready == value))
                            .encode(family.encode_family(&labels)?)?;
                    }
                    continue;
                }
            };
            if let Some(seconds) = seconds {
                ConstGauge::new(seconds as f64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A writer that drops comment lines (`# ...`) unless told to keep them: a family's
/// descriptor is written once, by its first piece.
struct Lines<'a> {
    out: &'a mut String,
    keep_comments: bool,
    at_start: bool,
    skipping: bool,
}

impl std::fmt::Write for Lines<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.keep_comments {
            self.out.push_str(s);
            return Ok(());
        }
        let mut rest = s;
        while !rest.is_empty() {
            if self.at_start {
                self.skipping = rest.starts_with('#');
            }
            let (line, tail) = rest.split_at(rest.find('\n').map_or(rest.len(), |i| i + 1));
            if !self.skipping {
                self.out.push_str(line);
            }
            self.at_start = line.ends_with('\n');
            rest = tail;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn record(i: i64) -> IdentityRecord {
        IdentityRecord {
            expires: Some(1_000 + i),
            renewal: (i % 3 != 0).then_some(500 + i),
            ready: if i % 2 == 0 {
                ReadyValue::True
            } else {
                ReadyValue::False
            },
        }
    }

    /// Checks `text` as a scrape of these families reads it: each family's descriptor once,
    /// its samples together after it; the samples of each family by (namespace, name).
    fn samples(text: &str) -> HashMap<&'static str, HashMap<String, usize>> {
        let mut seen: HashMap<&'static str, HashMap<String, usize>> = HashMap::new();
        let mut current: Option<&'static str> = None;
        let mut finished: Vec<&'static str> = vec![];
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let family = Family::ALL
                    .iter()
                    .map(|f| f.descriptor().0)
                    .find(|name| rest.starts_with(&format!("{name} ")))
                    .expect("a known family");
                assert!(!finished.contains(&family), "{family} described twice");
                if let Some(before) = current.replace(family) {
                    finished.push(before);
                }
                continue;
            }
            if line.starts_with('#') {
                assert!(line.starts_with("# TYPE "), "{line}");
                continue;
            }
            let family = current.expect("a sample after its descriptor");
            assert!(line.starts_with(family), "{line} under {family}");
            let labels = &line[line.find('{').unwrap()
                ..line.find(",condition").unwrap_or(line.find('}').unwrap())];
            *seen
                .entry(family)
                .or_default()
                .entry(labels.to_string())
                .or_default() += 1;
        }
        seen
    }

    #[test]
    fn a_scrape_in_pieces_writes_each_series_once_under_one_descriptor() {
        let gauges = Arc::new(IdentityGauges::default());
        let n = 2 * PER_PIECE + 500;
        for i in 0..n as i64 {
            gauges.set(&format!("ns-{}", i % 7), &format!("id-{i:05}"), record(i));
        }
        let pieces: Vec<String> = gauges.pieces().collect();
        assert!(
            pieces.len() >= 9,
            "three pieces per family: {}",
            pieces.len()
        );
        let text = pieces.concat();
        let seen = samples(&text);
        let (expiration, renewal, ready) = (
            Family::Expiration.descriptor().0,
            Family::Renewal.descriptor().0,
            Family::Ready.descriptor().0,
        );
        assert_eq!(seen[expiration].len(), n);
        assert_eq!(seen[renewal].len(), (0..n).filter(|i| i % 3 != 0).count());
        assert_eq!(seen[ready].len(), n);
        assert!(seen[expiration].values().all(|&c| c == 1));
        assert!(
            seen[ready].values().all(|&c| c == 3),
            "True, False and Unknown once each"
        );
        assert!(text.contains(
            "acs_identity_token_expiration_timestamp_seconds{namespace=\"ns-3\",name=\"id-00010\"} 1010.0\n"
        ));
        assert!(text.contains(
            "acs_identity_ready_status{namespace=\"ns-3\",name=\"id-00010\",condition=\"True\"} 1\n"
        ));
    }

    #[test]
    fn identities_that_change_during_a_scrape_are_written_at_most_once() {
        let gauges = Arc::new(IdentityGauges::default());
        let n = 3 * PER_PIECE;
        for i in 0..n as i64 {
            gauges.set("ns", &format!("id-{i:05}"), record(i));
        }
        let mut pieces = gauges.pieces();
        let mut text = pieces.next().unwrap();
        // Between the first and the second piece: one written already leaves, one not yet
        // written leaves, and newcomers arrive on both sides of the cursor.
        gauges.remove("ns", "id-00003");
        gauges.remove("ns", "id-02500");
        gauges.set("ns", "id-00003a", record(1));
        gauges.set("ns", "id-09999", record(1));
        text.extend(pieces);
        let seen = samples(&text);
        let expiration = &seen[Family::Expiration.descriptor().0];
        let key = |name: &str| format!("{{namespace=\"ns\",name=\"{name}\"");
        assert_eq!(
            expiration.get(&key("id-00003")),
            Some(&1),
            "written before it left"
        );
        assert_eq!(expiration.get(&key("id-02500")), None);
        assert_eq!(expiration.get(&key("id-00003a")), None, "behind the cursor");
        assert_eq!(expiration.get(&key("id-09999")), Some(&1));
        assert!(expiration.values().all(|&c| c == 1));
        // The later families were written after the change.
        let ready = &seen[Family::Ready.descriptor().0];
        assert_eq!(ready.get(&key("id-00003")), None);
        assert_eq!(ready.get(&key("id-00003a")), Some(&3));
        assert_eq!(ready.len(), n);
    }
}
