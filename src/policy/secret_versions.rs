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

/// The versions of the connections' Secrets last seen.
#[derive(Debug, Default)]
pub struct SecretVersions {
    known: HashMap<(String, String), String>,
    /// The first list is done: the identities reconciled from their own first list, so what
    /// it brought was no news to them.
    synced: bool,
}

impl SecretVersions {
    /// A list ended.
    pub fn listed(&mut self) {
        self.synced = true;
    }

    /// Whether `namespace/name`, `seen` at `version`, is news to the connections reading it.
    pub fn is_news(&mut self, seen: Seen, namespace: &str, name: &str, version: &str) -> bool {
        let key = (namespace.to_string(), name.to_string());
        if seen == Seen::Deleted {
            self.known.remove(&key);
            return true;
        }
        match self.known.insert(key, version.to_string()) {
            Some(before) => before != version,
            None => self.synced || seen == Seen::Changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let mut v = SecretVersions::default();
        let steps = [
            // The first list: the identities start from their own list.
            ("first list", Some((Seen::Listed, "a", "1")), false),
            ("first list, another", Some((Seen::Listed, "b", "1")), false),
            ("list done", None, false),
            ("changed", Some((Seen::Changed, "a", "2")), true),
            (
                "re-list, same version",
                Some((Seen::Listed, "a", "2")),
                false,
            ),
            (
                "re-list, changed while the watch was down",
                Some((Seen::Listed, "b", "5")),
                true,
            ),
            ("re-list, new", Some((Seen::Listed, "c", "1")), true),
            ("deleted", Some((Seen::Deleted, "c", "1")), true),
            ("created again", Some((Seen::Changed, "c", "1")), true),
            (
                "the same version again",
                Some((Seen::Changed, "c", "1")),
                false,
            ),
        ];
        for (what, event, news) in steps {
            match event {
                Some((seen, name, version)) => {
                    assert_eq!(v.is_news(seen, "ns", name, version), news, "{what}");
                }
                None => v.listed(),
            }
        }
    }

    #[test]
    fn a_change_during_the_first_list_is_news() {
        let mut v = SecretVersions::default();
        assert!(v.is_news(Seen::Changed, "ns", "a", "1"));
        assert!(v.is_news(Seen::Deleted, "ns", "a", "1"));
    }
}
