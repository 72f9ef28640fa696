//! A group of reservations in one transaction (`Ledger::reserve_and_lease`): every budget
//! period the group touches is made if missing and locked, in one order, so two replicas'
//! groups never deadlock; the calls are taken in order in memory (`group.rs`); then the
//! periods' new figures, the allowances granted and the calls' `inflight` rows are written.

use std::collections::BTreeMap;

use super::db::{Arg, Db, Sql};
use super::types::{Claim, Granted, InFlight, LeaseAsk, LedgerError, Period, Reservation};
use super::writes::{add_all_in, open_all_in};
use super::{allowance, group, leases};

type Answers = Vec<Result<Reservation, LedgerError>>;

/// `requests` (each call's claims sorted) taken or refused, and `leases` granted to `instance`
/// where their periods are far enough from their limits, after the calls.
pub(super) async fn reserve_in(
    db: &mut impl Db,
    requests: &[(Vec<Claim>, InFlight)],
    leases: &[LeaseAsk],
    instance: &str,
) -> Result<(Answers, Vec<Granted>), LedgerError> {
    let mut touched: Vec<&Claim> = requests.iter().flat_map(|(claims, _)| claims).chain(leases.iter().map(|l| &l.claim)).collect();
    touched.sort_by(|a, b| (&a.budget, a.period_start_us).cmp(&(&b.budget, b.period_start_us)));
    touched.dedup_by(|a, b| (&a.budget, a.period_start_us) == (&b.budget, b.period_start_us));
    let (mut held, lent) = lock_periods_in(db, &touched).await?;
    let before = held.clone();
    // A refusal says what was spent: what gateways hold is not.
    let answers = group::take_in_order(&mut held, requests)
        .into_iter()
        .map(|a| match a {
            Err(LedgerError::Exhausted { budget, spent, limit }) => {
                let spent = spent - lent.get(&budget).copied().unwrap_or(0);
                Err(LedgerError::Exhausted { budget, spent, limit })
            }
            other => other,
        })
        .collect::<Vec<_>>();
    let changes = held.iter().map(|(period, now)| (period.clone(), (now - before.get(period).copied().unwrap_or(0), 0))).collect();
    add_all_in(db, &changes).await?;
    let mut granted = Vec::new();
    for ask in leases {
        let period = (ask.claim.budget.clone(), ask.claim.period_start_us);
        let now = held.get(&period).copied().unwrap_or(0);
        if let Some(size) = allowance::lease_size(ask.claim.hard_limit, now, ask.amount) {
            leases::grant_in(db, instance, &period, size).await?;
            held.insert(period.clone(), now + size);
            granted.push(Granted { period, size, held: now + size });
        }
    }
    let opened: Vec<&InFlight> = requests.iter().zip(&answers).filter(|(_, a)| a.as_ref().is_ok_and(|r| r.registered)).map(|((_, call), _)| call).collect();
    open_all_in(db, &opened).await?;
    Ok((answers, granted))
}

/// Each period's row made if missing (from its claim's floor: the spend the Budget's status
/// shows for that very period, which another ledger counted, since this one has no row for it)
/// and locked until the commit, in the order given: what each holds (spent, and leased by every
/// gateway), and what gateways hold of each budget.
async fn lock_periods_in(db: &mut impl Db, touched: &[&Claim]) -> Result<(BTreeMap<Period, i64>, BTreeMap<String, i64>), LedgerError> {
    let mut held: BTreeMap<Period, i64> = BTreeMap::new();
    let mut lent: BTreeMap<String, i64> = BTreeMap::new();
    for c in touched {
        let sql = Sql::written(
            "INSERT INTO budget_spend (budget, period_start_us, spent_micros) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (budget, period_start_us) DO UPDATE SET spent_micros = budget_spend.spent_micros RETURNING spent_micros, leased_micros",
        );
        let row = db.ints(sql, &[Arg::Text(&c.budget), Arg::Int(c.period_start_us), Arg::Int(c.floor)], 2).await?;
        let [spent, leased] = row[..] else { return Err(LedgerError::Unavailable(format!("a budget period read as {} values", row.len()))) };
        held.insert((c.budget.clone(), c.period_start_us), spent.saturating_add(leased));
        lent.insert(c.budget.clone(), leased);
    }
    Ok((held, lent))
}
