//! Per-agent gateway keys (DESIGN §3.4): minted by the operator into a Secret the agent owns;
//! only a prefix and a SHA-256 hash are kept in the agent's status, which is what the gateway
//! checks a key against. A key is rotated when the agent's rotation annotation changes.

use sha2::{Digest, Sha256};

/// The Secret key holding an agent's gateway key.
pub const SECRET_KEY: &str = "api-key";
/// Set (to any new value, e.g. a timestamp) on a `ManagedAgent` to mint it a new key.
pub const ROTATE_ANNOTATION: &str = "tollgate.dev/rotate-key";
/// On the key's Secret: the rotation value the key was minted for.
pub const MINTED_FOR_ANNOTATION: &str = "tollgate.dev/minted-for";
const PREFIX: &str = "tgk-";

/// The Secret holding `agent`'s key.
pub fn secret_name(agent: &str) -> String {
    let name = format!("tollgate-key-{agent}");
    name.chars().take(253).collect()
}

/// A key from 32 random bytes.
pub fn new_key(random: &[u8; 32]) -> String {
    format!("{PREFIX}{}", hex::encode(random))
}

/// `sha256:` of the key, as status keeps it.
pub fn hash(key: &str) -> String {
    crate::sha256_text::sha256_text(&Sha256::digest(key.as_bytes()))
}

/// What status shows of a key: enough to tell keys apart in logs, not to use one.
pub fn prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 8).collect()
}

/// Whether the agent needs a new key: none yet, or a rotation asked for since it was minted.
pub fn must_mint(existing_key: Option<&str>, minted_for: Option<&str>, rotation: Option<&str>) -> bool {
    match existing_key {
        None => true,
        Some(k) if !k.starts_with(PREFIX) || k.len() != PREFIX.len() + 64 => true,
        Some(_) => rotation.is_some() && rotation != minted_for,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_and_show_only_a_prefix() {
        let key = new_key(&[7u8; 32]);
        assert!(key.starts_with("tgk-0707"));
        assert_eq!(key.len(), 68);
        assert_eq!(prefix(&key), "tgk-07070707");
        let h = hash(&key);
        assert!(h.starts_with("sha256:") && h.len() == 71);
        assert_ne!(hash(&new_key(&[8u8; 32])), h);
    }

    #[test]
    fn a_key_is_minted_once_and_again_on_rotation() {
        let key = new_key(&[1u8; 32]);
        assert!(must_mint(None, None, None));
        assert!(!must_mint(Some(&key), None, None));
        assert!(must_mint(Some(&key), None, Some("2026-12-01")));
        assert!(!must_mint(Some(&key), Some("2026-12-01"), Some("2026-12-01")));
        assert!(must_mint(Some(&key), Some("2026-12-01"), Some("2026-12-02")));
        // A key someone put there by hand is not one the operator minted.
        assert!(must_mint(Some("hunter2"), None, None));
    }
}
