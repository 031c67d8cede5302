//! The `/access` operations: which Entra principals may exchange their Entra ID token for an
//! ACS token of this resource (the assignments), checked and shaped here; the store keeps them
//! ([`super::state`]) and the service wires them ([`super::service`]).
//!
//! - Teams Phone extension (2025-03-02-preview, 2025-06-30 and later):
//!   `GET/PUT/DELETE /access/teamsExtension/tenants/{tenantId}/assignments/{objectId}` with
//!   `{"principalType":"user"|"resourceAccount","clientIds"?:[…]}`.
//!
//! - `POST /access/teamsExtension/:exchangeAccessToken` (same versions): an Entra ID access
//!   token of a user, for `https://auth.msft.communication.azure.com`, in
//!   `Authorization: Bearer`, body `{}`, answered `{"identity":{"id"},"accessToken":{…}}` for
//!   the identity `8:acs:<resource>_<tenantId>_<objectId>` (the description's example) when an
//!   assignment of that user in that tenant exists and, if it lists `clientIds`, lists the
//!   token's application. Otherwise 403 `Forbidden`.
//!
//! - Entra ID (2025-03-02-preview only): `GET/PUT/DELETE /access/entra/assignments/{objectId}`
//!   with `{"tenantId","principalType":"user"|"group"|"tenant","clientIds":[…]}` (all three
//!   required), `GET /access/entra/assignments` (pages of [`ENTRA_PAGE_SIZE`], `nextLink` to
//!   the next), `PATCH /access/entra/assignments` with a merge-patch map from object id to an
//!   assignment or `null` (removes it). `POST /access/entra/:exchangeAccessToken` takes a
//!   user's token for `https://communication.azure.com/clients` and answers for the identity
//!   `8:acs:<resource>_wf_<tenantId>_<objectId>` (the description's example) when an
//!   assignment in the token's tenant covers the user (`user`: its object id is the user's;
//!   `group`: the token's `groups` claim lists it; `tenant`: the whole tenant) and admits the
//!   token's client (an empty `clientIds` admits any). Otherwise 403 `Forbidden`.
//!
//! The shapes are the API description's (`specification/communication/data-plane/Identity`);
//! no answer of the service to these operations has been recorded, so every check and error
//! below is the emulator's reading of it: ids are GUIDs (Entra object, tenant and client ids
//! all are), a missing or unknown field is a 400 `ValidationError` naming it, as the service
//! words its other validation errors, and an unknown assignment is a 404
//! `AssignmentNotFound`.

use super::responses::ErrorReply;
use super::teams::TeamsUserClaims;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

/// Who a Teams Phone extension assignment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TeamsExtensionPrincipal {
    User,
    ResourceAccount,
}

impl TeamsExtensionPrincipal {
    const ALL: [(&'static str, Self); 2] = [
        ("user", Self::User),
        ("resourceAccount", Self::ResourceAccount),
    ];
}

/// A Teams Phone extension assignment, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamsExtensionAssignment {
    pub object_id: String,
    pub tenant_id: String,
    pub principal_type: TeamsExtensionPrincipal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ids: Option<Vec<String>>,
}

/// The body of `PUT …/tenants/{tenantId}/assignments/{objectId}`, read leniently so each
/// missing or wrong field gets its own error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamsExtensionAssignmentRequest {
    #[serde(default)]
    pub principal_type: Option<String>,
    #[serde(default)]
    pub client_ids: Option<Vec<String>>,
}

/// The assignment a PUT asks for, or the first reason it is refused.
pub fn teams_extension_assignment(
    tenant_id: &str,
    object_id: &str,
    request: &TeamsExtensionAssignmentRequest,
) -> Result<TeamsExtensionAssignment, ErrorReply> {
    guid(tenant_id, "tenantId")?;
    guid(object_id, "objectId")?;
    let principal_type = principal(
        request.principal_type.as_deref(),
        &TeamsExtensionPrincipal::ALL,
    )?;
    let client_ids = request
        .client_ids
        .as_deref()
        .map(client_ids_of)
        .transpose()?;
    Ok(TeamsExtensionAssignment {
        object_id: object_id.to_string(),
        tenant_id: tenant_id.to_string(),
        principal_type,
        client_ids,
    })
}

