//! A group of reservations decided in memory, in order, against what each budget period held
//! when the group's transaction locked it (docs/design.md §3.4). The transaction holds those
//! rows until it commits, so deciding here is as exact as one conditional `UPDATE` per claim
//! was, and the group's writes are one `UPDATE` per budget period and one `INSERT` per
//! [`super::ROWS_PER_INSERT`] calls in flight, not two statements per call.

use std::collections::BTreeMap;

use super::types::{Claim, Exhaustion, InFlight, LedgerError, Period, Reservation, unregistered};

/// Each call of `requests` taken whole or refused, in order, against `held` (what each period
/// holds, updated as calls are taken): a claim is taken while its period holds less than its
/// hard limit (so at most one call's amount past it, as before); an audited claim is always
/// taken, and says it would have refused. A refused call gives back what its earlier claims took.
pub(super) fn take_in_order(held: &mut BTreeMap<Period, i64>, requests: &[(Vec<Claim>, InFlight)]) -> Vec<Result<Reservation, LedgerError>> {
    requests.iter().map(|(claims, call)| take(held, claims, call)).collect()
}

fn take(held: &mut BTreeMap<Period, i64>, claims: &[Claim], call: &InFlight) -> Result<Reservation, LedgerError> {
    if claims.is_empty() {
        return Ok(unregistered(call));
    }
    let mut spent = Vec::with_capacity(claims.len());
    let mut would_refuse = Vec::new();
    let mut taken: Vec<(Period, i64)> = Vec::with_capacity(claims.len());
    for c in claims {
        let amount = c.amount.unwrap_or(call.amount);
        let key = (c.budget.clone(), c.period_start_us);
        let now = held.get(&key).copied().unwrap_or(0);
        if !c.audit && now >= c.hard_limit {
            for (k, a) in taken {
                if let Some(v) = held.get_mut(&k) {
                    *v -= a;
                }
            }
            return Err(LedgerError::Exhausted { budget: c.budget.clone(), spent: now, limit: c.hard_limit });
        }
        if c.audit && now >= c.hard_limit {
            would_refuse.push(Exhaustion { budget: c.budget.clone(), spent: now, limit: c.hard_limit });
        }
        held.insert(key.clone(), now + amount);
        spent.push((c.budget.clone(), now + amount));
        taken.push((key, amount));
    }
    Ok(Reservation { id: call.id, claims: claims.to_vec(), amount: call.amount, registered: true, spent, would_refuse, tokens_used: None, leased: false })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call(id: i64, amount: i64) -> InFlight {
        InFlight { id, amount, ..InFlight::default() }
    }

    fn budget(name: &str, limit: i64) -> Claim {
        Claim::budget(name.into(), 0, limit, false)
    }

    #[test]
    fn calls_are_taken_in_order_until_the_limit_and_one_past_it_at_most() {
        let mut held = BTreeMap::from([(("b".to_owned(), 0), 80)]);
        let requests = vec![(vec![budget("b", 100)], call(1, 30)), (vec![budget("b", 100)], call(2, 30)), (vec![budget("b", 100)], call(3, 1))];
        let answers = take_in_order(&mut held, &requests);
        assert_eq!(answers[0].as_ref().unwrap().spent, [("b".to_owned(), 110)]);
        assert!(matches!(answers[1], Err(LedgerError::Exhausted { spent: 110, limit: 100, .. })));
        assert!(answers[2].is_err());
        assert_eq!(held[&("b".to_owned(), 0)], 110);
    }

    #[test]
    fn a_refused_call_gives_back_what_it_took_and_a_zero_limit_takes_nothing() {
        let mut held = BTreeMap::from([(("a".to_owned(), 0), 0), (("z".to_owned(), 0), 0)]);
        let answers = take_in_order(&mut held, &[(vec![budget("a", 100), budget("z", 0)], call(1, 5))]);
        assert!(matches!(answers[0], Err(LedgerError::Exhausted { ref budget, spent: 0, limit: 0 }) if budget == "z"));
        assert_eq!(held[&("a".to_owned(), 0)], 0);
    }

    #[test]
    fn an_audited_claim_counts_past_its_limit_and_says_so() {
        let mut held = BTreeMap::from([(("b".to_owned(), 0), 100)]);
        let audited = Claim::budget("b".into(), 0, 100, true);
        let r = take_in_order(&mut held, &[(vec![audited], call(1, 7))]).pop().unwrap().unwrap();
        assert_eq!(r.would_refuse, [Exhaustion { budget: "b".into(), spent: 100, limit: 100 }]);
        assert_eq!(held[&("b".to_owned(), 0)], 107);
    }

    #[test]
    fn a_claim_may_take_its_own_amount_and_no_claims_take_nothing() {
        let mut held = BTreeMap::new();
        let rate = Claim { amount: Some(1), ..budget("rate:requests:x", 2) };
        let answers = take_in_order(
            &mut held,
            &[(vec![rate.clone()], call(1, 500)), (vec![rate.clone()], call(2, 500)), (vec![rate], call(3, 500)), (vec![], call(4, 9))],
        );
        assert!(answers[0].is_ok() && answers[1].is_ok() && answers[2].is_err());
        assert!(!answers[3].as_ref().unwrap().registered);
        assert_eq!(held[&("rate:requests:x".to_owned(), 0)], 2);
    }
}
