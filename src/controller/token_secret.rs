//! The Secret that carries a token to workloads: what it must contain, and how the one found
//! in the cluster compares with that.

use crate::api::{AcsIdentity, SecretTemplate};
use crate::policy::secret_state::{Found, TokenMatch, secret_state};
use crate::policy::{SecretState, TokenRecord};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use std::collections::{BTreeMap, BTreeSet};

pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "acs-identity-operator";
/// The label selector of the owned-Secret watch.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=acs-identity-operator";

pub const KEY_TOKEN: &str = "token";
pub const KEY_EXPIRES_ON: &str = "expiresOn";
pub const KEY_IDENTITY_ID: &str = "identityId";

/// What the Secret holds.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenContent {
    pub token: String,
    pub expires_on: Timestamp,
    pub identity_id: String,
}

impl std::fmt::Debug for TokenContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenContent")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .field("identity_id", &self.identity_id)
            .finish()
    }
}

/// 16 hex digits of SHA-256 of the token: enough to notice an edit, useless to an attacker.
pub fn token_hash(token: &str) -> String {
    crate::acs::fingerprint::short_sha256_hex(&[token.as_bytes()])
}

/// RFC 3339 in UTC with whole seconds (rounded down), as written into the Secret.
pub fn format_expires_on(t: Timestamp) -> String {
    crate::policy::whole_seconds(t).to_string()
}

