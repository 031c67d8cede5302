//! Normal Kubernetes Events (events.k8s.io/v1) about the objects we reconcile: one-offs such
//! as IdentityCreated or TokenRenewed, created directly.
//!
//! kube-runtime's `Recorder` keeps every Event it published in memory for six minutes, to
//! turn repeats into a series, and scans that cache on each publish. One-off Events never
//! repeat, yet after a burst of 10,000 identities the cache held 10,000 of them, a large share
//! of the operator's memory. Warnings, which do repeat, still go through the Recorder.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};

/// Longest note the API server accepts, in bytes.
const MAX_NOTE: usize = 1024;

/// Who reports the Events.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl Publisher {
    /// `instance` (the pod name) defaults to the controller name.
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
        }
    }

    /// Creates one Event about `regarding`.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let event = event(
            regarding,
            type_,
            reason,
            note,
            &self.controller,
            &self.instance,
        );
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }
}

/// The Event to create: named after the object plus a random suffix, like kubectl's.
fn event(
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
    controller: &str,
    instance: &str,
) -> Event {
    let name = format!(
        "{}.{:016x}",
        event_name_prefix(regarding.name.as_deref().unwrap_or("object")),
        rand::random::<u64>()
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        action: Some("Reconcile".into()),
        reason: Some(reason.into()),
        note: Some(truncate(note, MAX_NOTE).into()),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        regarding: Some(regarding),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Event::default()
    };
    debug_assert!(event.name_any().len() <= 253);
    event
}

/// The object's name as the start of an Event name: an object may be named with up to 253
/// characters, and the `.` and 16 hex digits after it must still fit in 253. Cut names end
/// in a letter or digit, as a DNS subdomain must before the `.`.
fn event_name_prefix(name: &str) -> &str {
    const ROOM: usize = 253 - 17;
    truncate(name, ROOM).trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> ObjectReference {
        ObjectReference {
            api_version: Some("acsoperator.io/v1alpha1".into()),
            kind: Some("AcsIdentity".into()),
            name: Some("alice".into()),
            namespace: Some("team".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn an_event_names_its_object_reporter_and_reason() {
        let e = event(
            reference(),
            EventType::Warning,
            "AcsThrottled",
            "slow down",
            "ctl",
            "pod-1",
        );
        assert!(e.metadata.name.as_deref().unwrap().starts_with("alice."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("AcsThrottled"));
        assert_eq!(e.note.as_deref(), Some("slow down"));
        assert_eq!(e.regarding.unwrap().uid.as_deref(), Some("u-1"));
        assert_eq!(e.reporting_controller.as_deref(), Some("ctl"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert!(e.event_time.is_some());
        let again = event(reference(), EventType::Normal, "R", "n", "c", "i");
        assert_ne!(
            again.metadata.name,
            event(reference(), EventType::Normal, "R", "n", "c", "i")
                .metadata
                .name
        );
    }

    #[test]
    fn events_about_objects_with_the_longest_names_have_valid_names() {
        for name in [
            "a".repeat(253),
            format!("{}.{}", "a".repeat(235), "b".repeat(17)),
        ] {
            let regarding = ObjectReference {
                name: Some(name.clone()),
                ..reference()
            };
            let e = event(regarding, EventType::Normal, "R", "n", "c", "i");
            let event_name = e.metadata.name.unwrap();
            assert!(event_name.len() <= 253, "{}", event_name.len());
            assert!(!event_name.contains(".."), "{event_name}");
            assert!(event_name.starts_with(&name[..200]));
            // The Event still says which object it is about.
            assert_eq!(e.regarding.unwrap().name, Some(name));
        }
    }

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        let note = "é".repeat(600); // 1200 bytes
        let cut = truncate(&note, MAX_NOTE);
        assert!(cut.len() <= MAX_NOTE && cut.len() >= MAX_NOTE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short", MAX_NOTE), "short");
    }
}
