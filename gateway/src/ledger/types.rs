//! What a call claims from its budgets and what the ledger answers: the types the ledger's
//! statements and the group's in-memory decisions (`group.rs`) share.

use tollgate_core::model::spend::Micros;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("budget {budget} is spent: {spent} of {limit} micro-USD this period")]
    Exhausted { budget: String, spent: Micros, limit: Micros },
    #[error("ledger database: {0}")]
    Db(#[from] sqlx::Error),
    /// From the SQLite writer's own connection (`writer.rs`).
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A transaction the SQLite writer could not run (it panicked): trying it again would too.
    #[error("ledger writer: {0}")]
    Failed(String),
    /// The group a reservation was in could not be written (the cause is logged once).
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    #[error("ledger migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A budget period: the budget's `namespace/name` (or a rate key) and its period's start.
pub type Period = (String, i64);

/// One budget a call counts against, in the period it falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name`.
    pub budget: String,
    pub period_start_us: i64,
    pub hard_limit: Micros,
    /// An audited budget: counted as the others, never refusing (docs/design.md §3.4).
    pub audit: bool,
    /// What the claim counts. A rate limit is a claim too (docs/design.md §3.4): its key is
    /// `rate:…`, its period a minute's window, its limit requests or tokens in that window.
    pub unit: Unit,
    /// What the call takes from it; `None`: the call's estimate (micro-USD).
    pub amount: Option<Micros>,
    /// What the period starts from when this ledger has no row for it (`spend::floor_from_status`:
    /// another ledger counted it, that of the Gateway this one took over from, or this one's
    /// before its volume was lost); a row it has is never changed by it.
    pub floor: Micros,
}

/// What a claim counts, and so what it is settled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    /// Spend: settled to the call's cost.
    #[default]
    Micros,
    /// Requests: a call is one, settled or not.
    Requests,
    /// Tokens: the bound reserved, settled to the tokens used (or kept when unknown).
    Tokens,
}

impl Claim {
    /// A budget's claim of the call's estimate.
    pub fn budget(budget: String, period_start_us: i64, hard_limit: Micros, audit: bool) -> Claim {
        Claim { budget, period_start_us, hard_limit, audit, unit: Unit::Micros, amount: None, floor: 0 }
    }
}

/// A budget that refused a call, or (audited) would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhaustion {
    /// `namespace/name`.
    pub budget: String,
    /// What it held before the call.
    pub spent: Micros,
    pub limit: Micros,
}

/// What a call took from its budgets before it was sent.
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    /// The call's row in `inflight`, deleted when it is settled.
    pub id: i64,
    pub claims: Vec<Claim>,
    pub amount: Micros,
    /// Its `inflight` row was written with the reservation (a call counted against a budget);
    /// otherwise the recorder writes it, in its next batch.
    pub registered: bool,
    /// What each budget held once this call's estimate was taken, by budget.
    pub spent: Vec<(String, Micros)>,
    /// The audited budgets that would have refused the call.
    pub would_refuse: Vec<Exhaustion>,
    /// Tokens the call used, once known (what its token claims are settled to).
    pub tokens_used: Option<i64>,
    /// Taken from this gateway's allowances (`allowance.rs`), in memory: the recorder writes its
    /// `inflight` row and draws its claims from the leases, in its next batch.
    pub leased: bool,
}

/// A call in flight, as its `inflight` row: what is settled, as interrupted, if the gateway
/// serving it dies.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    pub id: i64,
    pub instance: String,
    pub started_us: i64,
    pub namespace: String,
    pub agent: String,
    pub service_account: String,
    pub pod: String,
    pub provider: String,
    pub model: String,
    pub amount: Micros,
}

/// A call that counts against no budget: nothing to take, and its `inflight` row is the
/// recorder's to write, in its next batch.
pub fn unregistered(call: &InFlight) -> Reservation {
    Reservation { id: call.id, amount: call.amount, ..Reservation::default() }
}

/// An allowance asked for: the claim of the period to lease from (its limit), for calls of
/// about `amount`.
#[derive(Debug, Clone)]
pub struct LeaseAsk {
    pub claim: Claim,
    pub amount: Micros,
}

/// An allowance granted: its size, and what its period held then (the lease included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub period: Period,
    pub size: i64,
    pub held: i64,
}

/// `ledger.status` of a call whose gateway stopped before it was settled.
pub const INTERRUPTED: u16 = 0;

/// A settled call, as its ledger row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub time_us: i64,
    pub namespace: String,
    pub agent: String,
    pub pod: String,
    pub provider: String,
    pub model: String,
    pub usage: tollgate_core::model::spend::Usage,
    pub cost: Micros,
    pub latency_ms: i64,
    pub status: u16,
}
