//! What the operator needs to know about its token Secrets between reads, kept small: per
//! Secret its resourceVersion, the controller owner's uid, labels and annotations. Fed by the
//! metadata watch of our Secrets. A reflector store of the watched metadata would keep a full
//! ObjectMeta per Secret, about four times as much (10 MB at 10,000 identities).
//!
//! Labels and annotations, with the keys our apply holds, are the same for most Secrets (the
//! operator's label and the template of identities written alike), so one copy of each such
//! [`Shape`] serves them all: about 290 bytes less per Secret. A Secret whose labels are its
//! own alone costs what it did.

use super::token_secret::OwnedKeys;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

type Key = (Box<str>, Box<str>);
type Pairs = Box<[(Box<str>, Box<str>)]>;

/// The parts of one Secret's metadata that matter to us.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    resource_version: Opaque,
    /// The Secret's own uid: a write pins it, so a Secret that took the name meanwhile is
    /// never touched.
    uid: Option<Opaque>,
    /// uid of the controller owner.
    owner: Option<Opaque>,
    shape: Arc<Shape>,
    /// The list (the first, or a re-list) that last brought this Secret.
    list: u32,
}

/// A string the API server gives and compares whole (a resourceVersion, a uid), kept without
/// an allocation in the forms it nearly always has: a decimal number (etcd's revision) or a
/// UUID. Any other text is kept as it is. About 100 bytes less per Secret than three boxed
/// strings; the text given back is always exactly the one read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Opaque {
    Number(u64),
    Uuid(uuid::Uuid),
    Text(Box<str>),
}

impl Opaque {
    /// Without allocating: it runs for every Secret the watch brings and every reconcile that
    /// asks the index. Only forms that print back the same are kept inline: digits without a
    /// leading zero, and a UUID in its 36-character hyphenated form in lower case.
    fn new(s: &str) -> Opaque {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if digits
            && (s == "0" || !s.starts_with('0'))
            && let Ok(n) = s.parse::<u64>()
        {
            return Opaque::Number(n);
        }
        if s.len() == 36
            && !s.bytes().any(|b| b.is_ascii_uppercase())
            && let Ok(u) = uuid::Uuid::try_parse(s)
        {
            return Opaque::Uuid(u);
        }
        Opaque::Text(s.into())
    }

    /// Whether this is `s`.
    fn is(&self, s: &str) -> bool {
        match self {
            Opaque::Text(t) => **t == *s,
            other => *other == Opaque::new(s),
        }
    }
}

impl std::fmt::Display for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opaque::Number(n) => n.fmt(f),
            Opaque::Uuid(u) => u.hyphenated().fmt(f),
            Opaque::Text(t) => t.fmt(f),
        }
    }
}

/// Labels and annotations of a Secret, and the keys of them our own apply holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    labels: Pairs,
    annotations: Pairs,
    owned_labels: Box<[Box<str>]>,
    owned_annotations: Box<[Box<str>]>,
}

/// One copy of each shape in use.
#[derive(Debug, Default)]
struct Shapes {
    all: HashSet<Arc<Shape>>,
    /// The count after the last sweep: the next comes when it has doubled.
    swept_at: usize,
}

impl Shapes {
    fn share(&mut self, shape: Shape) -> Arc<Shape> {
        if let Some(shared) = self.all.get(&shape) {
            return shared.clone();
        }
        if self.all.len() >= 2 * self.swept_at.max(64) {
            self.sweep();
        }
        let shared = Arc::new(shape);
        self.all.insert(shared.clone());
        shared
    }

    /// Drops the shapes no Secret has any more.
    fn sweep(&mut self) {
        self.all.retain(|s| Arc::strong_count(s) > 1);
        self.swept_at = self.all.len();
    }
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// The number of the latest list. A re-list replaces entries where they stand and, when
    /// it ends, drops those it did not bring: one copy of each at all times, where a second
    /// map built beside the first would double the index while the watch lists.
    list: u32,
    synced: bool,
    shapes: Shapes,
}

/// Index of our token Secrets' metadata.
#[derive(Debug, Default)]
pub struct TokenSecretIndex(RwLock<State>);

