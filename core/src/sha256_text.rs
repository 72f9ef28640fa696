//! A SHA-256 digest as every record, key and chain link writes it: `sha256:` and 64 lowercase
//! hex digits. Made on every call's path (the agent's key looked up, the arguments digested, an
//! audit link hashed): the `hex` crate's encoding builds its string a `char` at a time, several
//! times this one's cost, and `format!` allocated on top.

use sha2::Sha256;
use sha2::digest::Output;

const PREFIX: &str = "sha256:";
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `sha256:<hex>` of a finished digest.
pub fn sha256_text(digest: &Output<Sha256>) -> String {
    let mut out = String::with_capacity(PREFIX.len() + 2 * digest.len());
    out.push_str(PREFIX);
    for b in digest.iter() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn writes_what_the_hex_crate_writes() {
        for input in [&b""[..], b"abc", &[0u8, 255, 16, 15, 128][..]] {
            let digest = Sha256::digest(input);
            assert_eq!(sha256_text(&digest), format!("sha256:{}", hex::encode(digest)));
        }
        assert_eq!(sha256_text(&Sha256::digest(b"abc")), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
