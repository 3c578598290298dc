//! RFC 6121: the roster (§2: get, set, remove, versioning, pushes), presence subscriptions
//! between local accounts (§3: subscribe, subscribed, unsubscribe, unsubscribed, with the
//! none/to/from/both states and pending requests), and presence broadcast (§4: initial presence,
//! probes of contacts, updates, unavailable on disconnect, directed presence).
//! Contacts on other servers need s2s, which is not there yet: such requests are refused.

use estuary_core::RosterItem;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::roster::{Ask, Group, Item, Roster, Subscription};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::c2s::{C2s, error_reply};

pub const NS: &str = "jabber:iq:roster";

fn groups_of(item: &RosterItem) -> Vec<String> {
    serde_json::from_str(&item.groups).unwrap_or_default()
}

fn subscription_of(s: &str) -> Subscription {
    match s {
        "to" => Subscription::To,
        "from" => Subscription::From,
        "both" => Subscription::Both,
        _ => Subscription::None,
    }
}

fn item_element(item: &RosterItem) -> Option<Item> {
    Some(Item {
        jid: BareJid::new(&item.contact).ok()?,
        name: item.name.clone(),
        subscription: subscription_of(&item.subscription),
        ask: if item.ask { Ask::Subscribe } else { Ask::None },
        groups: groups_of(item).into_iter().map(Group).collect(),
        approved: None,
    })
}

fn removed_element(contact: &str) -> Option<Item> {
    Some(Item {
        jid: BareJid::new(contact).ok()?,
        name: None,
        subscription: Subscription::Remove,
        ask: Ask::None,
        groups: vec![],
        approved: None,
    })
}

/// Send a roster push (RFC 6121 §2.1.6) for one item to every session of the user.
fn push(c2s: &C2s, localpart: &str, version: i64, item: Option<Item>) {
    let Some(item) = item else { return };
    let bare = crate::bare_jid(localpart, &c2s.domain);
    let query: Element = Roster {
        ver: Some(version.to_string()),
        items: vec![item],
    }
    .into();
    for full in c2s.router.resources(&bare) {
        let iq = Iq::Set {
            from: None,
            to: Some(full.clone()),
            id: crate::c2s::new_id(),
            payload: query.clone(),
        };
        c2s.router.deliver(&full, &iq.into());
    }
}

async fn save(c2s: &C2s, localpart: &str, item: RosterItem) {
    if let Ok(v) = c2s.core.store.put_roster_item(localpart, &item).await {
        push(c2s, localpart, v, item_element(&item));
    }
}

fn blank(contact: &str) -> RosterItem {
    RosterItem {
        contact: contact.to_owned(),
        name: None,
        subscription: "none".into(),
        ask: false,
        pending_in: false,
        groups: "[]".into(),
    }
}

