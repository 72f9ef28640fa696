//! What the API server asks the operator before it stores an object: validation (who may write
//! what), injection (the sidecar beside every agent pod), the webhook configurations' registration
//! and the webhooks' TLS.

pub mod inject;
pub mod references;
pub mod register;
pub mod tls;
pub mod validate;
