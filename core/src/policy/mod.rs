//! Tool policies: compiled once when loaded, evaluated per call (DESIGN §3.1).

mod compile;
mod compiled;
mod eval;
pub mod expr;
mod id;
pub mod input;
pub mod limits;
mod listing;
pub(crate) mod native;
pub(crate) mod regex_cache;

pub use compile::{CompileError, FieldError, compile_cluster_tool_policy, compile_tool_policy, enforcement_summary};
pub use eval::{Call, DecidedBy, Decision, Shadow, WorkflowLookup, attribution, decide};
pub use listing::{Justify, add_justification_property, justification_mode, rewrite_tools_list, split_justification, unloadable, visible};

pub use compiled::{CompiledPolicy, PolicyId, parse_action};
pub use input::{AgentInfo, Args};
pub use tollgate_api::{Action, Justification, PolicyKind};