/// Roster get and set (`jabber:iq:roster`). None if the iq is not a roster request.
pub async fn handle_iq(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let me: Jid = full.clone().into();
    let (id, to, payload, set) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, false),
        Iq::Set { id, to, payload, .. } => (id, to, payload, true),
        _ => return None,
    };
    if !payload.is("query", NS) {
        return None;
    }
    let error = |type_, condition| Some(error_reply(id.clone(), to.clone(), Some(me.clone()), type_, condition));
    // RFC 6121 §2.1.5: only the user's own roster, addressed to the bare JID or nothing.
    if to
        .as_ref()
        .is_some_and(|t| t.resource().is_some() || t.to_bare() != full.to_bare())
    {
        return error(ErrorType::Auth, DefinedCondition::Forbidden);
    }
    let localpart = full.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    let store = &c2s.core.store;
    if !set {
        let Ok(version) = store.roster_version(&localpart).await else {
            return error(ErrorType::Wait, DefinedCondition::InternalServerError);
        };
        // §2.6.3: an unchanged roster is answered with an empty result.
        if payload.attr("ver") == Some(version.to_string().as_str()) {
            return Some(Iq::Result {
                from: None,
                to: Some(me),
                id: id.clone(),
                payload: None,
            });
        }
        let Ok(items) = store.roster(&localpart).await else {
            return error(ErrorType::Wait, DefinedCondition::InternalServerError);
        };
        let roster = Roster {
            ver: Some(version.to_string()),
            items: items.iter().filter_map(item_element).collect(),
        };
        return Some(Iq::Result {
            from: None,
            to: Some(me),
            id: id.clone(),
            payload: Some(roster.into()),
        });
    }
    // §2.3.3: a set carries exactly one item.
    let Ok(roster) = Roster::try_from(payload.clone()) else {
        return error(ErrorType::Modify, DefinedCondition::BadRequest);
    };
    let [item] = roster.items.as_slice() else {
        return error(ErrorType::Modify, DefinedCondition::BadRequest);
    };
    let contact = item.jid.clone();
    if contact == full.to_bare() {
        return error(ErrorType::Cancel, DefinedCondition::NotAllowed);
    }
    let contact_str = contact.to_string();
    let existing = store.roster_item(&localpart, &contact_str).await.ok().flatten();
    if item.subscription == Subscription::Remove {
        let Some(existing) = existing else {
            return error(ErrorType::Cancel, DefinedCondition::ItemNotFound);
        };
        // §2.5.2: removing cancels subscriptions both ways.
        if matches!(existing.subscription.as_str(), "to" | "both") || existing.ask {
            subscription(c2s, full, &contact, PresenceType::Unsubscribe).await;
        }
        if matches!(existing.subscription.as_str(), "from" | "both") || existing.pending_in {
            subscription(c2s, full, &contact, PresenceType::Unsubscribed).await;
        }
        if let Ok(v) = store.remove_roster_item(&localpart, &contact_str).await {
            push(c2s, &localpart, v, removed_element(&contact_str));
        }
        return Some(Iq::Result {
            from: None,
            to: Some(me),
            id: id.clone(),
            payload: None,
        });
    }
    let mut updated = existing.unwrap_or_else(|| blank(&contact_str));
    updated.name = item.name.clone().filter(|n| !n.is_empty());
    let groups: Vec<String> = item.groups.iter().map(|g| g.0.clone()).collect();
    updated.groups = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".into());
    save(c2s, &localpart, updated).await;
    Some(Iq::Result {
        from: None,
        to: Some(me),
        id: id.clone(),
        payload: None,
    })
}

/// Handle a presence stanza from a session (its `from` already stamped).
pub async fn handle_presence(c2s: &C2s, full: &FullJid, mut presence: Presence) {
    // XEP-0153: available presence carries the avatar's hash.
    if presence.type_ == PresenceType::None
        && let Some(node) = full.node()
    {
        crate::vcard::stamp_photo_hash(c2s, node.as_str(), &mut presence).await;
    }
    match (presence.type_.clone(), presence.to.clone()) {
        (
            PresenceType::Subscribe | PresenceType::Subscribed | PresenceType::Unsubscribe | PresenceType::Unsubscribed,
            Some(to),
        ) => {
            subscription(c2s, full, &to.to_bare(), presence.type_.clone()).await;
        }
        // Directed presence (§4.6) and probes to a single entity; never across a block
        // (XEP-0191 §3.5).
        (_, Some(to)) => deliver_unless_blocked(c2s, full, &to, presence).await,
        // Broadcast presence (§4.2, §4.4, §4.5); available presence also tells the client's
        // capabilities, hence which PEP nodes it wants (XEP-0115, XEP-0163).
        (PresenceType::None, None) => {
            let interests_known = crate::caps::observe(c2s, full, &presence);
            let initial = c2s.router.presence_of(full).is_none();
            broadcast(c2s, full, presence).await;
            if interests_known && initial {
                crate::pep::send_last_items(c2s, full).await;
            }
        }
        (PresenceType::Unavailable, None) => broadcast(c2s, full, presence).await,
        _ => {}
    }
}

async fn deliver_unless_blocked(c2s: &C2s, full: &FullJid, to: &Jid, presence: Presence) {
    if crate::c2s::blocked(c2s, full, to).await.is_none() {
        c2s.router.deliver(to, &presence.into());
    }
}

/// An account's roster items whose subscription lets them see its presence.
pub(crate) async fn watchers(c2s: &C2s, localpart: &str) -> Vec<RosterItem> {
    c2s.core
        .store
        .roster(localpart)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|i| matches!(i.subscription.as_str(), "from" | "both"))
        .collect()
}

