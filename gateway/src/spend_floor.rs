//! A ledger that has never counted a budget period starts it from the spend the Budget's status
//! shows for that period (`tollgate_core::model::spend::floor_from_status`), before the gateway
//! is ready: a gateway whose SQLite volume was lost, or replaced by an empty one, does not let
//! through what the budget had already refused. A period the ledger has counted is left as it
//! is: the ledger, not the status, is the account.

use crate::index::Index;
use crate::ledger::{Ledger, LedgerError};
use jiff::Timestamp;
use tollgate_core::model::spend;

/// Every budget period of `index` that `ledger` has no row for, started from its status.
pub async fn seed(ledger: &Ledger, index: &Index, now: Timestamp) -> Result<(), LedgerError> {
    for (ns, budgets) in index.budgets.iter() {
        for (name, spec) in budgets {
            let key = format!("{ns}/{name}");
            let start = spend::period_start(spec.period, now);
            let Some(status) = index.budget_status.get(&key) else { continue };
            let Some(floor) = spend::floor_from_status(status.spent_usd, status.period_start.as_ref().map(|t| t.0), start) else { continue };
            if ledger.start_period_at(&key, start.as_microsecond(), floor).await? {
                tracing::warn!(
                    budget = key,
                    spent_micros = floor,
                    "the ledger had not counted this budget period: it starts from the spend the Budget's status shows"
                );
            }
        }
    }
    Ok(())
}
