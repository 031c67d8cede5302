//! How an identity is created: whether an answer says the resource no longer serves the
//! preview api-version that takes `customId` (the idempotent create), so that the operator
//! falls back to the GA create instead of failing every create until someone turns
//! `--idempotent-create` off.

use crate::acs::AcsError;

/// The code ACS answers a request at an api-version it does not (or no longer) serve.
pub const UNSUPPORTED_API_VERSION: &str = "UnsupportedApiVersion";

/// Whether `error`, the answer to a create with `customId`, says the preview api-version is
/// not served: a 400 `UnsupportedApiVersion`. Nothing else is: a 400 of another code is a
/// request the GA create would get wrong too, and a 404 or 5xx says nothing about versions.
pub fn preview_refused(error: &AcsError) -> bool {
    matches!(
        error,
        AcsError::Rejected { status: 400, error } if error.code == UNSUPPORTED_API_VERSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::error::ServiceError;

    fn service(code: &str) -> ServiceError {
        ServiceError {
            code: code.into(),
            message: "m".into(),
            target: None,
        }
    }

    #[test]
    fn only_a_400_unsupported_api_version_retires_the_preview() {
        let cases = [
            (
                AcsError::Rejected {
                    status: 400,
                    error: service(UNSUPPORTED_API_VERSION),
                },
                true,
            ),
            (
                AcsError::Rejected {
                    status: 400,
                    error: service("ValidationError"),
                },
                false,
            ),
            (
                AcsError::Rejected {
                    status: 404,
                    error: service(UNSUPPORTED_API_VERSION),
                },
                false,
            ),
            (
                AcsError::Unavailable {
                    status: 503,
                    error: service(UNSUPPORTED_API_VERSION),
                },
                false,
            ),
            (AcsError::NotFound(service(UNSUPPORTED_API_VERSION)), false),
        ];
        for (error, want) in cases {
            assert_eq!(preview_refused(&error), want, "{error}");
        }
    }
}