/// Send `presence`, from `from` (one of the account's sessions, or its bare JID), to the
/// available sessions of each contact of `items` (the account's roster) that may see the
/// account's presence and that neither side blocked.
pub(crate) async fn to_watchers(c2s: &C2s, from: &Jid, items: &[RosterItem], presence: &Presence) {
    let watching = items
        .iter()
        .filter(|i| matches!(i.subscription.as_str(), "from" | "both"));
    for contact in watching {
        if let Ok(to) = BareJid::new(&contact.contact)
            && crate::c2s::blocked_between(c2s, from, &to.clone().into())
                .await
                .is_none()
        {
            let mut p = presence.clone();
            p.to = Some(to.clone().into());
            c2s.router.deliver_available(&to, &p.into());
        }
    }
}

async fn broadcast(c2s: &C2s, full: &FullJid, presence: Presence) {
    let localpart = full.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    let initial = presence.type_ == PresenceType::None && c2s.router.presence_of(full).is_none();
    c2s.router.set_presence(
        full,
        (presence.type_ == PresenceType::None).then(|| presence.clone().into()),
    );
    crate::presence::sessions_changed(c2s, full).await;
    // One roster read: the watchers now, and on initial presence the probes and waiting
    // requests below.
    let items = c2s.core.store.roster(&localpart).await.unwrap_or_default();
    to_watchers(c2s, &full.clone().into(), &items, &presence).await;
    // The user's other sessions see it too (§4.2.2).
    for other in c2s.router.resources(&full.to_bare().to_string()) {
        if other.resource().is_none_or(|r| r.as_str() != full.resource().as_str()) {
            let mut p = presence.clone();
            p.to = Some(other.clone());
            c2s.router.deliver(&other, &p.into());
        }
    }
    if initial && crate::c2s::priority(&presence.clone().into()) >= 0 {
        crate::offline::deliver(c2s, full).await;
    }
    if initial {
        crate::muc::pending_invitations(c2s, full).await;
    }
    if initial {
        let me: Jid = full.clone().into();
        for item in &items {
            let Ok(contact) = BareJid::new(&item.contact) else {
                continue;
            };
            // Probes (§4.3): the current presence of every contact the user may see (and has
            // not blocked, nor been blocked by).
            if matches!(item.subscription.as_str(), "to" | "both")
                && crate::c2s::blocked(c2s, full, &contact.clone().into()).await.is_none()
            {
                for (from, p) in c2s.router.available_presences(&contact) {
                    let Ok(mut p) = Presence::try_from(p) else { continue };
                    p.from = Some(from);
                    p.to = Some(me.clone());
                    c2s.router.deliver(&me, &p.into());
                }
                // An account on Matrix only shows its Matrix presence.
                if let Some(mut p) = crate::presence::probe(c2s, &contact) {
                    p.to = Some(me.clone());
                    c2s.router.deliver(&me, &p.into());
                }
            }
            // Subscription requests that waited for the user to come online (§3.1.3).
            if item.pending_in {
                let mut p = Presence::new(PresenceType::Subscribe);
                p.from = Some(contact.into());
                p.to = Some(full.to_bare().into());
                c2s.router.deliver(&me, &p.into());
            }
        }
    }
}

/// The last session of an account went away, or a session ended: unavailable to watchers.
pub async fn disconnected(c2s: &C2s, full: &FullJid) {
    if c2s.router.presence_of(full).is_some() {
        let mut gone = Presence::new(PresenceType::Unavailable);
        gone.from = Some(full.clone().into());
        broadcast(c2s, full, gone).await;
    }
}