/// `Ok` when both path ids are GUIDs (checked before a read or delete too).
pub fn tenant_and_object(tenant_id: &str, object_id: &str) -> Result<(), ErrorReply> {
    guid(tenant_id, "tenantId")?;
    guid(object_id, "objectId")
}

/// 404 for an assignment that does not exist.
pub fn assignment_not_found(object_id: &str) -> ErrorReply {
    ErrorReply::new(
        StatusCode::NOT_FOUND,
        "AssignmentNotFound",
        format!("No assignment exists for object '{object_id}'."),
    )
}

/// Who an Entra ID assignment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntraPrincipal {
    User,
    Group,
    Tenant,
}

impl EntraPrincipal {
    const ALL: [(&'static str, Self); 3] = [
        ("user", Self::User),
        ("group", Self::Group),
        ("tenant", Self::Tenant),
    ];
}

/// An Entra ID assignment, as stored and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraAssignment {
    pub object_id: String,
    pub tenant_id: String,
    pub principal_type: EntraPrincipal,
    pub client_ids: Vec<String>,
}

/// The body of `PUT /access/entra/assignments/{objectId}`, and each value of a PATCH.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraAssignmentRequest {
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub principal_type: Option<String>,
    #[serde(default)]
    pub client_ids: Option<Vec<String>>,
}

/// The body of `PATCH /access/entra/assignments`: object id to assignment, `null` removes.
pub type EntraPatchRequest = std::collections::BTreeMap<String, Option<EntraAssignmentRequest>>;

/// How many assignments a page of `GET /access/entra/assignments` holds (the emulator's
/// choice: the description sets no size).
pub const ENTRA_PAGE_SIZE: usize = 50;

/// The assignment a PUT asks for, or the first reason it is refused.
pub fn entra_assignment(
    object_id: &str,
    request: &EntraAssignmentRequest,
) -> Result<EntraAssignment, ErrorReply> {
    guid(object_id, "objectId")?;
    let tenant_id = request.tenant_id.as_deref().ok_or_else(|| {
        ErrorReply::validation("TenantId: The TenantId field is required.", "TenantId")
    })?;
    guid(tenant_id, "TenantId")?;
    let principal_type = principal(request.principal_type.as_deref(), &EntraPrincipal::ALL)?;
    let client_ids = request.client_ids.as_deref().ok_or_else(|| {
        ErrorReply::validation("ClientIds: The ClientIds field is required.", "ClientIds")
    })?;
    Ok(EntraAssignment {
        object_id: object_id.to_string(),
        tenant_id: tenant_id.to_string(),
        principal_type,
        client_ids: client_ids_of(client_ids)?,
    })
}

/// The changes a PATCH asks for (`None`: remove), all checked before any is made; an error
/// names the object id it is about.
pub fn entra_patch(
    request: &EntraPatchRequest,
) -> Result<Vec<(String, Option<EntraAssignment>)>, ErrorReply> {
    request
        .iter()
        .map(|(object_id, value)| {
            let change = match value {
                None => guid(object_id, "objectId").map(|()| None),
                Some(value) => entra_assignment(object_id, value).map(Some),
            };
            change
                .map(|change| (object_id.clone(), change))
                .map_err(|error| ErrorReply {
                    message: format!("Assignment '{object_id}': {}", error.message),
                    ..error
                })
        })
        .collect()
}

/// The audience of a user's Entra token for the Entra ID exchange (the resource of the
/// `https://communication.azure.com/clients/.default` scope the SDKs ask for).
pub const ENTRA_AUDIENCE: &str = "https://communication.azure.com/clients";

/// `Ok` when one of `assignments` (those of the token's tenant) covers the user and admits
/// the token's client.
pub fn entra_grant(
    user: &TeamsUserClaims,
    assignments: &[EntraAssignment],
) -> Result<(), ErrorReply> {
    let covering: Vec<&EntraAssignment> = assignments
        .iter()
        .filter(|a| a.tenant_id.eq_ignore_ascii_case(&user.tid))
        .filter(|a| match a.principal_type {
            EntraPrincipal::User => a.object_id.eq_ignore_ascii_case(&user.oid),
            EntraPrincipal::Group => user
                .groups
                .iter()
                .any(|g| g.eq_ignore_ascii_case(&a.object_id)),
            EntraPrincipal::Tenant => true,
        })
        .collect();
    if covering.is_empty() {
        return Err(forbidden(format!(
            "No Entra ID assignment covers object '{}' of tenant '{}'.",
            user.oid, user.tid
        )));
    }
    covering
        .iter()
        .map(|a| client_allowed(&a.client_ids, user))
        .find(Result::is_ok)
        .unwrap_or_else(|| client_allowed(&covering[0].client_ids, user))
}

