//! Which namespaces may use a ClusterAcsConnection (`spec.allowedNamespaces`).

use std::collections::BTreeMap;

/// Label selector semantics of Kubernetes (matchLabels and matchExpressions, all must hold).
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        };
        let sel = |labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(exprs),
        };
        let cases = [
            (sel(&[("team", "a")], vec![]), true),
            (sel(&[("team", "b")], vec![]), false),
            (sel(&[], vec![req("team", "In", &["a", "b"])]), true),
            (sel(&[], vec![req("team", "NotIn", &["a"])]), false),
            (sel(&[], vec![req("env", "NotIn", &["prod"])]), true),
            (sel(&[], vec![req("team", "Exists", &[])]), true),
            (sel(&[], vec![req("team", "DoesNotExist", &[])]), false),
            (sel(&[], vec![req("team", "Bogus", &[])]), false),
            (sel(&[], vec![]), true),
        ];
        for (i, (selector, expected)) in cases.iter().enumerate() {
            assert_eq!(selector_matches(selector, &labels), *expected, "case {i}");
        }
    }
}
