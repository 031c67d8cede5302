//! The `/access` operations on the emulated resource, after authentication and the
//! api-version check: check the request ([`super::access`]), change or read the store, wait
//! for the disk when something changed, and shape the answer.

use super::access::{self, TeamsExtensionAssignmentRequest};
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
