//! XMPP over `estuary-core`: client-to-server streams (`c2s`, over TCP/TLS and WebSocket) with
//! SASL (`scram`), the IM and PEP services, and group chat on Matrix rooms (`muc`); components
//! and s2s follow. Plus the account <-> JID mapping.

pub mod avatar;
pub mod blocking;
pub mod c2s;
pub mod caps;
pub mod carbons;
pub mod direct;
mod limit;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
mod presence;
pub mod private;
pub mod register;
pub mod roster;
pub mod scram;
mod session;
mod stream;
mod tls;
pub mod vcard;
pub mod websocket;
mod wire;

/// The bare JID of a local account: `localpart@domain`. Localparts are validated by
/// `estuary_core::localpart` to be valid XMPP nodes already (RFC 7622 §3.3), so no escaping.
pub fn bare_jid(localpart: &str, domain: &str) -> String {
    format!("{localpart}@{domain}")
}

/// The localpart of a bare or full JID on `domain`, if it names a local account.
/// RFC 7622 §3.2: the domainpart compares case-insensitively.
pub fn local_account<'a>(jid: &'a str, domain: &str) -> Option<&'a str> {
    let bare = jid.split_once('/').map_or(jid, |(b, _)| b);
    let (node, host) = bare.split_once('@')?;
    (!node.is_empty() && host.eq_ignore_ascii_case(domain)).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways() {
        assert_eq!(bare_jid("alice", "example.org"), "alice@example.org");
        assert_eq!(local_account("alice@example.org/phone", "example.org"), Some("alice"));
        assert_eq!(local_account("alice@EXAMPLE.org", "example.org"), Some("alice"));
        assert_eq!(local_account("alice@other.org", "example.org"), None);
        assert_eq!(local_account("example.org", "example.org"), None);
        assert_eq!(local_account("@example.org", "example.org"), None);
    }
}
