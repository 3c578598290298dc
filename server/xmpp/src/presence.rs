//! One account's presence in both protocols (RFC 6121 presence <-> Matrix `m.presence`).
//!
//! - XMPP -> Matrix: whenever an account's XMPP sessions change availability, its Matrix
//!   presence follows: `online` while a session is available with no `<show/>` (or `chat`),
//!   `unavailable` while all its available sessions are away, xa or dnd, `offline` when none
//!   is; the status message is that of the available session of highest priority. While a
//!   session is available the presence does not expire as a quiet Matrix client's does.
//! - Matrix -> XMPP: an account with no available XMPP session shows its Matrix presence to its
//!   XMPP watchers (roster contacts with a `from` or `both` subscription), from its bare JID:
//!   `online` is available, `unavailable` is `<show>away</show>`, `offline` is unavailable.
//!   When an XMPP session of the account becomes available, the bare JID goes unavailable: the
//!   watchers see the session instead.

use estuary_core::Locked;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use estuary_core::Core;
use estuary_core::ephemeral::PresenceState;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::presence::{Presence, Show, Type as PresenceType};

use crate::c2s::C2s;

/// The accounts whose Matrix presence XMPP watchers may currently see as available.
#[derive(Default)]
pub(crate) struct Shown(Mutex<HashSet<String>>);

impl Shown {
    /// Start following Matrix presence for XMPP watchers.
    pub(crate) fn start(core: &Arc<Core>, c2s: Weak<C2s>) -> Shown {
        tokio::spawn(run(core.clone(), c2s));
        Shown::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.locked()
    }
}

/// The Matrix presence of an account's XMPP sessions, as they are now.
fn of_sessions(sessions: &[(Jid, Element)]) -> (&'static str, Option<String>) {
    let mut by_priority: Vec<&Element> = sessions.iter().map(|(_, p)| p).collect();
    by_priority.sort_by_key(|p| std::cmp::Reverse(crate::c2s::priority(p)));
    let parsed: Vec<Presence> = by_priority
        .into_iter()
        .filter_map(|p| Presence::try_from(p.clone()).ok())
        .collect();
    let Some(first) = parsed.first() else {
        return ("offline", None);
    };
    let active = parsed.iter().any(|p| matches!(p.show, None | Some(Show::Chat)));
    let status = first.statuses.values().next().cloned().filter(|s| !s.is_empty());
    (if active { "online" } else { "unavailable" }, status)
}

/// An account's XMPP sessions changed availability (`full` sent broadcast presence or went
/// away): its Matrix presence follows, and a Matrix presence XMPP watchers saw gives way.
pub(crate) async fn sessions_changed(c2s: &C2s, full: &FullJid) {
    let Some(node) = full.node() else { return };
    let bare = full.to_bare();
    let sessions = c2s.router.available_presences(&bare);
    let (state, status) = of_sessions(&sessions);
    let user = c2s.core.matrix_user_id(node.as_str());
    c2s.core.presence.set_held(&user, state, status, !sessions.is_empty());
    if !sessions.is_empty() && c2s.matrix_presence.lock().remove(node.as_str()) {
        let mut gone = Presence::new(PresenceType::Unavailable);
        gone.from = Some(bare.clone().into());
        to_watchers(c2s, node.as_str(), &bare, gone).await;
    }
}

/// The presence an account's Matrix clients give it on XMPP, from its bare JID; None while it
/// has an available XMPP session (that one shows) or is offline.
fn matrix_stanza(state: &PresenceState) -> Option<Presence> {
    let show = match state.presence.as_str() {
        "online" => None,
        "unavailable" => Some(Show::Away),
        _ => return None,
    };
    let mut p = Presence::new(PresenceType::None);
    p.show = show;
    if let Some(s) = state.status_msg.as_deref().filter(|s| !s.is_empty()) {
        p.set_status("", s);
    }
    Some(p)
}

