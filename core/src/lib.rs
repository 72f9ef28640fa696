//! Tollgate's pure core: every decision as a function of its inputs. No IO, no async runtime.
//! One folder per subject (docs/design.md, section 1):
//!
//! - [`policy`]: compile `ToolPolicy` / `ClusterToolPolicy` (CEL at load, a native evaluator for
//!   the common shapes) and decide tool calls.
//! - [`approval`]: the `ApprovalRequest` phase machine, who may write a decision and what a
//!   person's decision must carry, held calls, notifications, Slack, the AI first reader.
//! - [`model`]: model calls: which model a name is, what a request may ask a provider, a call's
//!   admission and cost, budgets, agent keys.
//! - [`mcp`]: MCP on the wire: JSON-RPC, SSE, routing headers, access, aggregation, tasks.
//! - [`audit`]: the audit record, its bounds, redaction, the hash chain and signed checkpoints.
//! - [`k8s`]: Kubernetes objects as data: injection and the pod guard, the Gateway's objects,
//!   RBAC, references, transparent mode, conditions, names, the Lease.
//! - [`trace`]: what a span may carry of what an agent sent.
//! - [`glob`], [`hmac`], [`vault`]: small shared pieces.

pub mod approval;
pub mod audit;
pub mod glob;
pub mod hmac;
pub mod json_text;
pub mod json_tree;
pub mod k8s;
pub mod mcp;
pub mod model;
pub mod policy;
pub mod sha256_text;
pub mod trace;
pub mod vault;
