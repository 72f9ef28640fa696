//! The logic of Tollgate's command-line tools, kept out of the binaries so it can be tested.

pub mod approve;
pub mod offline;
