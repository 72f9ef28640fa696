//! The audit store's hash chain (DESIGN §3.5): every stored record's hash covers the hash before
//! it and the record's canonical JSON, so changing, removing or reordering any stored record
//! breaks every hash after it. Anyone with an export can check it, offline.

use crate::mcp::digest::canonical_json;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One stored record, as exported (one JSON line each).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub seq: i64,
    pub prev: String,
    pub hash: String,
    pub record: Value,
}

/// The hash of a record stored after `prev`.
pub fn hash(prev: &str, seq: i64, record: &Value) -> String {
    hash_text(prev, seq, &canonical_json(record))
}

/// [`hash`] of a record already written out in canonical form (`canonical_json`).
pub fn hash_text(prev: &str, seq: i64, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(itoa::Buffer::new().format(seq).as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    crate::sha256_text::sha256_text(&h.finalize())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("record {seq}: its hash does not match its content (it was changed)")]
    Altered { seq: i64 },
    #[error("record {seq}: it does not follow record {expected_prev_seq} (a record was removed or reordered before it)")]
    Unlinked { seq: i64, expected_prev_seq: i64 },
    #[error("record {seq}: sequence numbers must rise by one from {expected} (a record is missing)")]
    Gap { seq: i64, expected: i64 },
}

/// Checks a chain from its start; the number of records when whole, else where it breaks.
pub fn verify<'a>(links: impl IntoIterator<Item = &'a Link>) -> Result<usize, Break> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for (expected, l) in (1..).zip(links) {
        if l.seq != expected {
            return Err(Break::Gap { seq: l.seq, expected });
        }
        if l.prev != prev {
            return Err(Break::Unlinked { seq: l.seq, expected_prev_seq: l.seq - 1 });
        }
        if hash(&l.prev, l.seq, &l.record) != l.hash {
            return Err(Break::Altered { seq: l.seq });
        }
        prev = l.hash.clone();
        count += 1;
    }
    Ok(count)
}

/// Links `records` after `(last_seq, last_hash)`.
pub fn chain(last_seq: i64, last_hash: &str, records: Vec<Value>) -> Vec<Link> {
    let mut prev = last_hash.to_owned();
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        let seq = last_seq + 1 + i as i64;
        let h = hash(&prev, seq, &record);
        out.push(Link { seq, prev: std::mem::replace(&mut prev, h.clone()), hash: h, record });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn three() -> Vec<Link> {
        chain(0, GENESIS, vec![json!({"tool": "a"}), json!({"tool": "b", "n": 1}), json!({"tool": "c"})])
    }

    #[test]
    fn a_whole_chain_verifies_and_key_order_does_not_matter() {
        let links = three();
        assert_eq!(verify(&links), Ok(3));
        let mut reordered_keys = links.clone();
        reordered_keys[1].record = serde_json::from_str(r#"{"n": 1, "tool": "b"}"#).unwrap();
        assert_eq!(verify(&reordered_keys), Ok(3));
        // Appending continues the chain.
        let more = chain(3, &links[2].hash, vec![json!({"tool": "d"})]);
        assert_eq!(verify(links.iter().chain(&more)), Ok(4));
    }

    #[test]
    fn any_change_is_named() {
        let mut altered = three();
        altered[1].record["tool"] = json!("z");
        assert_eq!(verify(&altered), Err(Break::Altered { seq: 2 }));
        let mut removed = three();
        removed.remove(1);
        assert_eq!(verify(&removed), Err(Break::Gap { seq: 3, expected: 2 }));
        let mut renumbered = three();
        renumbered.remove(1);
        renumbered[1].seq = 2;
        assert_eq!(verify(&renumbered), Err(Break::Unlinked { seq: 2, expected_prev_seq: 1 }));
        let mut rehashed = three();
        rehashed[1].record["tool"] = json!("z");
        rehashed[1].hash = hash(&rehashed[1].prev, 2, &rehashed[1].record);
        assert_eq!(verify(&rehashed), Err(Break::Unlinked { seq: 3, expected_prev_seq: 2 }), "rehashing one record breaks the next");
    }
}
