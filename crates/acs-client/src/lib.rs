//! The Azure Communication Services Identity data plane: connection strings, HMAC request
//! signing, Entra ID bearer credentials, rate limits, and a typed client for the operations
//! the operator needs. Nothing here knows about Kubernetes.

mod access_key;
pub mod admission;
pub mod client;
pub mod connection_string;
pub mod entra;
pub mod error;
mod fair;
pub mod fingerprint;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod model;
mod roots;
pub mod signing;

pub use access_key::{AccessKey, InvalidAccessKey};
pub use client::{
    AcsClient, ClientOptions, CreateIdentityParams, CreatedIdentity, FirstToken, IssuedToken,
    TokenLifetime,
};
pub use connection_string::{ConnectionString, ConnectionStringError};
pub use entra::{ACS_SCOPE, WorkloadIdentity};
pub use error::{AcsClass, AcsError, MetricCode, ServiceError, TimeoutPhase};
pub use limits::{AcsRateLimiter, Admission, Operation};
pub use model::{API_VERSION, Scope};
