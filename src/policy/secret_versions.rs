//! Which of the Secrets that connections read changed while the operator was not watching.
//!
//! The operator watches Secrets from "now" on, without listing them first (see
//! [`crate::controller::connection_secrets`]). When that watch is lost for longer than the API
//! server keeps events, the changes in between are found by comparing, for each Secret a
//! cached client was built from or a failed build tried to read, the version read (or that it
//! was missing) with the version the Secret has now. Only versions are compared, never
//! content.

use std::collections::{BTreeSet, HashMap};

/// A Secret's (namespace, name).
pub type SecretKey = (String, String);

/// (namespace, name, the version read; `None`: it was not found).
pub type Read = (String, String, Option<String>);

/// The Secrets to ask about: each Secret of `read` once. `read` holds what every cached
/// client, and every build that failed, read of its Secrets.
pub fn to_ask(read: &[Read]) -> Vec<SecretKey> {
    let names: BTreeSet<SecretKey> = read
        .iter()
        .map(|(namespace, name, _)| (namespace.clone(), name.clone()))
        .collect();
    names.into_iter().collect()
}

/// The Secrets of `read` that changed: `now` gives each one's version now (`None`: it is
/// gone). A Secret read at another version than its version now changed (also one that was
/// missing and is there now, or the reverse), and so did one `now` does not answer for. Each
/// Secret appears once.
pub fn changed(read: &[Read], now: &HashMap<SecretKey, Option<String>>) -> Vec<SecretKey> {
    let changed: BTreeSet<SecretKey> = read
        .iter()
        .filter(|(namespace, name, version)| {
            let key = (namespace.clone(), name.clone());
            now.get(&key) != Some(version)
        })
        .map(|(namespace, name, _)| (namespace.clone(), name.clone()))
        .collect();
    changed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version "-" stands for not found.
    fn read(entries: &[(&str, &str, &str)]) -> Vec<Read> {
        entries
            .iter()
            .map(|(ns, n, v)| {
                let version = (*v != "-").then(|| v.to_string());
                (ns.to_string(), n.to_string(), version)
            })
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
            (key("b", "appeared"), Some("1".to_string())),
            (key("b", "still-missing"), None),
        ]
        .into_iter()
        .collect();
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str, &'a str)],
            &'a [(&'a str, &'a str)],
        );
        let cases: [Case; 8] = [
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
                "missing when read, there now",
                &[("b", "appeared", "-")],
                &[("b", "appeared")],
            ),
            ("missing then and now", &[("b", "still-missing", "-")], &[]),
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
