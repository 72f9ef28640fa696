//! The client side of MCP's Streamable HTTP, shared so that neither the sidecar nor the operator
//! owns it: [`transport`] (HTTP or HTTPS with the platform's roots plus a server's CA bundle,
//! answers read within a size and a deadline, JSON or SSE messages) and [`discovery`] (what a
//! server says of itself and its tools); and [`vault`], the Vault / OpenBao reads of every
//! process that takes credentials from there.

pub mod discovery;
pub mod transport;
pub mod vault;
