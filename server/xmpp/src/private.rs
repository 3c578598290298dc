//! XEP-0049 private XML storage, and XEP-0402 §5.3 bookmark compatibility: `storage:bookmarks`
//! (XEP-0048), kept there or published to the PEP node of that name (XEP-0048 §3, XEP-0223),
//! is a view of the account's `urn:xmpp:bookmarks:1` PEP node, so old clients and new ones see
//! the same rooms. Other namespaces are kept as they are, in the account's data
//! (`org.estuary.xmpp.private`), never shown to anyone else.

use serde_json::{Value, json};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType};

use crate::c2s::{C2s, error_reply};

pub const NS: &str = "jabber:iq:private";
/// XEP-0048: the old bookmarks element, and the PEP node old clients publish it to.
pub const BOOKMARKS_OLD: &str = "storage:bookmarks";
/// XEP-0048 §3 (after XEP-0223): the id of the one item of the `storage:bookmarks` node.
pub const CURRENT: &str = "current";
pub const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
/// What the account advertises for bookmarks: XEP-0402 §5.3 `#compat` (private XML kept in
/// sync) and `#compat-pep` (the `storage:bookmarks` PEP node too), and XEP-0411's feature
/// (deprecated, but some clients look for it before they use the PEP node; Prosody
/// advertises it as well).
pub const FEATURES: &[&str] = &[
    "urn:xmpp:bookmarks:1#compat",
    "urn:xmpp:bookmarks:1#compat-pep",
    "urn:xmpp:bookmarks-conversion:0",
];
const ACCOUNT_DATA: &str = "org.estuary.xmpp.private";

/// Answer a private-storage IQ (to the account itself); None if the IQ is not one.
pub async fn handle_iq(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let (id, to, payload, set) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, false),
        Iq::Set { id, to, payload, .. } => (id, to, payload, true),
        _ => return None,
    };
    if !payload.is("query", NS) {
        return None;
    }
    let me: Jid = full.clone().into();
    let err = |type_, condition| Some(error_reply(id.clone(), to.clone(), Some(me.clone()), type_, condition));
    // §3: only the account itself, about itself.
    if to.as_ref().is_some_and(|t| t.to_bare() != full.to_bare()) {
        return err(ErrorType::Cancel, Condition::Forbidden);
    }
    let localpart = full.node()?.as_str();
    // Exactly one child: the element of the namespace asked about.
    let mut children = payload.children();
    let (Some(child), None) = (children.next(), children.next()) else {
        return err(ErrorType::Modify, Condition::NotAcceptable);
    };
    let ns = child.ns();
    if ns == NS {
        return err(ErrorType::Modify, Condition::NotAcceptable);
    }
    let stored = if ns == BOOKMARKS_OLD {
        if set {
            if storage_written(c2s, localpart, child).await.is_err() {
                return err(ErrorType::Wait, Condition::InternalServerError);
            }
            None
        } else {
            Some(bookmarks(c2s, localpart).await)
        }
    } else if set {
        if put(c2s, localpart, &ns, Some(child)).await.is_err() {
            return err(ErrorType::Wait, Condition::InternalServerError);
        }
        None
    } else {
        Some(
            get(c2s, localpart, &ns)
                .await
                .unwrap_or_else(|| Element::bare(child.name(), ns.as_str())),
        )
    };
    Some(Iq::Result {
        from: to.clone(),
        to: Some(me),
        id: id.clone(),
        payload: stored.map(|el| Element::builder("query", NS).append(el).build()),
    })
}