/// The ACS identity an Entra ID exchange answers for.
pub fn entra_identity(resource_id: &str, user: &TeamsUserClaims) -> String {
    format!("8:acs:{resource_id}_wf_{}_{}", user.tid, user.oid)
}

/// The audience of a user's Entra token for the Teams Phone extension exchange (the resource
/// of the `TeamsExtension.*` scopes the SDKs ask for).
pub const TEAMS_EXTENSION_AUDIENCE: &str = super::teams::TEAMS_AUDIENCE;

/// `Ok` when `assignment` (the one of the token's user in the token's tenant, if any) lets
/// the user exchange their token through the Teams Phone extension.
pub fn teams_extension_grant(
    user: &TeamsUserClaims,
    assignment: Option<&TeamsExtensionAssignment>,
) -> Result<(), ErrorReply> {
    let assignment = assignment.ok_or_else(|| {
        forbidden(format!(
            "No Teams Phone extension assignment exists for object '{}' of tenant '{}'.",
            user.oid, user.tid
        ))
    })?;
    client_allowed(assignment.client_ids.as_deref().unwrap_or_default(), user)
}

/// The ACS identity a Teams Phone extension exchange answers for.
pub fn teams_extension_identity(resource_id: &str, user: &TeamsUserClaims) -> String {
    format!("8:acs:{resource_id}_{}_{}", user.tid, user.oid)
}

/// The body of both exchanges: an empty object (unknown fields are ignored, as everywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExchangeRequest {}

/// An assignment without client ids admits any application; one with them, only those.
fn client_allowed(client_ids: &[String], user: &TeamsUserClaims) -> Result<(), ErrorReply> {
    if client_ids.is_empty()
        || client_ids
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&user.appid))
    {
        return Ok(());
    }
    Err(forbidden(format!(
        "The assignment of object '{}' does not allow client '{}'.",
        user.oid, user.appid
    )))
}

fn forbidden(message: String) -> ErrorReply {
    ErrorReply::new(StatusCode::FORBIDDEN, "Forbidden", message)
}

fn principal<T: Copy>(raw: Option<&str>, known: &[(&'static str, T)]) -> Result<T, ErrorReply> {
    let raw = raw.ok_or_else(|| {
        ErrorReply::validation(
            "PrincipalType: The PrincipalType field is required.",
            "PrincipalType",
        )
    })?;
    known
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
            ErrorReply::validation(
                format!(
                    "PrincipalType: '{raw}' is not a valid principal type. Valid values are: {}.",
                    names.join(", ")
                ),
                "PrincipalType",
            )
        })
}

/// Client ids: GUIDs, duplicates dropped, order kept.
fn client_ids_of(raw: &[String]) -> Result<Vec<String>, ErrorReply> {
    let mut ids: Vec<String> = Vec::with_capacity(raw.len());
    for id in raw {
        guid(id, "ClientIds")?;
        if !ids.iter().any(|known| known.eq_ignore_ascii_case(id)) {
            ids.push(id.clone());
        }
    }
    Ok(ids)
}

