//! What every Tollgate process shares: the admin port and logging.

pub mod admin;
pub mod telemetry;
