//! XEP-0191 blocking, on the same list Matrix uses: blocking a local account over XMPP puts
//! its Matrix ID in `m.ignored_user_list`, and ignoring a local user from a Matrix client
//! blocks their JID. JIDs with no Matrix ID (other XMPP servers, domains) are kept in the
//! `org.estuary.xmpp.blocklist` account data, so a Matrix client rewriting its ignore list
//! never drops them.

use estuary_core::Locked;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_xmpp::minidom::Element;
use xmpp_parsers::blocking::{Block, BlocklistResult, Unblock};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::c2s::{C2s, error_reply, new_id};

pub const NS: &str = "urn:xmpp:blocking";
const IGNORED: &str = "m.ignored_user_list";
const OTHERS: &str = "org.estuary.xmpp.blocklist";

/// Blocklists read from the store, valid while the account-data stream stands still (every
/// change to either list, from XMPP or from a Matrix client, moves it). Checked for every
/// message and IQ, so it must not cost store reads each time.
#[derive(Default)]
pub struct Cache {
    inner: std::sync::Mutex<Cached>,
}

/// The account-data position the lists were read at, and the lists by localpart.
type Cached = (i64, std::collections::HashMap<String, Arc<BTreeSet<String>>>);

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.locked()
    }
}

/// The account's blocklist, from the cache when nothing changed since it was read.
async fn cached(c2s: &C2s, localpart: &str) -> Arc<BTreeSet<String>> {
    let position = c2s.core.streams.current().account_data;
    {
        let mut cache = c2s.blocklists.lock();
        if cache.0 != position {
            *cache = (position, Default::default());
        }
        if let Some(list) = cache.1.get(localpart) {
            return list.clone();
        }
    }
    let list = Arc::new(blocklist(c2s, localpart).await);
    let mut cache = c2s.blocklists.lock();
    // Kept only if nothing moved while it was read.
    if cache.0 == position {
        cache.1.insert(localpart.to_owned(), list.clone());
    }
    list
}

/// The account's blocklist as JIDs.
pub async fn blocklist(c2s: &C2s, localpart: &str) -> BTreeSet<String> {
    let core = &c2s.core;
    let mut list = BTreeSet::new();
    if let Ok(Some(ignored)) = core.account_data.get(localpart, None, IGNORED).await
        && let Some(users) = ignored.get("ignored_users").and_then(Value::as_object)
    {
        for user in users.keys() {
            if let Some(local) = core.local_localpart(user) {
                list.insert(crate::bare_jid(local, &c2s.domain));
            }
        }
    }
    if let Ok(Some(others)) = core.account_data.get(localpart, None, OTHERS).await
        && let Some(jids) = others.get("jids").and_then(Value::as_array)
    {
        list.extend(jids.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    list
}

/// Whether `localpart` blocked `jid` (XEP-0191 §4: by full JID, bare JID or domain).
pub async fn blocks(c2s: &C2s, localpart: &str, jid: &Jid) -> bool {
    let list = cached(c2s, localpart).await;
    list.contains(jid.as_str()) || list.contains(jid.to_bare().as_str()) || list.contains(jid.domain().as_str())
}

/// Store a new list: local accounts into the Matrix ignore list (other entries there kept),
/// the rest into our own account data.
async fn store(c2s: &C2s, localpart: &str, list: &BTreeSet<String>) -> bool {
    let core = &c2s.core;
    let mut ignored = core
        .account_data
        .get(localpart, None, IGNORED)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.get("ignored_users").and_then(Value::as_object).cloned())
        .unwrap_or_default();
    let suffix = format!(":{}", core.config.server_name);
    // Drop the local accounts' entries, then add back the ones in the list.
    ignored.retain(|user, _| !user.ends_with(suffix.as_str()));
    let mut others = Vec::new();
    for jid in list {
        match crate::local_account(jid, &c2s.domain).filter(|_| !jid.contains('/')) {
            Some(local) => {
                ignored.insert(format!("@{local}{suffix}"), json!({}));
            }
            None => others.push(Value::from(jid.as_str())),
        }
    }
    let ignored = json!({ "ignored_users": Value::Object(ignored) });
    core.account_data.set(localpart, None, IGNORED, &ignored).await.is_ok()
        && core
            .account_data
            .set(localpart, None, OTHERS, &json!({ "jids": others }))
            .await
            .is_ok()
}

/// Blocklist get, block and unblock (§3). None when the IQ is not about blocking.
pub async fn handle_iq(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let me: Jid = full.clone().into();
    let (id, to, payload, set) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, false),
        Iq::Set { id, to, payload, .. } => (id, to, payload, true),
        _ => return None,
    };
    if payload.ns() != NS {
        return None;
    }
    let err = |condition| {
        Some(error_reply(
            id.clone(),
            to.clone(),
            Some(me.clone()),
            ErrorType::Modify,
            condition,
        ))
    };
    if to
        .as_ref()
        .is_some_and(|t| t.as_str() != c2s.domain && t.to_bare() != full.to_bare())
    {
        return None;
    }
    let localpart = full.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    let mut list = blocklist(c2s, &localpart).await;
    let reply = |payload: Option<Element>| {
        Some(Iq::Result {
            from: to.clone(),
            to: Some(me.clone()),
            id: id.clone(),
            payload,
        })
    };
    if !set {
        if !payload.is("blocklist", NS) {
            return err(DefinedCondition::BadRequest);
        }
        c2s.router.set_blocklist_interest(full);
        let items = list.iter().filter_map(|j| Jid::new(j).ok()).collect();
        return reply(Some(BlocklistResult { items }.into()));
    }
    let before = list.clone();
    let mut newly_blocked = Vec::new();
    let push: Element = if payload.is("block", NS) {
        let Ok(block) = Block::try_from(payload.clone()) else {
            return err(DefinedCondition::BadRequest);
        };
        // §3.3: a block without items is bad-request.
        if block.items.is_empty() {
            return err(DefinedCondition::BadRequest);
        }
        list.extend(block.items.iter().map(|j| j.to_string()));
        newly_blocked.clone_from(&block.items);
        block.into()
    } else if payload.is("unblock", NS) {
        let Ok(unblock) = Unblock::try_from(payload.clone()) else {
            return err(DefinedCondition::BadRequest);
        };
        // §3.4: no items unblocks everyone.
        if unblock.items.is_empty() {
            list.clear();
        }
        for j in &unblock.items {
            list.remove(j.as_str());
        }
        unblock.into()
    } else {
        return err(DefinedCondition::BadRequest);
    };
    if !store(c2s, &localpart, &list).await {
        return err(DefinedCondition::InternalServerError);
    }
    // §3.3/§3.4: every session that asked for the blocklist hears of the change.
    let bare = full.to_bare();
    appear_offline_to(c2s, &localpart, &newly_blocked).await;
    let unblocked: Vec<Jid> = before.difference(&list).filter_map(|j| Jid::new(j).ok()).collect();
    reappear(c2s, full, &localpart, &unblocked).await;
    c2s.router.deliver_blocklist_push(&bare, |dest| {
        Iq::Set {
            from: None,
            to: Some(dest),
            id: new_id(),
            payload: push.clone(),
        }
        .into()
    });
    reply(None)
}

