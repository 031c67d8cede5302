//! Keeping the identity cache at one copy of each object, also while a watch lists again.
//!
//! kube-runtime's reflector gathers a re-list into a second map and swaps it in when the list
//! ends, so for the length of a re-list it holds the old and the new copy of every object: at
//! 100,000 identities that was the run's peak. [`reflect_in_place`] replaces each object where
//! it stands as the list brings it, and when the list ends removes those the list did not
//! bring (deleted while the watch was down). The first list fills an empty store, which has no
//! old copies, so it goes through the reflector's own path (and marks the store ready).
//!
//! [`changed_objects`] does what kube-runtime's `predicate_filter` does, in a tenth of the
//! memory: its cache keys each object by name, namespace and uid as three strings (about 220
//! bytes an object, 22 MB at 100,000); here an object is two hashes and a list number.

use futures::{Stream, StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::Predicate;
use kube::runtime::reflector::Lookup;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

/// What to do with one watch event, given whether the store has synced once and whether a
/// re-list is under way. Kept apart from the store so the table test can read it.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Hand the event to the reflector as it is.
    Pass,
    /// A re-list begins: start counting what it brings.
    BeginRelist,
    /// An object of the re-list: replace it in place and count it seen.
    ApplyInPlace,
    /// The re-list ended: remove what it did not bring.
    Sweep,
}

fn step<K>(event: &Event<K>, synced: bool) -> Step {
    match event {
        _ if !synced => Step::Pass,
        Event::Init => Step::BeginRelist,
        Event::InitApply(_) => Step::ApplyInPlace,
        Event::InitDone => Step::Sweep,
        Event::Apply(_) | Event::Delete(_) => Step::Pass,
    }
}

/// What keeps a summary of the store in step with it: told of every object that enters the
/// store and every one that leaves it (a replaced object leaves, its new version enters).
pub trait Follower<K> {
    /// The store is empty again (a first list that starts over).
    fn clear(&mut self);
    fn entered(&mut self, obj: &K);
    fn left(&mut self, obj: &K);
}

/// No summary.
impl<K> Follower<K> for () {
    fn clear(&mut self) {}
    fn entered(&mut self, _: &K) {}
    fn left(&mut self, _: &K) {}
}

/// [`kube::runtime::WatchStreamExt::reflect`] without the second copy during a re-list, and
/// with `follower` told of each change of the store.
/// Objects are counted seen by a 64-bit hash of their reference: a collision (odds about
/// 10⁻¹⁰ at 100,000 objects) could keep one deleted object until the next re-list, and a
/// reconcile of it finds it gone when it writes.
pub fn reflect_in_place<K, S>(
    stream: S,
    mut writer: Writer<K>,
    mut follower: impl Follower<K>,
) -> impl Stream<Item = S::Item>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let reader = writer.as_reader();
    let hasher = std::collections::hash_map::RandomState::new();
    let mut synced = false;
    let mut seen: Option<HashSet<u64>> = None;
    stream.inspect_ok(move |event| {
        crate::memory::churned(1);
        let key = |obj: &K| hasher.hash_one(obj.to_object_ref(Default::default()));
        // The version the store holds now, which leaves it when `obj` is applied.
        let replace = |obj: &K, follower: &mut dyn Follower<K>| {
            if let Some(old) = reader.get(&obj.to_object_ref(Default::default())) {
                follower.left(&old);
            }
        };
        match step(event, synced) {
            Step::Pass => {
                match event {
                    // The first list is gathered apart and swapped in at its end; one that
                    // starts over drops what it had gathered.
                    Event::Init => follower.clear(),
                    Event::InitApply(obj) => follower.entered(obj),
                    Event::InitDone => {}
                    Event::Apply(obj) => {
                        replace(obj, &mut follower);
                        follower.entered(obj);
                    }
                    Event::Delete(obj) => replace(obj, &mut follower),
                }
                writer.apply_watcher_event(event);
                synced |= matches!(event, Event::InitDone);
            }
            Step::BeginRelist => seen = Some(HashSet::new()),
            Step::ApplyInPlace => {
                if let Event::InitApply(obj) = event {
                    seen.get_or_insert_default().insert(key(obj));
                    replace(obj, &mut follower);
                    follower.entered(obj);
                    writer.apply_watcher_event(&Event::Apply(obj.clone()));
                }
            }
            Step::Sweep => {
                let seen = seen.take().unwrap_or_default();
                for obj in reader.state() {
                    if !seen.contains(&key(&obj)) {
                        follower.left(&obj);
                        writer.apply_watcher_event(&Event::Delete(obj.as_ref().clone()));
                    }
                }
            }
        }
    })
}

