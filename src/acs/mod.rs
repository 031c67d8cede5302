//! The Azure Communication Services Identity data plane: connection strings, HMAC request
//! signing, and a typed client for the operations the operator needs. Nothing here knows
//! about Kubernetes.

mod access_key;
pub mod connection_string;
pub mod signing;

pub use access_key::{AccessKey, InvalidAccessKey};
pub use connection_string::{ConnectionString, ConnectionStringError};
pub mod model;

pub use model::{API_VERSION, Scope};
pub mod client;
pub mod error;

pub use client::{AcsClient, ClientOptions, CreatedIdentity, IssuedToken, TokenLifetime};
pub use error::{AcsError, ServiceError};