impl TokenSecretIndex {
    /// Applies one event of the metadata watch. Returns whether the event tells something new
    /// of a Secret: one not known at this version, or its deletion. A re-list brings every
    /// Secret again, and those already known at their version must not each queue a reconcile
    /// of their identity (100,000 at once after an API server restart).
    pub fn apply<K: kube::Resource>(&self, event: &watcher::Event<PartialObjectMeta<K>>) -> bool {
        crate::memory::churned(1);
        let mut state = self.0.write().expect("secret index lock");
        match event {
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let list = state.list;
                let Some((key, entry)) = entry(s, list, &mut state.shapes) else {
                    return true;
                };
                let known = state.entries.get(&key).is_some_and(|e| {
                    e.resource_version == entry.resource_version && e.uid == entry.uid
                });
                state.entries.insert(key, entry);
                !known
            }
            watcher::Event::Delete(s) => {
                if let Some(key) = key(s) {
                    state.entries.remove(&key);
                }
                true
            }
            watcher::Event::Init => {
                state.list = state.list.wrapping_add(1);
                false
            }
            watcher::Event::InitDone => {
                let list = state.list;
                state.entries.retain(|_, e| e.list == list);
                state.shapes.sweep();
                state.synced = true;
                false
            }
        }
    }

    /// The metadata of `namespace/name` if it is at `resource_version`; `None` if it is at
    /// another version, unknown, or the index has not synced yet. Its owner reference holds
    /// only the controller's uid. With it, the keys our own apply holds.
    pub fn at_version(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Option<(ObjectMeta, OwnedKeys)> {
        let state = self.0.read().expect("secret index lock");
        if !state.synced {
            return None;
        }
        let e = state.entries.get(&(namespace.into(), name.into()))?;
        let shape = &e.shape;
        let owned = OwnedKeys {
            labels: shape.owned_labels.iter().map(|k| k.to_string()).collect(),
            annotations: shape
                .owned_annotations
                .iter()
                .map(|k| k.to_string())
                .collect(),
        };
        let meta = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version: Some(resource_version.to_string()),
            uid: e.uid.as_ref().map(|u| u.to_string()),
            owner_references: e.owner.as_ref().map(|uid| {
                vec![OwnerReference {
                    uid: uid.to_string(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]
            }),
            labels: Some(to_map(&shape.labels)),
            annotations: (!shape.annotations.is_empty()).then(|| to_map(&shape.annotations)),
            ..ObjectMeta::default()
        };
        e.resource_version
            .is(resource_version)
            .then_some((meta, owned))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().expect("secret index lock").entries.len()
    }

    #[cfg(test)]
    fn shapes(&self) -> usize {
        self.0.read().expect("secret index lock").shapes.all.len()
    }
}

fn key<K: kube::Resource>(s: &PartialObjectMeta<K>) -> Option<Key> {
    Some((s.namespace()?.into(), s.name_any().into()))
}

fn entry<K: kube::Resource>(
    s: &PartialObjectMeta<K>,
    list: u32,
    shapes: &mut Shapes,
) -> Option<(Key, Entry)> {
    let key = key(s)?;
    let owner = s
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| Opaque::new(&o.uid));
    let owned = OwnedKeys::of(&s.metadata);
    let resource_version = Opaque::new(&s.resource_version()?);
    let shape = Shape {
        labels: pairs(s.labels()),
        annotations: pairs(s.annotations()),
        owned_labels: owned.labels.iter().map(|k| k.as_str().into()).collect(),
        owned_annotations: owned
            .annotations
            .iter()
            .map(|k| k.as_str().into())
            .collect(),
    };
    let entry = Entry {
        resource_version,
        uid: s.uid().map(|u| Opaque::new(&u)),
        owner,
        shape: shapes.share(shape),
        list,
    };
    Some((key, entry))
}

fn pairs(map: &BTreeMap<String, String>) -> Pairs {
    map.iter()
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect()
}

