//! Which namespaces may use a ClusterAcsConnection (`spec.allowedNamespaces`), decided with
//! kube's label-selector matching, and the short-lived memory of namespace labels behind it.
//!
//! The decision is made on every use of the connection (its cached client is shared by all
//! namespaces), from the current spec in the watch cache, so a narrowed `allowedNamespaces`
//! takes effect as soon as the watch delivers it. A namespace listed in `names` is decided
//! without reading anything. Only when the selector must decide are the namespace's labels
//! needed; they are read with one GET and then remembered for [`NAMESPACE_LABELS_TTL`], so a
//! namespace's identities share one GET per period instead of one per reconcile.
//!
//! Guarantee: no access is granted on labels older than [`NAMESPACE_LABELS_TTL`], counted
//! from the moment the GET was sent. A namespace whose label is removed therefore loses
//! access at most that long after the removal; labels it never had are never assumed (a
//! namespace gains access only once a GET showed the matching labels). Namespaces are not
//! watched, so a label change does not itself start a reconcile: identities notice at their
//! next one, as before. An invalid selector admits no namespace through the selector, and
//! says why.

use crate::api::AllowedNamespaces;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a namespace's labels are trusted after the GET that read them.
pub const NAMESPACE_LABELS_TTL: Duration = Duration::from_secs(30);

pub type Labels = BTreeMap<String, String>;

/// `allowedNamespaces`, with its selector parsed (each time the connection source is read,
/// so always the current spec's).
#[derive(Debug, Clone)]
pub struct NamespaceAccess {
    names: Vec<String>,
    /// The parse error of an invalid selector is kept, to be reported on use.
    selector: Option<Result<Selector, String>>,
}

/// What the namespace's name alone says.
#[derive(Debug, PartialEq)]
pub enum ByName<'a> {
    Allowed,
    Denied,
    /// The selector decides: read the namespace's labels and match them.
    ByLabels(&'a Selector),
    /// Only the selector could admit it, and it is invalid (why).
    InvalidSelector(&'a str),
}

impl NamespaceAccess {
    pub fn new(allowed: &AllowedNamespaces) -> Self {
        Self {
            names: allowed.names.clone(),
            selector: allowed.selector.as_ref().map(parse_selector),
        }
    }

    pub fn by_name(&self, namespace: &str) -> ByName<'_> {
        if self.names.iter().any(|n| n == namespace) {
            return ByName::Allowed;
        }
        match &self.selector {
            None => ByName::Denied,
            Some(Ok(selector)) => ByName::ByLabels(selector),
            Some(Err(why)) => ByName::InvalidSelector(why),
        }
    }
}

/// kube's parsing of a selector, plus the checks by which Kubernetes refuses selectors that
/// kube accepts: without them `NotIn` with no values would admit every namespace.
fn parse_selector(selector: &LabelSelector) -> Result<Selector, String> {
    for r in selector.match_expressions.iter().flatten() {
        let has_values = r.values.as_ref().is_some_and(|v| !v.is_empty());
        let needs_values = matches!(r.operator.as_str(), "In" | "NotIn");
        if needs_values != has_values {
            let need = if needs_values { "needs" } else { "takes no" };
            return Err(format!("{} {} {need} values", r.key, r.operator));
        }
    }
    Selector::try_from(selector.clone()).map_err(|e| e.0)
}

/// Namespace labels read recently, per namespace, each with the time its GET was sent.
pub struct NamespaceLabels {
    ttl: Duration,
    seen: Mutex<HashMap<String, (Instant, Labels)>>,
}

