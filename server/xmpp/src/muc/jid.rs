//! Room JIDs (XEP-0045 on `xmpp.muc_domain`) and the Matrix rooms they name.
//!
//! - `name@muc_domain` is the room with alias `#name:server_name`.
//! - Any room can also be reached as `!<id>@muc_domain`, from its room ID `!<id>:server_name`
//!   (or `!<id>:<other server>` for a room of another server). JID localparts are compared
//!   case-insensitively (nodeprep folds them to lower case) while room IDs are case-sensitive,
//!   so the ID is written case-preserving: a capital `X` becomes `^x` and `^` becomes `^^` (the
//!   marker matridge uses), and the characters a localpart may not hold are escaped as
//!   XEP-0106 says (`:` is `\3a`).
//!
//! A room is shown under its alias form when its canonical alias is local, all lower case and
//! needs no escaping (so that the JID reads back as exactly that alias); otherwise under the
//! ID form.

/// What a room JID's localpart names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `#<node>:server_name`.
    Alias(String),
    /// A room ID.
    RoomId(String),
}

/// Characters a JID localpart may not contain (RFC 7622 §3.3.1), with their XEP-0106 escapes;
/// the backslash too, so that escapes read back.
const ESCAPES: &[(char, &str)] = &[
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
    ('\\', "\\5c"),
];

/// The localpart for a room: its alias form when `alias` allows it, else its ID form.
pub fn node_for(room_id: &str, canonical_alias: Option<&str>, server_name: &str) -> String {
    if let Some(alias) = canonical_alias
        && let Some(local) = alias
            .strip_prefix('#')
            .and_then(|a| a.strip_suffix(server_name))
            .and_then(|a| a.strip_suffix(':'))
        && alias_node_ok(local)
    {
        return local.to_owned();
    }
    let id = room_id.strip_prefix('!').unwrap_or(room_id);
    let id = id
        .strip_suffix(server_name)
        .and_then(|i| i.strip_suffix(':'))
        .unwrap_or(id);
    let mut out = String::with_capacity(id.len() + 8);
    out.push('!');
    for c in id.chars() {
        if c.is_ascii_uppercase() {
            out.push('^');
            out.push(c.to_ascii_lowercase());
        } else if c == '^' {
            out.push_str("^^");
        } else if let Some((_, esc)) = ESCAPES.iter().find(|(e, _)| *e == c) {
            out.push_str(esc);
        } else {
            out.push(c);
        }
    }
    out
}

/// An alias localpart usable as it is: what nodeprep leaves unchanged and XEP-0106 would not
/// escape, and not starting with the ID form's `!`.
fn alias_node_ok(local: &str) -> bool {
    !local.is_empty()
        && !local.starts_with('!')
        && local.len() <= 1023
        && local.chars().all(|c| {
            !c.is_uppercase() && !c.is_whitespace() && !c.is_control() && !ESCAPES.iter().any(|(e, _)| *e == c)
        })
}

/// The room a localpart names; None for a malformed ID form.
pub fn target(node: &str, server_name: &str) -> Option<Target> {
    let Some(id) = node.strip_prefix('!') else {
        return Some(Target::Alias(format!("#{node}:{server_name}")));
    };
    if id.is_empty() || id.starts_with(':') || id.starts_with("\\3a") {
        return None;
    }
    let mut out = String::with_capacity(id.len() + server_name.len() + 2);
    out.push('!');
    let mut chars = id.chars();
    while let Some(c) = chars.next() {
        match c {
            '^' => match chars.next()? {
                '^' => out.push('^'),
                l if l.is_ascii_lowercase() => out.push(l.to_ascii_uppercase()),
                _ => return None,
            },
            '\\' => {
                let code: String = chars.by_ref().take(2).collect();
                let (c, _) = ESCAPES.iter().find(|(_, e)| e[1..] == code)?;
                out.push(*c);
            }
            c if c.is_ascii_uppercase() => return None,
            c => out.push(c),
        }
    }
    if !out.contains(':') {
        out.push(':');
        out.push_str(server_name);
    }
    ruma::RoomId::parse(&out).ok()?;
    Some(Target::RoomId(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_form_when_it_reads_back() {
        assert_eq!(
            node_for("!AbC:example.org", Some("#lobby:example.org"), "example.org"),
            "lobby"
        );
        assert_eq!(
            target("lobby", "example.org"),
            Some(Target::Alias("#lobby:example.org".into()))
        );
        // Capitals, a remote alias, or characters a localpart can't hold: the ID form.
        for alias in [
            "#Lobby:example.org",
            "#lobby:other.org",
            "#a b:example.org",
            "#!x:example.org",
        ] {
            assert_eq!(
                node_for("!AbC:example.org", Some(alias), "example.org"),
                "!^ab^c",
                "{alias}"
            );
        }
    }

    #[test]
    fn id_form_is_case_preserving_and_reversible() {
        for id in [
            "!AbC:example.org",
            "!a^B^^c:example.org",
            "!xyz:other.org:8448",
            "!Q:Other.org",
        ] {
            let node = node_for(id, None, "example.org");
            assert_eq!(node, node.to_lowercase(), "{node}: nodeprep would change it");
            assert!(!node.contains(':') && !node.contains('@'), "{node}");
            assert_eq!(
                target(&node, "example.org"),
                Some(Target::RoomId(id.to_owned())),
                "{node}"
            );
        }
        assert_eq!(node_for("!xyz:other.org", None, "example.org"), "!xyz\\3aother.org");
    }

    #[test]
    fn malformed_id_forms_name_nothing() {
        for node in ["!^", "!^1", "!a\\zz", "!a\\3", "!", "!\\3aexample.org"] {
            assert_eq!(target(node, "example.org"), None, "{node}");
        }
    }
}