async fn all(c2s: &C2s, localpart: &str) -> serde_json::Map<String, Value> {
    c2s.core
        .account_data
        .get(localpart, None, ACCOUNT_DATA)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

async fn get(c2s: &C2s, localpart: &str, ns: &str) -> Option<Element> {
    all(c2s, localpart).await.get(ns)?.as_str()?.parse().ok()
}

async fn put(c2s: &C2s, localpart: &str, ns: &str, el: Option<&Element>) -> Result<(), ()> {
    let mut map = all(c2s, localpart).await;
    match el {
        Some(el) => map.insert(ns.to_owned(), json!(String::from(el))),
        None => map.remove(ns),
    };
    c2s.core
        .account_data
        .set(localpart, None, ACCOUNT_DATA, &Value::Object(map))
        .await
        .map_err(|_| ())
}

/// `storage:bookmarks` from the XEP-0402 items (conferences), with whatever else the old
/// element held (URLs) kept as it was stored: what private XML storage answers, and the
/// `current` item of the PEP node `storage:bookmarks`.
pub(crate) async fn bookmarks(c2s: &C2s, localpart: &str) -> Element {
    let mut storage = Element::builder("storage", BOOKMARKS_OLD);
    if let Some(rest) = get(c2s, localpart, BOOKMARKS_OLD).await {
        storage = storage.append_all(rest.children().filter(|c| c.name() != "conference").cloned());
    }
    for item in c2s
        .core
        .store
        .pep_items(localpart, BOOKMARKS, crate::pep::MAX_KEPT)
        .await
        .unwrap_or_default()
    {
        let Ok(conference) = item.payload.parse::<Element>() else {
            continue;
        };
        let old =
            convert(&conference, BOOKMARKS, BOOKMARKS_OLD).attr(xml_ncname!("jid").to_owned(), item.item_id.as_str());
        storage = storage.append(old.build());
    }
    storage.build()
}

/// A `storage:bookmarks` written the old way (private XML, or the PEP node of that name): its
/// conferences become the XEP-0402 items (added, changed, removed), the rest (URLs) is kept
/// as it came.
pub(crate) async fn storage_written(c2s: &C2s, localpart: &str, storage: &Element) -> Result<(), ()> {
    let mut wanted = Vec::new();
    for conference in storage.children().filter(|c| c.is("conference", BOOKMARKS_OLD)) {
        let Some(jid) = conference.attr("jid") else { continue };
        wanted.push((jid.to_owned(), convert(conference, BOOKMARKS_OLD, BOOKMARKS).build()));
    }
    let rest = Element::builder("storage", BOOKMARKS_OLD)
        .append_all(storage.children().filter(|c| c.name() != "conference").cloned())
        .build();
    put(c2s, localpart, BOOKMARKS_OLD, Some(&rest)).await?;
    crate::pep::sync_bookmarks(c2s, localpart, wanted).await?;
    bookmarks_changed(c2s, localpart).await;
    Ok(())
}

/// The one place that follows a change of the account's bookmarks, however it was made
/// (XEP-0402 items, private XML, the `storage:bookmarks` node): the sessions that follow
/// `storage:bookmarks` get its new `current` item (XEP-0411 §3; the node is the owner's
/// alone). The private XML view is built when read, so it needs nothing here; the XEP-0402
/// items were brought in line by `storage_written` when the old form was written.
pub(crate) async fn bookmarks_changed(c2s: &C2s, localpart: &str) {
    let storage = bookmarks(c2s, localpart).await;
    crate::pep::announce(c2s, localpart, BOOKMARKS_OLD, CURRENT, storage).await;
}

/// Whether a payload published to the `storage:bookmarks` node is one (XEP-0048 §3.1): a
/// `<storage xmlns='storage:bookmarks'/>` whose conferences each name a room by a bare JID
/// (it becomes the id of their XEP-0402 item).
pub(crate) fn is_storage(payload: &Element) -> bool {
    payload.is("storage", BOOKMARKS_OLD)
        && payload
            .children()
            .filter(|c| c.is("conference", BOOKMARKS_OLD))
            .all(|c| c.attr("jid").is_some_and(|jid| BareJid::new(jid).is_ok()))
}

/// A `<conference/>` of one bookmark namespace in the other: name, autojoin, nick, password
/// (the room JID is an attribute in the old form and the item id in the new).
fn convert(conference: &Element, from: &str, to: &str) -> tokio_xmpp::minidom::ElementBuilder {
    let mut out = Element::builder("conference", to);
    if let Some(name) = conference.attr("name") {
        out = out.attr(xml_ncname!("name").to_owned(), name);
    }
    if let Some(autojoin) = conference.attr("autojoin") {
        out = out.attr(xml_ncname!("autojoin").to_owned(), autojoin);
    }
    for field in ["nick", "password"] {
        if let Some(v) = conference.get_child(field, from) {
            out = out.append(Element::builder(field, to).append(v.text()).build());
        }
    }
    out
}