fn to_map(pairs: &Pairs) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;

    fn meta(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": name, "namespace": "ns", "resourceVersion": rv,
                "labels": {"app.kubernetes.io/managed-by": "acs-identity-operator", "team": "a"},
                "annotations": {"note": "x"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u-0"},
                    {"apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
                     "name": name, "uid": "u-1", "controller": true}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn opaque_strings_come_back_exactly_as_read() {
        let uuid = "0b7c3f5e-8a1d-4c2b-9e6f-1a2b3c4d5e6f";
        let cases = [
            ("123456", "Number"),
            ("0", "Number"),
            ("0123", "Text"),                 // a leading zero would not come back
            ("18446744073709551616", "Text"), // past u64
            (uuid, "Uuid"),
            ("0B7C3F5E-8A1D-4C2B-9E6F-1A2B3C4D5E6F", "Text"), // upper case would not come back
            ("0b7c3f5e8a1d4c2b9e6f1a2b3c4d5e6f", "Text"),     // nor without hyphens
            ("u-1", "Text"),
            ("", "Text"),
        ];
        for (text, form) in cases {
            let o = Opaque::new(text);
            let kind = match o {
                Opaque::Number(_) => "Number",
                Opaque::Uuid(_) => "Uuid",
                Opaque::Text(_) => "Text",
            };
            assert_eq!((kind, o.to_string().as_str()), (form, text));
            assert!(o.is(text), "{text}");
        }
        assert!(!Opaque::new("123").is("0123"));
        assert!(!Opaque::new("0123").is("123"));
        assert!(!Opaque::new(uuid).is(&uuid.to_uppercase()));
        assert!(!Opaque::new("5").is("6"));
    }

    #[test]
    fn answers_only_for_the_version_asked_and_once_synced() {
        let index = TokenSecretIndex::default();
        index.apply::<Secret>(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(meta("a", "5")));
        assert_eq!(index.at_version("ns", "a", "5"), None, "not synced yet");
        index.apply::<Secret>(&watcher::Event::InitDone);
        let (m, _) = index.at_version("ns", "a", "5").expect("known");
        assert_eq!(m.labels.unwrap()["team"], "a");
        assert_eq!(m.annotations.unwrap()["note"], "x");
        let owners = m.owner_references.unwrap();
        assert_eq!((owners.len(), owners[0].uid.as_str()), (1, "u-1"));
        assert_eq!(index.at_version("ns", "a", "6"), None, "other version");
        assert_eq!(index.at_version("other", "a", "5"), None, "other namespace");

        index.apply(&watcher::Event::Apply(meta("a", "6")));
        assert!(index.at_version("ns", "a", "6").is_some());
        index.apply(&watcher::Event::Delete(meta("a", "6")));
        assert_eq!(index.at_version("ns", "a", "6"), None);
    }

    #[test]
    fn a_relist_drops_what_is_gone_and_keeps_answering_meanwhile() {
        let index = TokenSecretIndex::default();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(meta("a", "1")),
            watcher::Event::InitApply(meta("b", "1")),
            watcher::Event::InitDone,
        ] {
            index.apply(&e);
        }
        assert_eq!(index.len(), 2);
        index.apply::<Secret>(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(meta("a", "2")));
        assert!(
            index.at_version("ns", "b", "1").is_some(),
            "what the relist has not brought yet is kept until it is done"
        );
        assert!(
            index.at_version("ns", "a", "2").is_some(),
            "replaced in place"
        );
        assert_eq!(index.len(), 2, "one entry per Secret while relisting");
        index.apply::<Secret>(&watcher::Event::InitDone);
        assert_eq!(index.len(), 1);
        assert_eq!(index.at_version("ns", "b", "1"), None);
        assert!(index.at_version("ns", "a", "2").is_some());
    }

    /// Only what is new of a Secret passes on to reconcile its identity: not a re-list's
    /// copy of what the index already holds.
    #[test]
    fn tells_what_is_new() {
        let index = TokenSecretIndex::default();
        let steps = [
            (watcher::Event::Init, false),
            (watcher::Event::InitApply(meta("a", "1")), true),
            (watcher::Event::InitApply(meta("b", "1")), true),
            (watcher::Event::InitDone, false),
            (watcher::Event::Apply(meta("a", "2")), true),
            (watcher::Event::Init, false),
            (watcher::Event::InitApply(meta("a", "2")), false),
            (watcher::Event::InitApply(meta("b", "3")), true),
            (watcher::Event::InitApply(meta("c", "1")), true),
            (watcher::Event::InitDone, false),
            (watcher::Event::Delete(meta("c", "1")), true),
            (watcher::Event::Apply(meta("c", "1")), true),
        ];
        for (i, (event, new)) in steps.into_iter().enumerate() {
            assert_eq!(index.apply(&event), new, "step {i}: {event:?}");
        }
    }

    /// Secrets labelled alike share one copy of their labels; a shape no Secret has any
    /// more is dropped.
    #[test]
    fn secrets_labelled_alike_share_their_labels() {
        let index = TokenSecretIndex::default();
        index.apply::<Secret>(&watcher::Event::Init);
        for name in ["a", "b", "c"] {
            index.apply(&watcher::Event::InitApply(meta(name, "1")));
        }
        let mut other = meta("d", "1");
        other.labels_mut().insert("team".into(), "b".into());
        index.apply(&watcher::Event::InitApply(other.clone()));
        index.apply::<Secret>(&watcher::Event::InitDone);
        assert_eq!(index.shapes(), 2, "three Secrets alike, one apart");
        let (m, _) = index.at_version("ns", "d", "1").unwrap();
        assert_eq!(m.labels.unwrap()["team"], "b", "each answers with its own");
        let (m, _) = index.at_version("ns", "a", "1").unwrap();
        assert_eq!(m.labels.unwrap()["team"], "a");

        index.apply(&watcher::Event::Delete(other));
        index.apply::<Secret>(&watcher::Event::Init);
        index.apply::<Secret>(&watcher::Event::InitDone);
        assert_eq!(
            index.shapes(),
            0,
            "nothing left after a re-list that brought nothing"
        );
    }
}