impl NamespaceLabels {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: Mutex::default(),
        }
    }

    /// The labels of `namespace`, if read less than the TTL before `now`.
    pub fn fresh(&self, namespace: &str, now: Instant) -> Option<Labels> {
        let seen = self.seen.lock().expect("namespace labels lock");
        let (asked, labels) = seen.get(namespace)?;
        (now.saturating_duration_since(*asked) < self.ttl).then(|| labels.clone())
    }

    /// Records labels read by a GET sent at `asked`, and forgets the stale ones.
    pub fn remember(&self, namespace: &str, labels: Labels, asked: Instant) {
        let mut seen = self.seen.lock().expect("namespace labels lock");
        seen.retain(|_, (at, _)| asked.saturating_duration_since(*at) < self.ttl);
        seen.insert(namespace.to_string(), (asked, labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube::core::SelectorExt;

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn sel(labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(exprs),
        }
    }

    /// `Some(matches)` for a valid selector, `None` for one that must be refused.
    #[test]
    fn label_selectors_match_as_kubernetes_does_and_invalid_ones_admit_nothing() {
        let labels: Labels = [("team".to_string(), "a".to_string())].into();
        let cases = [
            (sel(&[("team", "a")], vec![]), Some(true)),
            (sel(&[("team", "b")], vec![]), Some(false)),
            (
                sel(&[], vec![req("team", "In", Some(&["a", "b"]))]),
                Some(true),
            ),
            (
                sel(&[], vec![req("team", "NotIn", Some(&["a"]))]),
                Some(false),
            ),
            (
                sel(&[], vec![req("env", "NotIn", Some(&["prod"]))]),
                Some(true),
            ),
            (sel(&[], vec![req("team", "Exists", Some(&[]))]), Some(true)),
            (sel(&[], vec![req("team", "Exists", None)]), Some(true)),
            (
                sel(&[], vec![req("team", "DoesNotExist", None)]),
                Some(false),
            ),
            (sel(&[], vec![]), Some(true)),
            (LabelSelector::default(), Some(true)),
            (sel(&[], vec![req("team", "Bogus", None)]), None),
            (sel(&[], vec![req("team", "In", None)]), None),
            (sel(&[], vec![req("env", "NotIn", None)]), None),
            (sel(&[], vec![req("env", "NotIn", Some(&[]))]), None),
            (sel(&[], vec![req("team", "Exists", Some(&["a"]))]), None),
            (sel(&[("team", "a")], vec![req("x", "Bogus", None)]), None),
        ];
        for (i, (selector, expected)) in cases.iter().enumerate() {
            let parsed = parse_selector(selector);
            let got = parsed.as_ref().ok().map(|s| s.matches(&labels));
            assert_eq!(got, *expected, "case {i}: {parsed:?}");
            if let Err(why) = parsed {
                assert!(!why.is_empty(), "case {i}: the error says why");
            }
        }
    }

    fn access(names: &[&str], selector: Option<LabelSelector>) -> NamespaceAccess {
        NamespaceAccess::new(&AllowedNamespaces {
            names: names.iter().map(|s| s.to_string()).collect(),
            selector,
        })
    }

    #[test]
    fn a_listed_name_needs_no_labels_and_only_a_selector_asks_for_them() {
        let by_label = sel(&[("team", "a")], vec![]);
        let invalid = sel(&[], vec![req("team", "Bogus", None)]);
        assert_eq!(access(&["x"], None).by_name("x"), ByName::Allowed);
        assert_eq!(
            access(&["x"], Some(by_label.clone())).by_name("x"),
            ByName::Allowed
        );
        assert_eq!(
            access(&["x"], Some(invalid.clone())).by_name("x"),
            ByName::Allowed
        );
        assert_eq!(access(&["x"], None).by_name("y"), ByName::Denied);
        assert_eq!(access(&[], None).by_name("y"), ByName::Denied);
        assert!(matches!(
            access(&["x"], Some(by_label)).by_name("y"),
            ByName::ByLabels(_)
        ));
        assert_eq!(
            access(&[], Some(invalid)).by_name("y"),
            ByName::InvalidSelector("Invalid expression operator")
        );
    }

    #[test]
    fn labels_are_trusted_for_the_ttl_after_the_get_was_sent() {
        let ttl = Duration::from_secs(30);
        let cache = NamespaceLabels::new(ttl);
        let t0 = Instant::now();
        let labels: Labels = [("team".to_string(), "a".to_string())].into();
        assert_eq!(cache.fresh("a", t0), None, "never read: ask");
        cache.remember("a", labels.clone(), t0);
        assert_eq!(cache.fresh("a", t0 + ttl / 2), Some(labels.clone()));
        assert_eq!(cache.fresh("b", t0 + ttl / 2), None, "per namespace");
        assert_eq!(
            cache.fresh("a", t0 + ttl),
            None,
            "stale at the TTL: ask again"
        );
        cache.remember("b", Labels::new(), t0 + ttl);
        assert!(
            !cache.seen.lock().unwrap().contains_key("a"),
            "stale entries are dropped"
        );
        assert_eq!(cache.fresh("b", t0 + ttl), Some(Labels::new()));
    }
}