/// RFC 6121 §3: one subscription stanza from `full`'s account about `contact`.
async fn subscription(c2s: &C2s, full: &FullJid, contact: &BareJid, kind: PresenceType) {
    let user = full.to_bare();
    let localpart = full.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    let Some(contact_lp) = crate::local_account(contact.as_str(), &c2s.domain).map(str::to_owned) else {
        // Needs s2s: tell the client instead of dropping it silently.
        let mut bounce = Presence::new(PresenceType::Error);
        bounce.from = Some(contact.clone().into());
        bounce.to = Some(full.clone().into());
        bounce.payloads.push(
            xmpp_parsers::stanza_error::StanzaError {
                type_: ErrorType::Cancel,
                by: None,
                defined_condition: DefinedCondition::RemoteServerNotFound,
                texts: Default::default(),
                other: None,
            }
            .into(),
        );
        c2s.router.deliver(&full.clone().into(), &bounce.into());
        return;
    };
    if c2s
        .core
        .accounts
        .find(&contact_lp)
        .await
        .ok()
        .flatten()
        .is_none_or(|a| !a.is_active())
    {
        return;
    }
    // Each transition reads and writes both accounts' items: one at a time, or two sessions
    // subscribing to each other at once would overwrite each other's changes.
    let _one_at_a_time = c2s.subscriptions.lock().await;
    let store = &c2s.core.store;
    let user_str = user.to_string();
    let contact_str = contact.to_string();
    let mine = store.roster_item(&localpart, &contact_str).await.ok().flatten();
    let theirs = store.roster_item(&contact_lp, &user_str).await.ok().flatten();
    let deliver = |p: Presence| {
        let mut p = p;
        p.from = Some(user.clone().into());
        p.to = Some(contact.clone().into());
        c2s.router.deliver_available(contact, &p.into());
    };
    match kind {
        PresenceType::Subscribe => {
            let mut m = mine.unwrap_or_else(|| blank(&contact_str));
            if !matches!(m.subscription.as_str(), "to" | "both") {
                m.ask = true;
                save(c2s, &localpart, m).await;
                let mut t = theirs.unwrap_or_else(|| blank(&user_str));
                t.pending_in = true;
                // Stored without a push: the contact's roster shows it only once approved.
                let _ = store.put_roster_item(&contact_lp, &t).await;
                deliver(Presence::new(PresenceType::Subscribe));
            }
        }
        PresenceType::Subscribed => {
            // Approving a request the contact made (the user's item has pending_in).
            let Some(mut m) = mine.filter(|m| m.pending_in) else {
                return;
            };
            m.pending_in = false;
            m.subscription = match m.subscription.as_str() {
                "to" | "both" => "both",
                _ => "from",
            }
            .into();
            save(c2s, &localpart, m).await;
            let mut t = theirs.unwrap_or_else(|| blank(&user_str));
            t.ask = false;
            t.subscription = match t.subscription.as_str() {
                "from" | "both" => "both",
                _ => "to",
            }
            .into();
            save(c2s, &contact_lp, t).await;
            deliver(Presence::new(PresenceType::Subscribed));
            // §3.1.5: the contact now receives the user's current presence.
            for (from, p) in c2s.router.available_presences(&user) {
                if let Ok(mut p) = Presence::try_from(p) {
                    p.from = Some(from);
                    p.to = Some(contact.clone().into());
                    c2s.router.deliver_available(contact, &p.into());
                }
            }
            if let Some(mut p) = crate::presence::probe(c2s, &user) {
                p.to = Some(contact.clone().into());
                c2s.router.deliver_available(contact, &p.into());
            }
            // XEP-0163 §4.3.3: and, being subscribed now, the last items of the user's PEP
            // nodes its clients want (OMEMO device lists, say).
            for (session, _) in c2s.router.available_presences(contact) {
                if let Ok(session) = session.try_into_full() {
                    crate::pep::send_last_items_of(c2s, &session, &localpart).await;
                }
            }
        }
        PresenceType::Unsubscribe => {
            if let Some(mut m) = mine {
                m.ask = false;
                m.subscription = match m.subscription.as_str() {
                    "both" | "from" => "from",
                    _ => "none",
                }
                .into();
                save(c2s, &localpart, m).await;
            }
            if let Some(mut t) = theirs {
                t.pending_in = false;
                t.subscription = match t.subscription.as_str() {
                    "both" | "to" => "to",
                    _ => "none",
                }
                .into();
                save(c2s, &contact_lp, t).await;
            }
            deliver(Presence::new(PresenceType::Unsubscribe));
        }
        PresenceType::Unsubscribed => {
            if let Some(mut m) = mine {
                m.pending_in = false;
                m.subscription = match m.subscription.as_str() {
                    "both" | "to" => "to",
                    _ => "none",
                }
                .into();
                save(c2s, &localpart, m).await;
            }
            if let Some(mut t) = theirs {
                t.ask = false;
                t.subscription = match t.subscription.as_str() {
                    "both" | "from" => "from",
                    _ => "none",
                }
                .into();
                save(c2s, &contact_lp, t).await;
            }
            deliver(Presence::new(PresenceType::Unsubscribed));
            // §3.2.3: the contact sees the user go unavailable.
            let mut gone = Presence::new(PresenceType::Unavailable);
            gone.from = Some(user.clone().into());
            gone.to = Some(contact.clone().into());
            c2s.router.deliver_available(contact, &gone.into());
        }
        _ => {}
    }
}
