//! Which of the Secrets that connections read changed while the operator was not watching.
//!
//! The operator watches Secrets from "now" on, without listing them first (see
//! [`crate::controller::connection_secrets`]). When that watch is lost for longer than the API
//! server keeps events, the changes in between are found by comparing, for each Secret a
//! cached client was built from, the version the client read with the version the Secret has
//! now. Only versions are compared, never content.

use std::collections::{BTreeSet, HashMap};

/// A Secret's (namespace, name).
pub type SecretKey = (String, String);

/// The Secrets to ask about: each Secret of `read` once. `read` holds (namespace, name,
/// version read) for every cached client.
pub fn to_ask(read: &[(String, String, String)]) -> Vec<SecretKey> {
    let names: BTreeSet<SecretKey> = read
        .iter()
        .map(|(namespace, name, _)| (namespace.clone(), name.clone()))
        .collect();
    names.into_iter().collect()
}

/// The Secrets of `read` that changed: `now` gives each one's version now (`None`: it is
/// gone). A Secret some client read at another version than its version now changed, and so
/// did one `now` does not answer for. Each Secret appears once.
pub fn changed(
    read: &[(String, String, String)],
    now: &HashMap<SecretKey, Option<String>>,
) -> Vec<SecretKey> {
    let changed: BTreeSet<SecretKey> = read
        .iter()
        .filter(|(namespace, name, version)| {
            let key = (namespace.clone(), name.clone());
            now.get(&key).and_then(Option::as_deref) != Some(version.as_str())
        })
        .map(|(namespace, name, _)| (namespace.clone(), name.clone()))
        .collect();
    changed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(entries: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        entries
            .iter()
            .map(|(ns, n, v)| (ns.to_string(), n.to_string(), v.to_string()))
            .collect()
    }

    fn key(ns: &str, n: &str) -> SecretKey {
        (ns.to_string(), n.to_string())
    }

    #[test]
    fn each_secret_is_asked_about_once() {
        let r = read(&[("a", "acs", "1"), ("a", "acs", "2"), ("b", "ca", "7")]);
        assert_eq!(to_ask(&r), vec![key("a", "acs"), key("b", "ca")]);
        assert!(to_ask(&[]).is_empty());
    }

    #[test]
    fn table() {
        let now: HashMap<SecretKey, Option<String>> = [
            (key("a", "same"), Some("5".to_string())),
            (key("a", "rotated"), Some("9".to_string())),
            (key("a", "gone"), None),
            (key("b", "mixed"), Some("3".to_string())),
        ]
        .into_iter()
        .collect();
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str, &'a str)],
            &'a [(&'a str, &'a str)],
        );
        let cases: [Case; 6] = [
            ("nothing read", &[], &[]),
            ("unchanged", &[("a", "same", "5")], &[]),
            ("rotated", &[("a", "rotated", "8")], &[("a", "rotated")]),
            ("deleted", &[("a", "gone", "2")], &[("a", "gone")]),
            (
                "one client read an older version",
                &[("b", "mixed", "3"), ("b", "mixed", "2")],
                &[("b", "mixed")],
            ),
            (
                "not answered for: counted as changed",
                &[("c", "unknown", "1"), ("a", "same", "5")],
                &[("c", "unknown")],
            ),
        ];
        for (what, r, want) in cases {
            let want: Vec<SecretKey> = want.iter().map(|(ns, n)| key(ns, n)).collect();
            assert_eq!(changed(&read(r), &now), want, "{what}");
        }
    }
}