/// The objects of a watch whose `predicate` value changed since the watch last showed them
/// (every object the first time), as `predicate_filter` after `applied_objects` gives them.
/// Objects are keyed by a hash of namespace, name and uid: a collision (odds as above) would
/// let one object's change go unnoticed until its next requeue. Deletions drop their entry,
/// and a re-list drops the entries of objects it did not bring.
pub fn changed_objects<K, S, P>(
    stream: S,
    predicate: P,
) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
    P: Predicate<K>,
{
    let hasher = std::collections::hash_map::RandomState::new();
    let mut seen: HashMap<u64, (u64, u32)> = HashMap::new();
    let mut list = 0u32;
    stream.filter_map(move |event| {
        let key = |obj: &K| {
            let meta = obj.meta();
            hasher.hash_one((&meta.namespace, &meta.name, &meta.uid))
        };
        let out = match event {
            Err(e) => Some(Err(e)),
            Ok(Event::Apply(obj) | Event::InitApply(obj)) => match predicate.hash_property(&obj) {
                Some(value) => {
                    let before = seen.insert(key(&obj), (value, list));
                    (before.map(|(v, _)| v) != Some(value)).then_some(Ok(obj))
                }
                None => Some(Ok(obj)),
            },
            Ok(Event::Delete(obj)) => {
                seen.remove(&key(&obj));
                None
            }
            Ok(Event::Init) => {
                list = list.wrapping_add(1);
                None
            }
            Ok(Event::InitDone) => {
                seen.retain(|_, (_, l)| *l == list);
                None
            }
        };
        futures::future::ready(out)
    })
}

/// A label no object carries: the probe's watch brings no object, only the bookmark that ends
/// the (empty) initial state.
const PROBE_SELECTOR: &str = "acsoperator.io/streaming-list-probe=none";