/// `Ok` for the `8-4-4-4-12` hex form Entra gives every object, tenant and application.
fn guid(value: &str, target: &'static str) -> Result<(), ErrorReply> {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    if lengths_ok
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Ok(());
    }
    Err(ErrorReply::validation(
        format!("{target}: '{value}' is not a valid GUID."),
        target,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "c70d068c-2f32-484d-9455-73070cd5aadd";
    const OBJECT: &str = "b27b64b9-39d2-44a3-869d-67700b74e805";
    const CLIENT: &str = "07474a86-625a-452f-977b-db4e13f21260";

    fn request(
        principal: Option<&str>,
        clients: Option<&[&str]>,
    ) -> TeamsExtensionAssignmentRequest {
        TeamsExtensionAssignmentRequest {
            principal_type: principal.map(str::to_string),
            client_ids: clients.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn a_valid_put_becomes_the_assignment_it_names() {
        let assignment = teams_extension_assignment(
            TENANT,
            OBJECT,
            &request(Some("user"), Some(&[CLIENT, CLIENT])),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&assignment).unwrap(),
            serde_json::json!({
                "objectId": OBJECT, "tenantId": TENANT, "principalType": "user", "clientIds": [CLIENT]
            })
        );
        let resource =
            teams_extension_assignment(TENANT, OBJECT, &request(Some("resourceAccount"), None))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&resource).unwrap(),
            serde_json::json!({"objectId": OBJECT, "tenantId": TENANT, "principalType": "resourceAccount"})
        );
    }

    #[test]
    fn each_refused_put_names_its_field() {
        let cases = [
            (
                "nope",
                OBJECT,
                request(Some("user"), None),
                "tenantId",
                "'nope' is not a valid GUID",
            ),
            (
                TENANT,
                "x",
                request(Some("user"), None),
                "objectId",
                "'x' is not a valid GUID",
            ),
            (
                TENANT,
                OBJECT,
                request(None, None),
                "PrincipalType",
                "field is required",
            ),
            (
                TENANT,
                OBJECT,
                request(Some("group"), None),
                "PrincipalType",
                "Valid values are: user, resourceAccount.",
            ),
            (
                TENANT,
                OBJECT,
                request(Some("User"), None),
                "PrincipalType",
                "'User'",
            ),
            (
                TENANT,
                OBJECT,
                request(Some("user"), Some(&[CLIENT, "app-1"])),
                "ClientIds",
                "'app-1' is not a valid GUID",
            ),
        ];
        for (tenant, object, request, target, message) in cases {
            let error = teams_extension_assignment(tenant, object, &request).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{message}");
            assert_eq!(error.code, "ValidationError");
            assert_eq!(error.target, Some(target), "{message}");
            assert!(error.message.contains(message), "{}", error.message);
        }
    }

    fn user(app: &str) -> TeamsUserClaims {
        super::super::teams::TeamsUserSpec {
            app_id: Some(app.into()),
            user_id: Some(OBJECT.into()),
            tenant_id: Some(TENANT.into()),
            ..Default::default()
        }
        .claims(1_795_000_000)
        .unwrap()
    }

    #[test]
    fn the_teams_extension_exchange_needs_an_assignment_that_admits_the_client() {
        let any_client =
            teams_extension_assignment(TENANT, OBJECT, &request(Some("user"), None)).unwrap();
        let listed =
            teams_extension_assignment(TENANT, OBJECT, &request(Some("user"), Some(&[CLIENT])))
                .unwrap();
        let other_client = "11111111-2222-3333-4444-555555555555";
        let cases = [
            (
                None,
                CLIENT,
                Some("No Teams Phone extension assignment exists"),
            ),
            (Some(&any_client), other_client, None),
            (Some(&listed), CLIENT, None),
            (Some(&listed), &CLIENT.to_uppercase(), None),
            (Some(&listed), other_client, Some("does not allow client")),
        ];
        for (assignment, app, refusal) in cases {
            let answer = teams_extension_grant(&user(app), assignment);
            match refusal {
                None => assert_eq!(answer, Ok(()), "{app}"),
                Some(message) => {
                    let error = answer.unwrap_err();
                    assert_eq!(error.status, StatusCode::FORBIDDEN);
                    assert!(error.message.contains(message), "{}", error.message);
                }
            }
        }
        assert_eq!(
            teams_extension_identity("r", &user(CLIENT)),
            format!("8:acs:r_{TENANT}_{OBJECT}")
        );
    }

    fn entra(object: &str, principal: EntraPrincipal, clients: &[&str]) -> EntraAssignment {
        EntraAssignment {
            object_id: object.into(),
            tenant_id: TENANT.into(),
            principal_type: principal,
            client_ids: clients.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn entra_assignments_cover_their_user_group_or_tenant_and_admit_their_clients() {
        use EntraPrincipal::{Group, Tenant, User};
        let group = "0f0e0d0c-0b0a-4908-8706-050403020100";
        let mut member = user(CLIENT);
        member.groups = vec![group.to_uppercase()];
        let other = "11111111-2222-3333-4444-555555555555";
        let elsewhere = EntraAssignment {
            tenant_id: other.into(),
            ..entra(OBJECT, User, &[])
        };
        let cases: Vec<(Vec<EntraAssignment>, &TeamsUserClaims, Option<&str>)> = vec![
            (vec![], &member, Some("No Entra ID assignment covers")),
            (vec![entra(OBJECT, User, &[])], &member, None),
            (
                vec![entra(other, User, &[])],
                &member,
                Some("No Entra ID assignment covers"),
            ),
            (
                vec![elsewhere],
                &member,
                Some("No Entra ID assignment covers"),
            ),
            (vec![entra(group, Group, &[CLIENT])], &member, None),
            (
                vec![entra(other, Group, &[])],
                &member,
                Some("No Entra ID assignment covers"),
            ),
            (vec![entra(TENANT, Tenant, &[])], &member, None),
            (
                vec![entra(OBJECT, User, &[other])],
                &member,
                Some("does not allow client"),
            ),
            // One covering assignment that admits the client is enough.
            (
                vec![
                    entra(OBJECT, User, &[other]),
                    entra(TENANT, Tenant, &[CLIENT]),
                ],
                &member,
                None,
            ),
        ];
        for (assignments, user, refusal) in cases {
            let answer = entra_grant(user, &assignments);
            match refusal {
                None => assert_eq!(answer, Ok(()), "{assignments:?}"),
                Some(message) => {
                    let error = answer.unwrap_err();
                    assert_eq!(error.status, StatusCode::FORBIDDEN);
                    assert!(error.message.contains(message), "{}", error.message);
                }
            }
        }
        assert_eq!(
            entra_identity("r", &member),
            format!("8:acs:r_wf_{TENANT}_{OBJECT}")
        );
    }

    #[test]
    fn entra_puts_need_every_field_and_patches_name_the_object() {
        let full = EntraAssignmentRequest {
            tenant_id: Some(TENANT.into()),
            principal_type: Some("group".into()),
            client_ids: Some(vec![]),
        };
        assert_eq!(
            entra_assignment(OBJECT, &full),
            Ok(entra(OBJECT, EntraPrincipal::Group, &[]))
        );
        let cases = [
            (
                EntraAssignmentRequest {
                    tenant_id: None,
                    ..full.clone()
                },
                "TenantId",
            ),
            (
                EntraAssignmentRequest {
                    principal_type: None,
                    ..full.clone()
                },
                "PrincipalType",
            ),
            (
                EntraAssignmentRequest {
                    client_ids: None,
                    ..full.clone()
                },
                "ClientIds",
            ),
            (
                EntraAssignmentRequest {
                    principal_type: Some("resourceAccount".into()),
                    ..full.clone()
                },
                "PrincipalType",
            ),
        ];
        for (request, target) in cases {
            let error = entra_assignment(OBJECT, &request).unwrap_err();
            assert_eq!(error.target, Some(target), "{}", error.message);
        }
        let patch: EntraPatchRequest = [
            (OBJECT.to_string(), Some(full.clone())),
            (CLIENT.to_string(), None),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            entra_patch(&patch),
            Ok(vec![
                (CLIENT.to_string(), None),
                (
                    OBJECT.to_string(),
                    Some(entra(OBJECT, EntraPrincipal::Group, &[]))
                ),
            ])
        );
        let bad: EntraPatchRequest = [(
            OBJECT.to_string(),
            Some(EntraAssignmentRequest {
                tenant_id: None,
                ..full
            }),
        )]
        .into_iter()
        .collect();
        let error = entra_patch(&bad).unwrap_err();
        assert!(
            error
                .message
                .starts_with(&format!("Assignment '{OBJECT}': TenantId")),
            "{}",
            error.message
        );
        let not_an_id: EntraPatchRequest = [("x".to_string(), None)].into_iter().collect();
        assert!(entra_patch(&not_an_id).is_err());
    }

    #[test]
    fn guids_in_either_case_pass_and_near_misses_do_not() {
        assert!(guid(&TENANT.to_uppercase(), "t").is_ok());
        for bad in [
            "",
            "c70d068c2f32484d945573070cd5aadd",
            "c70d068c-2f32-484d-9455-73070cd5aad",
            "g70d068c-2f32-484d-9455-73070cd5aadd",
            "{c70d068c-2f32-484d-9455-73070cd5aadd}",
        ] {
            assert!(guid(bad, "t").is_err(), "{bad}");
        }
    }
}
