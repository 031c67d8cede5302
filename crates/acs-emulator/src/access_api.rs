//! The `/access` operations on the emulated resource, after authentication and the
//! api-version check: check the request ([`super::access`]), change or read the store, wait
//! for the disk when something changed, and shape the answer.

use super::access::{self, TeamsExtensionAssignmentRequest};
use super::identity_api::store_error;
use super::responses::{self, ErrorReply, HttpResponse};
use super::routes::Verb;
use super::state::{IdentityStore, StoreError, Upsert};
use hyper::StatusCode;

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
