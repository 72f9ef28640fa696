//! Tollgate's pure core: every decision as a function of its inputs. No IO, no async runtime.
//!
//! - [`policy`]: compile `ToolPolicy` / `ClusterToolPolicy` (CEL at load) and decide calls.
//! - [`approval`]: the `ApprovalRequest` phase machine.
//! - [`authz`]: whether a write to an `ApprovalRequest`'s status may be admitted.
//! - [`digest`], [`redact`]: the argument digest an approval binds to, and what may be stored.
//! - [`audit`]: the audit record.

pub mod access;
pub mod agent_rbac;
pub mod aggregate;
pub mod ai_review;
pub mod approval;
pub mod audit;
pub mod audit_bounds;
pub mod audit_chain;
pub mod audit_checkpoint;
pub mod authz;
pub mod conditions;
pub mod decision;
pub mod digest;
pub mod discovery;
pub mod expr;
pub mod gateway_objects;
pub mod glob;
pub mod held;
pub mod hmac;
pub mod inject;
pub mod jsonrpc;
pub mod k8s_names;
pub mod keys;
pub mod lease;
pub mod model_call;
pub mod model_request;
pub mod models;
mod native;
pub mod notify;
pub mod pod_guard;
pub mod policy;
pub mod redact;
pub mod references;
mod regex_cache;
pub mod request_authz;
pub mod routing;
pub mod slack;
pub mod spend;
pub mod sse;
pub mod strict;
pub mod tasks;
pub mod transparent;
pub mod vault;