/// An available presence of `contact` (a local account) from its Matrix clients, for a watcher
/// that probes it (initial presence, or a subscription just approved).
pub(crate) fn probe(c2s: &C2s, contact: &BareJid) -> Option<Presence> {
    let node = crate::local_account(contact.as_str(), &c2s.domain)?;
    if !c2s.router.available_presences(contact).is_empty() {
        return None;
    }
    let state = c2s.core.presence.get(&c2s.core.matrix_user_id(node))?;
    let mut p = matrix_stanza(&state)?;
    c2s.matrix_presence.lock().insert(node.to_owned());
    p.from = Some(contact.clone().into());
    Some(p)
}

/// Send `presence` (from the account's bare JID) to its watchers.
async fn to_watchers(c2s: &C2s, localpart: &str, bare: &BareJid, presence: Presence) {
    let items = c2s.core.store.roster(localpart).await.unwrap_or_default();
    crate::roster::to_watchers(c2s, &bare.clone().into(), &items, &presence).await;
}

/// A Matrix presence change of a local account, for its XMPP watchers.
async fn matrix_changed(c2s: &C2s, localpart: &str, state: &PresenceState) {
    let Ok(bare) = BareJid::new(&crate::bare_jid(localpart, &c2s.domain)) else {
        return;
    };
    if !c2s.router.available_presences(&bare).is_empty() {
        // Its XMPP sessions show (and they made this change, if they are the last to set it).
        return;
    }
    let stanza = match matrix_stanza(state) {
        Some(p) => {
            c2s.matrix_presence.lock().insert(localpart.to_owned());
            p
        }
        None if c2s.matrix_presence.lock().remove(localpart) => Presence::new(PresenceType::Unavailable),
        None => return,
    };
    let mut stanza = stanza;
    stanza.from = Some(bare.clone().into());
    to_watchers(c2s, localpart, &bare, stanza).await;
}

/// Follow the presence stream and show Matrix presence changes to XMPP watchers, until the
/// server stops.
async fn run(core: Arc<Core>, c2s: Weak<C2s>) {
    let mut positions = core.streams.subscribe();
    let mut seen = core.streams.current().presence;
    loop {
        if positions.changed().await.is_err() {
            return;
        }
        let now = core.streams.current().presence;
        if now <= seen {
            continue;
        }
        let Some(c2s) = c2s.upgrade() else {
            seen = now;
            continue;
        };
        if c2s.router.is_empty() {
            // No XMPP session to tell (one that logs in probes what it needs).
            seen = now;
            continue;
        }
        for (user, state) in core.presence.all_changed_since(seen) {
            if let Some(localpart) = core.local_localpart(&user) {
                matrix_changed(&c2s, localpart, &state).await;
            }
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(xml: &str) -> (Jid, Element) {
        (Jid::new("a@x/r").unwrap(), xml.parse().unwrap())
    }

    #[test]
    fn sessions_make_one_matrix_presence() {
        assert_eq!(of_sessions(&[]), ("offline", None));
        let away = session("<presence xmlns='jabber:client'><show>away</show><status>lunch</status></presence>");
        assert_eq!(
            of_sessions(std::slice::from_ref(&away)),
            ("unavailable", Some("lunch".into()))
        );
        let here = session("<presence xmlns='jabber:client'><priority>5</priority><status>here</status></presence>");
        assert_eq!(of_sessions(&[away, here]), ("online", Some("here".into())));
    }

    #[test]
    fn matrix_presence_as_xmpp() {
        let state = |p: &str| PresenceState {
            presence: p.into(),
            status_msg: Some("hi".into()),
            last_active_ms: 0,
            changed_at: 1,
        };
        let online = matrix_stanza(&state("online")).unwrap();
        assert_eq!(
            (online.show, online.statuses.get("").cloned()),
            (None, Some("hi".into()))
        );
        assert_eq!(matrix_stanza(&state("unavailable")).unwrap().show, Some(Show::Away));
        assert!(matrix_stanza(&state("offline")).is_none());
    }
}
