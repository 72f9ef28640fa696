//! Signed checkpoints of the audit chain (DESIGN §3.5). The chain's hashes show a changed,
//! removed or reordered record, but whoever can write the database can also cut the tail off
//! (and reset the head) or recompute every hash. So the gateway signs the chain's head now and
//! then with an Ed25519 key only it holds, and records each checkpoint where the database's
//! writer cannot rewrite it (a ConfigMap the gateway may create and nobody it shares the
//! database with may change). Verification then checks the chain against every checkpoint: a
//! record a checkpoint covers must still be there, with the hash it had.

use crate::audit::chain::{self, Break, Link};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// A signed statement: the chain had `hash` at `seq` at `time`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub time: String,
    /// The signer's public key (base64), to tell keys apart; trust comes from elsewhere.
    pub key: String,
    /// Ed25519 over [`message`], base64.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the signing key is not an Ed25519 key in PKCS#8: {0}")]
    BadKey(String),
    #[error("checkpoint at record {seq} ({time}): its signature does not verify under the trusted key")]
    BadSignature { seq: i64, time: String },
    #[error("checkpoint at record {seq} ({time}) was signed by another key ({key})")]
    OtherKey { seq: i64, time: String, key: String },
    #[error("the chain ends at record {end}, but a checkpoint signed at {time} saw record {seq}: records were removed from the end")]
    Truncated { end: i64, seq: i64, time: String },
    #[error("record {seq} is not what the checkpoint signed at {time} saw (its hash differs): the chain was rewritten")]
    Rewritten { seq: i64, time: String },
    #[error("{0}")]
    Chain(#[from] Break),
}

/// What is signed: a domain, then the checkpoint's fields, so a signature means nothing else.
pub fn message(seq: i64, hash: &str, time: &str) -> Vec<u8> {
    format!("tollgate-audit-checkpoint/v1\n{seq}\n{hash}\n{time}").into_bytes()
}

/// A new signing key (PKCS#8), from the operating system's randomness.
pub fn generate_key() -> Result<Vec<u8>, CheckpointError> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng).map(|d| d.as_ref().to_vec()).map_err(|e| CheckpointError::BadKey(e.to_string()))
}

/// The public key (base64) of a PKCS#8 signing key.
pub fn public_key(pkcs8: &[u8]) -> Result<String, CheckpointError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| CheckpointError::BadKey(e.to_string()))?;
    Ok(B64.encode(pair.public_key().as_ref()))
}

/// A short, name-safe id of a public key (base64): the first 16 hex digits of its SHA-256.
pub fn key_id(public: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(public.as_bytes()))[..16].to_owned()
}

/// Signs the chain's head.
pub fn sign(pkcs8: &[u8], seq: i64, hash: &str, time: &str) -> Result<Checkpoint, CheckpointError> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| CheckpointError::BadKey(e.to_string()))?;
    let signature = B64.encode(pair.sign(&message(seq, hash, time)).as_ref());
    Ok(Checkpoint { seq, hash: hash.to_owned(), time: time.to_owned(), key: B64.encode(pair.public_key().as_ref()), signature })
}

fn signed_by(c: &Checkpoint, trusted: &str) -> Result<(), CheckpointError> {
    if c.key != trusted {
        return Err(CheckpointError::OtherKey { seq: c.seq, time: c.time.clone(), key: c.key.clone() });
    }
    let bad = || CheckpointError::BadSignature { seq: c.seq, time: c.time.clone() };
    let key = B64.decode(trusted).map_err(|_| bad())?;
    let signature = B64.decode(&c.signature).map_err(|_| bad())?;
    UnparsedPublicKey::new(&ED25519, key).verify(&message(c.seq, &c.hash, &c.time), &signature).map_err(|_| bad())
}

/// What a verification found whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    pub checkpoints: usize,
}

/// Checks `links` (the whole chain, in order) as a chain and against every checkpoint signed by
/// `trusted` (a public key, base64): a checkpoint's record must be there with the hash signed.
pub fn verify(links: &[Link], checkpoints: &[Checkpoint], trusted: &str) -> Result<Verified, CheckpointError> {
    for c in checkpoints {
        signed_by(c, trusted)?;
    }
    let records = chain::verify(links)?;
    let end = links.last().map_or(0, |l| l.seq);
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    for c in sorted {
        let Some(link) = usize::try_from(c.seq - 1).ok().and_then(|i| links.get(i)) else {
            return Err(CheckpointError::Truncated { end, seq: c.seq, time: c.time.clone() });
        };
        if link.hash != c.hash {
            return Err(CheckpointError::Rewritten { seq: c.seq, time: c.time.clone() });
        }
    }
    Ok(Verified { records, checkpoints: checkpoints.len() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::chain::{GENESIS, chain};
    use serde_json::json;

    fn five() -> Vec<Link> {
        chain(0, GENESIS, (1..=5).map(|i| json!({"tool": format!("t{i}")})).collect())
    }

    #[test]
    fn truncation_rewriting_and_reordering_are_each_named() {
        let key = generate_key().unwrap();
        let trusted = public_key(&key).unwrap();
        let links = five();
        let at3 = sign(&key, 3, &links[2].hash, "2026-12-02T00:00:00Z").unwrap();
        let at5 = sign(&key, 5, &links[4].hash, "2026-12-02T00:01:00Z").unwrap();
        let cps = vec![at5.clone(), at3.clone()];
        assert_eq!(verify(&links, &cps, &trusted), Ok(Verified { records: 5, checkpoints: 2 }));
        // The tail deleted (and the head reset): the last checkpoint saw more.
        assert!(matches!(verify(&links[..4], &cps, &trusted), Err(CheckpointError::Truncated { end: 4, seq: 5, .. })));
        // The whole chain recomputed after a change: it verifies as a chain, not against a checkpoint.
        let mut records: Vec<_> = links.iter().map(|l| l.record.clone()).collect();
        records[1]["tool"] = json!("rewritten");
        let rewritten = chain(0, GENESIS, records);
        assert!(matches!(verify(&rewritten, &cps, &trusted), Err(CheckpointError::Rewritten { seq: 3, .. })));
        // Two rows swapped: the chain itself says where.
        let mut reordered = links.clone();
        reordered.swap(1, 2);
        assert!(matches!(verify(&reordered, &cps, &trusted), Err(CheckpointError::Chain(_))));
        // A checkpoint forged or altered, or signed by another key.
        let mut forged = at5.clone();
        forged.seq = 4;
        assert!(matches!(verify(&links, &[forged], &trusted), Err(CheckpointError::BadSignature { seq: 4, .. })));
        let other = sign(&generate_key().unwrap(), 5, &links[4].hash, "t").unwrap();
        assert!(matches!(verify(&links, &[other], &trusted), Err(CheckpointError::OtherKey { .. })));
        assert!(verify(&links, &[at3], &trusted).unwrap().checkpoints == 1);
    }
}