/// §3.3: contacts that could see the user's presence and are now blocked see it go
/// unavailable (from each available session).
async fn appear_offline_to(c2s: &C2s, localpart: &str, blocked: &[Jid]) {
    if blocked.is_empty() {
        return;
    }
    let Ok(me) = BareJid::new(&crate::bare_jid(localpart, &c2s.domain)) else {
        return;
    };
    let sessions = c2s.router.available_presences(&me);
    for watcher in crate::roster::watchers(c2s, localpart).await {
        let Ok(contact) = BareJid::new(&watcher.contact) else {
            continue;
        };
        if !names(blocked, &contact) {
            continue;
        }
        for (from, _) in &sessions {
            let mut gone = Presence::new(PresenceType::Unavailable);
            gone.from = Some(from.clone());
            gone.to = Some(contact.clone().into());
            c2s.router.deliver_available(&contact, &gone.into());
        }
    }
}

/// Whether one of `jids` (a JID, or a bare domain) covers `contact`.
fn names(jids: &[Jid], contact: &BareJid) -> bool {
    jids.iter()
        .any(|b| b.to_bare() == *contact || (b.node().is_none() && b.domain() == contact.domain()))
}

/// §3.4: contacts the user unblocked see the user's current presence again (when subscribed
/// to it), and the user's sessions see theirs (when the user is subscribed), unless a block
/// remains either way.
async fn reappear(c2s: &C2s, full: &FullJid, localpart: &str, unblocked: &[Jid]) {
    if unblocked.is_empty() {
        return;
    }
    let me = full.to_bare();
    let mine = c2s.router.available_presences(&me);
    for item in c2s.core.store.roster(localpart).await.unwrap_or_default() {
        let Ok(contact) = BareJid::new(&item.contact) else {
            continue;
        };
        if !names(unblocked, &contact) || crate::c2s::blocked(c2s, full, &contact.clone().into()).await.is_some() {
            continue;
        }
        let with = |presence: &Element, from: &Jid, to: Jid| -> Option<Element> {
            let mut p = Presence::try_from(presence.clone()).ok()?;
            p.from = Some(from.clone());
            p.to = Some(to);
            Some(p.into())
        };
        if matches!(item.subscription.as_str(), "from" | "both") {
            for (from, presence) in &mine {
                if let Some(p) = with(presence, from, contact.clone().into()) {
                    c2s.router.deliver_available(&contact, &p);
                }
            }
        }
        if matches!(item.subscription.as_str(), "to" | "both") {
            for (from, presence) in c2s.router.available_presences(&contact) {
                if let Some(p) = with(&presence, &from, me.clone().into()) {
                    c2s.router.deliver_available(&me, &p);
                }
            }
        }
    }
}
