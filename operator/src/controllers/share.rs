//! A namespace's share of a controller's reconciles at once. Where a reconcile waits on
//! something a namespace's editor controls (an MCP server that never answers), one namespace
//! must not hold every slot: others' objects would wait until its calls time out.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many reconciles each namespace may run at once.
pub struct Shares {
    most: usize,
    running: Mutex<HashMap<String, usize>>,
}

/// One running reconcile of a namespace; its slot is free again when this is dropped.
pub struct Slot<'a> {
    shares: &'a Shares,
    namespace: String,
}

impl Shares {
    pub fn new(most: usize) -> Shares {
        Shares { most, running: Mutex::new(HashMap::new()) }
    }

    /// A slot for `namespace`, unless it already runs its share.
    pub fn take(&self, namespace: &str) -> Option<Slot<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let now = running.entry(namespace.to_owned()).or_default();
        if *now >= self.most {
            return None;
        }
        *now += 1;
        Some(Slot { shares: self, namespace: namespace.to_owned() })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut running = self.shares.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(now) = running.get_mut(&self.namespace) {
            *now = now.saturating_sub(1);
            if *now == 0 {
                // Namespaces come and go; their counts must not stay behind.
                running.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_runs_its_share_and_no_more_while_others_run_theirs() {
        let shares = Shares::new(2);
        let (a1, a2) = (shares.take("a"), shares.take("a"));
        assert!(a1.is_some() && a2.is_some());
        assert!(shares.take("a").is_none(), "a third at once is over the share");
        let b = shares.take("b");
        assert!(b.is_some(), "another namespace is not held up");
        drop(a1);
        let a3 = shares.take("a");
        assert!(a3.is_some(), "a slot given back is taken again");
        drop((a2, a3, b));
        assert!(shares.running.lock().map(|r| r.is_empty()).unwrap_or(false), "no counts stay behind");
    }
}
