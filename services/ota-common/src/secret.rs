//! Comparing secrets (shared passwords, gateway and metrics tokens) without
//! letting the time taken tell an attacker how much of a guess was right.

use sha2::{Digest, Sha256};

/// Equal or not, in time that depends on neither the first differing byte
/// nor the lengths: the digests are compared, all 32 bytes of them.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    digests_eq(&Sha256::digest(a).into(), &Sha256::digest(b).into())
}

/// Two SHA-256 digests equal, without an early exit (for a secret kept as
/// its digest).
pub fn digests_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
