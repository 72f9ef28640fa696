//! MCP on the wire, decided: JSON-RPC envelopes and the strict body check (one reading of a body, by a scanner of our own), Server-Sent Events,
//! the routing headers, who may reach the sidecar, the aggregated endpoint's names, discovery,
//! the tasks extension, and the canonical digest of a call's arguments.

pub mod access;
pub mod aggregate;
pub mod digest;
pub mod discovery;
pub mod jsonrpc;
pub mod methods;
pub mod routing;
pub mod scan;
pub mod sse;
pub mod strict;
pub mod tasks;
