//! The `/access` operations on the emulated resource, after authentication and the
//! api-version check: check the request ([`super::access`]), change or read the store, wait
//! for the disk when something changed, and shape the answer.

use super::access::{
    self, EntraAssignmentRequest, EntraPatchRequest, TeamsExtensionAssignmentRequest,
};
use super::identity_api::{IdentityService, store_error};
use super::responses::{self, ErrorReply, HttpResponse};
use super::routes::Verb;
use super::state::{IdentityStore, StoreError, Upsert};
use super::teams::TeamsUserClaims;
use acs_client::model::{CreateIdentityResponse, IdentityBody};
use hyper::StatusCode;
use std::time::SystemTime;

/// `GET/PUT/DELETE /access/teamsExtension/tenants/{tenantId}/assignments/{objectId}`.
pub async fn teams_extension_assignment(
    store: &IdentityStore,
    verb: Verb,
    tenant_id: &str,
    object_id: &str,
    body: Result<TeamsExtensionAssignmentRequest, ErrorReply>,
) -> Result<HttpResponse, ErrorReply> {
    access::tenant_and_object(tenant_id, object_id)?;
    let refused = |error| assignment_error(error, object_id);
    Ok(match verb {
        Verb::Get => {
            let assignment = store
                .teams_extension(tenant_id, object_id)
                .ok_or_else(|| access::assignment_not_found(object_id))?;
            responses::success_json(StatusCode::OK, &assignment)
        }
        Verb::Put => {
            let assignment = access::teams_extension_assignment(tenant_id, object_id, &body?)?;
            let upsert = store
                .put_teams_extension(assignment.clone())
                .map_err(refused)?;
            store.durable().await.map_err(refused)?;
            responses::success_json(upsert_status(upsert), &assignment)
        }
        Verb::Delete => {
            store
                .delete_teams_extension(tenant_id, object_id)
                .map_err(refused)?;
            store.durable().await.map_err(refused)?;
            responses::no_content()
        }
    })
}

/// `POST /access/teamsExtension/:exchangeAccessToken` for `user`, whose token is checked.
pub fn exchange_teams_extension(
    identities: &IdentityService,
    user: &TeamsUserClaims,
    now: SystemTime,
) -> Result<HttpResponse, ErrorReply> {
    let store = identities.store();
    let assignment = store.teams_extension(&user.tid, &user.oid);
    access::teams_extension_grant(user, assignment.as_ref())?;
    let id = access::teams_extension_identity(store.resource_id(), user);
    Ok(exchanged(identities, id, user, now))
}

/// `GET/PUT/DELETE /access/entra/assignments/{objectId}`.
pub async fn entra_assignment(
    store: &IdentityStore,
    verb: Verb,
    object_id: &str,
    body: Result<EntraAssignmentRequest, ErrorReply>,
) -> Result<HttpResponse, ErrorReply> {
    let refused = |error| assignment_error(error, object_id);
    Ok(match verb {
        Verb::Get => {
            let assignment = store
                .entra(object_id)
                .ok_or_else(|| access::assignment_not_found(object_id))?;
            responses::success_json(StatusCode::OK, &assignment)
        }
        Verb::Put => {
            let assignment = access::entra_assignment(object_id, &body?)?;
            let upsert = store.put_entra(assignment.clone()).map_err(refused)?;
            store.durable().await.map_err(refused)?;
            responses::success_json(upsert_status(upsert), &assignment)
        }
        Verb::Delete => {
            store.delete_entra(object_id).map_err(refused)?;
            store.durable().await.map_err(refused)?;
            responses::no_content()
        }
    })
}

/// The query parameter of a `nextLink`: where the next page of assignments starts.
const CONTINUATION: &str = "continuationToken";

/// `GET /access/entra/assignments`: a page, with a `nextLink` (this URI, `version` and where
/// to continue) when more follow.
pub fn list_entra(
    store: &IdentityStore,
    query: Option<&str>,
    request_uri: &str,
    version: &str,
) -> HttpResponse {
    let after = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == CONTINUATION)
        .map(|(_, value)| value.into_owned());
    let (value, next) = store.entra_page(after.as_deref(), access::ENTRA_PAGE_SIZE);
    let next_link = next.map(|after| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("api-version", version)
            .append_pair(CONTINUATION, &after)
            .finish();
        format!("{request_uri}?{query}")
    });
    let mut body = serde_json::json!({ "value": value });
    if let Some(link) = next_link {
        body["nextLink"] = link.into();
    }
    responses::success_json(StatusCode::OK, &body)
}

/// `PATCH /access/entra/assignments`: every change checked, then all made; the answer lists
/// the assignments set.
pub async fn patch_entra(
    store: &IdentityStore,
    body: Result<EntraPatchRequest, ErrorReply>,
) -> Result<HttpResponse, ErrorReply> {
    let changes = access::entra_patch(&body?)?;
    let refused = |error| store_error(error, "");
    let set = store.patch_entra(changes).map_err(refused)?;
    store.durable().await.map_err(refused)?;
    Ok(responses::success_json(
        StatusCode::OK,
        &serde_json::json!({ "value": set }),
    ))
}

/// `POST /access/entra/:exchangeAccessToken` for `user`, whose token is checked.
pub fn exchange_entra(
    identities: &IdentityService,
    user: &TeamsUserClaims,
    now: SystemTime,
) -> Result<HttpResponse, ErrorReply> {
    let store = identities.store();
    access::entra_grant(user, &store.entra_in_tenant(&user.tid))?;
    let id = access::entra_identity(store.resource_id(), user);
    Ok(exchanged(identities, id, user, now))
}

/// The answer of an exchange: the identity and its new token.
fn exchanged(
    identities: &IdentityService,
    id: String,
    user: &TeamsUserClaims,
    now: SystemTime,
) -> HttpResponse {
    let token = identities.mint_for_entra_user(&id, user, now);
    let body = CreateIdentityResponse {
        identity: IdentityBody {
            id,
            custom_id: None,
            last_token_issued_at: None,
        },
        access_token: Some(token),
    };
    responses::success_json(StatusCode::OK, &body)
}

fn upsert_status(upsert: Upsert) -> StatusCode {
    match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Replaced => StatusCode::OK,
    }
}

fn assignment_error(error: StoreError, object_id: &str) -> ErrorReply {
    match error {
        StoreError::NotFound => access::assignment_not_found(object_id),
        StoreError::NotSaved => store_error(error, object_id),
    }
}
