//! Whether an event of a Secret that connections read is news to them. Each piece of news
//! drops the connection's client and queues a look at every identity it serves: after an API
//! server restart, a re-list that brought the same Secret again queued all 100,000
//! identities of the 100,000 run. Only the versions of Secrets that connections read are
//! kept (a handful), never their content.

use std::collections::HashMap;

/// How the watch showed the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Brought by a list (the first, or a re-list after a lost watch).
    Listed,
    /// A change the watch saw happen.
    Changed,
    Deleted,
}

/// The versions of the connections' Secrets last seen. A Secret seen for the first time is
/// always news, also in the watch's first list: that list may reach a Secret only after its
/// identities were reconciled with an older version of it (seen under load: a rotated Secret
/// that came in the first list left its identity failed).
#[derive(Debug, Default)]
pub struct SecretVersions {
    known: HashMap<(String, String), String>,
}

impl SecretVersions {
    /// Whether `namespace/name`, `seen` at `version`, is news to the connections reading it.
    pub fn is_news(&mut self, seen: Seen, namespace: &str, name: &str, version: &str) -> bool {
        let key = (namespace.to_string(), name.to_string());
        if seen == Seen::Deleted {
            self.known.remove(&key);
            return true;
        }
        self.known.insert(key, version.to_string()).as_deref() != Some(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let mut v = SecretVersions::default();
        let steps = [
            // First seen, even in the first list: the identities may have read an older one.
            ("first list", (Seen::Listed, "a", "1"), true),
            ("first list, another", (Seen::Listed, "b", "1"), true),
            ("changed", (Seen::Changed, "a", "2"), true),
            ("re-list, same version", (Seen::Listed, "a", "2"), false),
            (
                "re-list, changed while the watch was down",
                (Seen::Listed, "b", "5"),
                true,
            ),
            ("re-list, new", (Seen::Listed, "c", "1"), true),
            ("deleted", (Seen::Deleted, "c", "1"), true),
            ("created again", (Seen::Changed, "c", "1"), true),
            ("the same version again", (Seen::Changed, "c", "1"), false),
        ];
        for (what, (seen, name, version), news) in steps {
            assert_eq!(v.is_news(seen, "ns", name, version), news, "{what}");
        }
    }

    #[test]
    fn a_change_during_the_first_list_is_news() {
        let mut v = SecretVersions::default();
        assert!(v.is_news(Seen::Changed, "ns", "a", "1"));
        assert!(v.is_news(Seen::Deleted, "ns", "a", "1"));
    }
}
