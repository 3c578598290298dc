//! Random identifiers and secrets from the OS generator.

use crate::CoreError;

pub const BASE62: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `len` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
pub fn string(len: usize, alphabet: &[u8]) -> Result<String, CoreError> {
    let n = alphabet.len();
    assert!((1..=256).contains(&n), "alphabet of 1 to 256 symbols");
    // Largest multiple of n that fits in a byte; bytes at or above it are redrawn.
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| CoreError::Internal(format!("no randomness available: {e}")))?;
        for b in buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % n]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lengths_and_alphabet() {
        let s = super::string(40, super::BASE62).unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| super::BASE62.contains(&b)));
        assert_ne!(s, super::string(40, super::BASE62).unwrap());
        assert!(
            super::string(10, super::UPPER)
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_uppercase())
        );
    }
}
