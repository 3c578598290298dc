//! The rule for account names: one localpart must be a valid Matrix user ID localpart and a
//! valid XMPP node at once, so `alice` is both `@alice:example.org` and `alice@example.org`.

/// Why a localpart was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalpartError {
    #[error("user name must not be empty")]
    Empty,
    #[error("user name {0:?} has a character that is not allowed: use a-z, 0-9 and . _ = + -")]
    InvalidCharacter(String),
    #[error("user name {0:?} is too long: the Matrix ID @{0}:{1} would exceed 255 bytes")]
    TooLong(String, String),
    #[error("user names starting with '_' are reserved for bridges and appservices")]
    Reserved,
}

/// Matrix (spec appendix "User Identifiers") allows `a-z 0-9 . _ = - / +`; XMPP nodeprep
/// (RFC 7622 §3.3) forbids `/`. The intersection, lower case only: `[a-z0-9._=+-]`.
/// A leading `_` is reserved for appservice/bridge users, as Synapse does.
/// The whole Matrix ID `@localpart:server_name` is limited to 255 bytes.
pub fn validate(localpart: &str, server_name: &str) -> Result<(), LocalpartError> {
    if localpart.is_empty() {
        return Err(LocalpartError::Empty);
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=+-".contains(c);
    if !localpart.chars().all(allowed) {
        return Err(LocalpartError::InvalidCharacter(localpart.to_owned()));
    }
    if localpart.starts_with('_') {
        return Err(LocalpartError::Reserved);
    }
    if 1 + localpart.len() + 1 + server_name.len() > 255 {
        return Err(LocalpartError::TooLong(localpart.to_owned(), server_name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_common_subset() {
        for ok in ["alice", "a", "bob.smith", "x_y", "a=b", "c+d", "e-f", "007"] {
            validate(ok, "example.org").unwrap();
        }
    }

    #[test]
    fn refuses_what_either_protocol_refuses() {
        for bad in ["Alice", "a/b", "a@b", "a:b", "a b", "é", "a&b", "a'b", "a\"b", "<x>"] {
            assert!(
                matches!(validate(bad, "example.org"), Err(LocalpartError::InvalidCharacter(_))),
                "{bad}"
            );
        }
        assert_eq!(validate("", "e"), Err(LocalpartError::Empty));
        assert_eq!(validate("_bridge", "e"), Err(LocalpartError::Reserved));
        let long = "a".repeat(250);
        assert!(matches!(
            validate(&long, "example.org"),
            Err(LocalpartError::TooLong(..))
        ));
    }
}