/// The Secret for `identity` holding `content`, as the operator applies it (server-side
/// apply): only the fields the operator owns. What the template no longer lists disappears
/// from the Secret, what other tools added stays. `existing_uid`, the uid of the Secret
/// observed as ours, makes the write fail instead of touching a different object that took
/// its name in the meantime.
pub fn desired(
    identity: &AcsIdentity,
    content: &TokenContent,
    existing_uid: Option<&str>,
) -> Secret {
    let template = identity.spec.secret_template.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.insert(MANAGED_BY_KEY.into(), MANAGED_BY_VALUE.into());
    let data = BTreeMap::from([
        (
            KEY_TOKEN.to_string(),
            ByteString(content.token.clone().into_bytes()),
        ),
        (
            KEY_EXPIRES_ON.to_string(),
            ByteString(format_expires_on(content.expires_on).into_bytes()),
        ),
        (
            KEY_IDENTITY_ID.to_string(),
            ByteString(content.identity_id.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(identity.secret_name()),
            namespace: identity.metadata.namespace.clone(),
            uid: existing_uid.map(str::to_string),
            labels: Some(labels),
            annotations: (!template.annotations.is_empty()).then_some(template.annotations),
            owner_references: Some(vec![
                identity
                    .controller_owner_ref(&())
                    .expect("identity has a name and uid"),
            ]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Whether the object with `meta` is controlled by the object with `owner_uid`.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid)
}

/// The label and annotation keys the operator's own server-side apply holds on a Secret
/// (from its managed fields): what it set, as opposed to what other tools added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedKeys {
    pub labels: BTreeSet<String>,
    pub annotations: BTreeSet<String>,
}

impl OwnedKeys {
    pub fn of(meta: &ObjectMeta) -> Self {
        let ours = meta.managed_fields.iter().flatten().find(|m| {
            m.manager.as_deref() == Some(super::context::MANAGER)
                && m.operation.as_deref() == Some("Apply")
        });
        let Some(fields) = ours.and_then(|m| m.fields_v1.as_ref()) else {
            return Self::default();
        };
        let keys = |set: &str| -> BTreeSet<String> {
            fields.0["f:metadata"][set]
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect()
        };
        Self {
            labels: keys("f:labels"),
            annotations: keys("f:annotations"),
        }
    }
}

/// Whether the Secret's metadata are what the operator applies: our label and the template's
/// labels and annotations are there, and nothing we set earlier that the template dropped.
fn metadata_matches(
    meta: &ObjectMeta,
    owned: &OwnedKeys,
    template: Option<&SecretTemplate>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let includes = |have: &BTreeMap<String, String>, want: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    let template = template.cloned().unwrap_or_default();
    let dropped_label = owned
        .labels
        .iter()
        .any(|k| k != MANAGED_BY_KEY && !template.labels.contains_key(k));
    let dropped_annotation = owned
        .annotations
        .iter()
        .any(|k| !template.annotations.contains_key(k));
    labels.get(MANAGED_BY_KEY).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && includes(labels, &template.labels)
        && includes(annotations, &template.annotations)
        && !dropped_label
        && !dropped_annotation
}

/// The state of a Secret that still has the resourceVersion it had right after we wrote it:
/// its type and data are what we wrote, so only its metadata are compared.
pub fn observe_unchanged(
    meta: &ObjectMeta,
    owned: &OwnedKeys,
    owner_uid: &str,
    template: Option<&SecretTemplate>,
) -> SecretState {
    secret_state(Some(Found {
        controlled: is_controlled_by(meta, owner_uid),
        token: TokenMatch::Same,
        metadata_matches: metadata_matches(meta, owned, template),
    }))
}

/// Reads what the Secret holds, if it holds a complete token record.
pub fn read_content(secret: &Secret) -> Option<TokenContent> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(TokenContent {
        token: text(KEY_TOKEN)?,
        expires_on: text(KEY_EXPIRES_ON)?.parse().ok()?,
        identity_id: text(KEY_IDENTITY_ID)?,
    })
}

/// Compares the Secret found with what was last written and what the template asks for;
/// [`secret_state`] says which state that is.
pub fn observe(
    secret: Option<&Secret>,
    owner_uid: &str,
    expected: Option<&TokenRecord>,
    template: Option<&SecretTemplate>,
) -> SecretState {
    let found = secret.map(|secret| {
        let token = match (expected, read_content(secret)) {
            (Some(expected), Some(content))
                if token_hash(&content.token) == expected.token_hash =>
            {
                let data_ok = format_expires_on(content.expires_on)
                    == format_expires_on(expected.expires_on)
                    && content.identity_id == expected.identity_id
                    && secret.data.as_ref().is_some_and(|d| d.len() == 3);
                if data_ok {
                    TokenMatch::Same
                } else {
                    TokenMatch::OtherData
                }
            }
            (Some(_), Some(_)) => TokenMatch::Differs,
            _ => TokenMatch::Unknown,
        };
        let owned = OwnedKeys::of(&secret.metadata);
        Found {
            controlled: is_controlled_by(&secret.metadata, owner_uid),
            token,
            metadata_matches: metadata_matches(&secret.metadata, &owned, template)
                && secret.type_.as_deref().unwrap_or("Opaque") == "Opaque",
        }
    });
    secret_state(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::Scope;
    use crate::api::{AcsIdentitySpec, ConnectionRef};

    fn identity() -> AcsIdentity {
        let mut id = AcsIdentity::new(
            "alice",
            AcsIdentitySpec {
                connection_ref: ConnectionRef {
                    kind: Default::default(),
                    name: "acs".into(),
                },
                scopes: vec![Scope::Chat],
                token_lifetime_minutes: 60,
                renew_before: None,
                renew_before_percentage: None,
                secret_name: None,
                secret_template: Some(SecretTemplate {
                    labels: [("team".to_string(), "a".to_string())].into(),
                    annotations: [("note".to_string(), "x".to_string())].into(),
                }),
                identity_id: None,
                deletion_policy: Default::default(),
            },
        );
        id.metadata.namespace = Some("ns".into());
        id.metadata.uid = Some("uid-1".into());
        id
    }

    fn content() -> TokenContent {
        TokenContent {
            token: "tok-1".into(),
            expires_on: Timestamp::from_second(2_000_000_000).unwrap(),
            identity_id: "8:acs:r_1".into(),
        }
    }

    fn record_of(c: &TokenContent) -> TokenRecord {
        TokenRecord {
            identity_id: c.identity_id.clone(),
            params: crate::policy::TokenParams::new(&[Scope::Chat], 60, "conn".into()),
            issued_at: None,
            expires_on: c.expires_on,
            renewal_time: c.expires_on,
            token_hash: token_hash(&c.token),
            secret_resource_version: None,
        }
    }

    fn state(secret: Option<&Secret>, owner: &str) -> SecretState {
        observe(
            secret,
            owner,
            Some(&record_of(&content())),
            identity().spec.secret_template.as_ref(),
        )
    }

    #[test]
    fn the_written_secret_reads_back_as_current() {
        let s = desired(&identity(), &content(), None);
        assert_eq!(s.metadata.name.as_deref(), Some("alice"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(read_content(&s), Some(content()));
        assert_eq!(state(Some(&s), "uid-1"), SecretState::Current);
        let data = s.data.unwrap();
        assert_eq!(data[KEY_EXPIRES_ON].0, b"2033-05-18T03:33:20Z");
    }

    #[test]
    fn states() {
        let good = desired(&identity(), &content(), None);
        assert_eq!(state(None, "uid-1"), SecretState::Missing);
        assert_eq!(state(Some(&good), "someone-else"), SecretState::Foreign);

        let mut unowned = good.clone();
        unowned.metadata.owner_references = None;
        assert_eq!(state(Some(&unowned), "uid-1"), SecretState::Foreign);

        let mut edited = good.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert(KEY_TOKEN.into(), ByteString(b"forged".to_vec()));
        assert_eq!(state(Some(&edited), "uid-1"), SecretState::TokenChanged);

        let mut emptied = good.clone();
        emptied.data = None;
        assert_eq!(state(Some(&emptied), "uid-1"), SecretState::TokenChanged);

        let mut relabelled = good.clone();
        relabelled.metadata.labels.as_mut().unwrap().remove("team");
        assert_eq!(
            state(Some(&relabelled), "uid-1"),
            SecretState::MetadataDrift
        );

        let mut extra_key = good.clone();
        extra_key
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), ByteString(vec![1]));
        assert_eq!(state(Some(&extra_key), "uid-1"), SecretState::MetadataDrift);

        let mut foreign_labels = good.clone();
        foreign_labels
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("other".into(), "y".into());
        assert_eq!(
            state(Some(&foreign_labels), "uid-1"),
            SecretState::Current,
            "extra labels are fine"
        );
    }

    #[test]
    fn an_unchanged_secret_is_judged_by_its_metadata() {
        let template = identity().spec.secret_template;
        let good = desired(&identity(), &content(), None).metadata;
        let none = OwnedKeys::default();
        let judge = |meta: &ObjectMeta, owner: &str| {
            observe_unchanged(meta, &none, owner, template.as_ref())
        };
        assert_eq!(judge(&good, "uid-1"), SecretState::Current);
        assert_eq!(judge(&good, "someone-else"), SecretState::Foreign);
        let mut relabelled = good.clone();
        relabelled.labels.as_mut().unwrap().remove("team");
        assert_eq!(judge(&relabelled, "uid-1"), SecretState::MetadataDrift);
        let mut unannotated = good.clone();
        unannotated.annotations = None;
        assert_eq!(judge(&unannotated, "uid-1"), SecretState::MetadataDrift);
        let mut not_ours = good.clone();
        not_ours.labels.as_mut().unwrap().remove(MANAGED_BY_KEY);
        assert_eq!(judge(&not_ours, "uid-1"), SecretState::MetadataDrift);
    }

    #[test]
    fn a_key_we_applied_that_the_template_dropped_is_drift() {
        let template = identity().spec.secret_template;
        let mut meta = desired(&identity(), &content(), None).metadata;
        meta.labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "gold".into());
        let fields = serde_json::json!({"f:metadata": {
            "f:labels": {"f:team": {}, "f:tier": {}, "f:app.kubernetes.io/managed-by": {}},
            "f:annotations": {"f:note": {}}}});
        meta.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(crate::controller::context::MANAGER.into()),
                operation: Some("Apply".into()),
                fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                    fields,
                )),
                ..Default::default()
            },
        ]);
        let owned = OwnedKeys::of(&meta);
        assert_eq!(owned.annotations.iter().collect::<Vec<_>>(), ["note"]);
        assert_eq!(
            observe_unchanged(&meta, &owned, "uid-1", template.as_ref()),
            SecretState::MetadataDrift,
            "tier was ours and the template no longer has it"
        );
        let mut by_others = OwnedKeys::of(&meta);
        by_others.labels.remove("tier");
        assert_eq!(
            observe_unchanged(&meta, &by_others, "uid-1", template.as_ref()),
            SecretState::Current,
            "a label another tool set is not ours to remove"
        );
    }

    #[test]
    fn the_applied_secret_holds_only_what_the_operator_owns() {
        let mut id = identity();
        id.spec.secret_template.as_mut().unwrap().labels.clear();
        let applied = desired(&id, &content(), Some("secret-uid"));
        let labels = applied.metadata.labels.unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            [MANAGED_BY_KEY],
            "a label the template dropped is not applied, so apply removes it"
        );
        assert_eq!(applied.metadata.uid.as_deref(), Some("secret-uid"));
        assert_eq!(applied.metadata.resource_version, None);
        assert_eq!(desired(&id, &content(), None).metadata.uid, None);
    }

    #[test]
    fn debug_hides_token() {
        assert!(!format!("{:?}", content()).contains("tok-1"));
    }
}