/// Whether the API server serves streaming lists: a watch with `sendInitialEvents` that no
/// object matches must end its initial state with a bookmark marked
/// `k8s.io/initial-events-end`. A server without them refuses the request (or ignores the
/// parameter and sends no such bookmark within the probe's 10 s).
pub async fn serves_streaming_lists<K>(api: &Api<K>) -> bool
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    const END: &str = "k8s.io/initial-events-end";
    let params = WatchParams::streaming_lists()
        .labels(PROBE_SELECTOR)
        .timeout(10);
    let Ok(events) = api.watch(&params, "0").await else {
        return false;
    };
    let mut events = Box::pin(events);
    let first = tokio::time::timeout(std::time::Duration::from_secs(12), events.next()).await;
    match first {
        Ok(Some(Ok(WatchEvent::Bookmark(b)))) => {
            b.metadata.annotations.get(END).map(String::as_str) == Some("true")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector::store;

    fn cm(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn steps() {
        let obj = cm("a", "1");
        let table = [
            (Event::Init, false, Step::Pass),
            (Event::InitApply(obj.clone()), false, Step::Pass),
            (Event::InitDone, false, Step::Pass),
            (Event::Apply(obj.clone()), false, Step::Pass),
            (Event::Init, true, Step::BeginRelist),
            (Event::InitApply(obj.clone()), true, Step::ApplyInPlace),
            (Event::InitDone, true, Step::Sweep),
            (Event::Apply(obj.clone()), true, Step::Pass),
            (Event::Delete(obj), true, Step::Pass),
        ];
        for (event, synced, want) in table {
            assert_eq!(step(&event, synced), want, "{event:?} synced={synced}");
        }
    }

    fn versions(reader: &kube::runtime::reflector::Store<ConfigMap>) -> Vec<(String, String)> {
        let mut all: Vec<_> = reader
            .state()
            .iter()
            .map(|c| {
                (
                    c.metadata.name.clone().unwrap_or_default(),
                    c.metadata.resource_version.clone().unwrap_or_default(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// A re-list keeps one copy of each object throughout, replaces what it brings, and
    /// removes what it does not; the store is ready after the first list only.
    #[tokio::test]
    async fn relist_replaces_in_place_and_sweeps_the_missing() {
        let (reader, writer) = store::<ConfigMap>();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut out = Box::pin(reflect_in_place(rx, writer, ()));
        let send = |e: Event<ConfigMap>| tx.unbounded_send(Ok(e)).expect("send");
        for e in [
            Event::Init,
            Event::InitApply(cm("a", "1")),
            Event::InitApply(cm("b", "1")),
            Event::InitApply(cm("c", "1")),
        ] {
            send(e);
            out.next().await;
        }
        assert!(reader.is_empty(), "the first list is swapped in at its end");
        send(Event::InitDone);
        out.next().await;
        reader
            .wait_until_ready()
            .await
            .expect("ready after the first list");
        assert_eq!(reader.len(), 3);

        // The watch lists again: b changed, c was deleted meanwhile, d is new.
        send(Event::Init);
        out.next().await;
        assert_eq!(reader.len(), 3, "a re-list does not empty the store");
        send(Event::InitApply(cm("b", "2")));
        out.next().await;
        assert_eq!(
            versions(&reader),
            [("a", "1"), ("b", "2"), ("c", "1")].map(|(n, v)| (n.into(), v.into())),
            "b replaced where it stands, no second copy"
        );
        for e in [
            Event::InitApply(cm("a", "1")),
            Event::InitApply(cm("d", "1")),
        ] {
            send(e);
            out.next().await;
        }
        send(Event::InitDone);
        out.next().await;
        assert_eq!(
            versions(&reader),
            [("a", "1"), ("b", "2"), ("d", "1")].map(|(n, v)| (n.into(), v.into())),
            "c, not in the re-list, is gone"
        );

        // Events after the re-list go through as before.
        send(Event::Delete(cm("a", "1")));
        out.next().await;
        assert_eq!(reader.len(), 2);
    }

    /// A follower that keeps its own copy of what the store holds, by name and version.
    #[derive(Default, Clone)]
    struct Mirror(
        std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<(String, String), u32>>>,
    );

    impl Follower<ConfigMap> for Mirror {
        fn clear(&mut self) {
            self.0.lock().unwrap().clear();
        }
        fn entered(&mut self, obj: &ConfigMap) {
            *self.0.lock().unwrap().entry(name_version(obj)).or_default() += 1;
        }
        fn left(&mut self, obj: &ConfigMap) {
            let mut held = self.0.lock().unwrap();
            let key = name_version(obj);
            let n = held.get_mut(&key).expect("left without having entered");
            *n -= 1;
            if *n == 0 {
                held.remove(&key);
            }
        }
    }

    fn name_version(c: &ConfigMap) -> (String, String) {
        (
            c.metadata.name.clone().unwrap_or_default(),
            c.metadata.resource_version.clone().unwrap_or_default(),
        )
    }

    /// The follower sees every change of the store, and only those: after each event of a
    /// first list that starts over, changes, deletions and a re-list that sweeps, its copy
    /// is the store's.
    #[tokio::test]
    async fn the_follower_keeps_step_with_the_store() {
        let (reader, writer) = store::<ConfigMap>();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mirror = Mirror::default();
        let mut out = Box::pin(reflect_in_place(rx, writer, mirror.clone()));
        let events = [
            Event::Init,
            Event::InitApply(cm("x", "1")),
            // The first list starts over: x never reaches the store.
            Event::Init,
            Event::InitApply(cm("a", "1")),
            Event::InitApply(cm("b", "1")),
            Event::InitDone,
            Event::Apply(cm("a", "2")),
            Event::Apply(cm("c", "1")),
            Event::Delete(cm("b", "1")),
            Event::Init,
            Event::InitApply(cm("a", "3")),
            Event::InitApply(cm("d", "1")),
            Event::InitDone,
            Event::Delete(cm("zz", "1")),
        ];
        let mut synced = false;
        for (i, e) in events.into_iter().enumerate() {
            synced |= matches!(e, Event::InitDone);
            tx.unbounded_send(Ok(e)).expect("send");
            out.next().await;
            if synced {
                let held: std::collections::BTreeMap<_, _> =
                    versions(&reader).into_iter().map(|k| (k, 1)).collect();
                assert_eq!(*mirror.0.lock().unwrap(), held, "after event {i}");
            }
        }
        assert_eq!(
            mirror.0.lock().unwrap().keys().cloned().collect::<Vec<_>>(),
            [("a", "3"), ("d", "1")].map(|(n, v)| (n.to_string(), v.to_string())),
            "c, not in the re-list, left with the sweep"
        );
    }

    fn gen_cm(name: &str, uid: &str, generation: i64, note: &str) -> ConfigMap {
        let mut c = cm(name, "1");
        c.metadata.uid = Some(uid.into());
        c.metadata.generation = Some(generation);
        c.metadata.annotations = Some([("note".to_string(), note.to_string())].into());
        c
    }

    /// Passes an object the first time and on each change of generation or annotations;
    /// not on other changes; again after it was deleted or recreated, or left out of a
    /// re-list and brought back.
    #[tokio::test]
    async fn passes_changes_of_the_predicate_only() {
        use kube::runtime::predicates;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let predicate = predicates::generation.combine(predicates::annotations);
        let out = changed_objects(rx, predicate);
        let events = [
            (Event::Init, None),
            (Event::InitApply(gen_cm("a", "u1", 1, "x")), Some("a first")),
            (Event::InitApply(gen_cm("b", "u2", 1, "x")), Some("b first")),
            (Event::InitDone, None),
            (Event::Apply(gen_cm("a", "u1", 1, "x")), None),
            (
                Event::Apply(gen_cm("a", "u1", 2, "x")),
                Some("a generation"),
            ),
            (
                Event::Apply(gen_cm("a", "u1", 2, "y")),
                Some("a annotation"),
            ),
            (Event::Apply(gen_cm("a", "u1", 2, "y")), None),
            (Event::Apply(gen_cm("a", "u9", 2, "y")), Some("a recreated")),
            (Event::Delete(gen_cm("b", "u2", 1, "x")), None),
            (
                Event::Apply(gen_cm("b", "u2", 1, "x")),
                Some("b after delete"),
            ),
            // A re-list: a unchanged is not passed; b is missing from it.
            (Event::Init, None),
            (Event::InitApply(gen_cm("a", "u9", 2, "y")), None),
            (Event::InitDone, None),
            (
                Event::Apply(gen_cm("b", "u2", 1, "x")),
                Some("b after the re-list"),
            ),
        ];
        let mut want = Vec::new();
        for (event, passes) in events {
            if let Some(label) = passes {
                want.push(label);
            }
            tx.unbounded_send(Ok(event)).expect("send");
        }
        drop(tx);
        let got: Vec<_> = out.map(|r| r.expect("no error")).collect().await;
        let got: Vec<_> = got
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap(), c.metadata.generation))
            .collect();
        assert_eq!(got.len(), want.len(), "{got:?} against {want:?}");
        let names: Vec<_> = want.iter().map(|w| w.split(' ').next().unwrap()).collect();
        let got_names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(got_names, names, "{want:?}");
    }

    /// The probe's answer from the API server's first reply to its watch.
    async fn probe_answered(status: u16, body: &str) -> (bool, String) {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "team");
        let api: Api<ConfigMap> = Api::namespaced(client, "team");
        let body = body.to_string();
        let server = tokio::spawn(async move {
            let (request, respond) = handle.next_request().await.expect("the probe's request");
            respond.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.into_bytes()))
                    .unwrap(),
            );
            request.uri().query().unwrap_or_default().to_string()
        });
        let answer = serves_streaming_lists(&api).await;
        (answer, server.await.unwrap())
    }

    #[tokio::test]
    async fn the_probe_reads_the_end_of_the_initial_events() {
        let end = r#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"7","annotations":{"k8s.io/initial-events-end":"true"}}}}"#;
        let (served, query) = probe_answered(200, end).await;
        assert!(served, "a server with streaming lists");
        for part in [
            "sendInitialEvents=true",
            "resourceVersionMatch=NotOlderThan",
            "labelSelector=",
        ] {
            assert!(query.contains(part), "{query}: no {part}");
        }
        let plain = r#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"7"}}}"#;
        assert!(
            !probe_answered(200, plain).await.0,
            "a bookmark that ends nothing"
        );
        let refused = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Invalid","code":422,"message":"sendInitialEvents is forbidden"}"#;
        assert!(
            !probe_answered(422, refused).await.0,
            "a server that refuses it"
        );
    }
}
