//! XEP-0313 Message Archive Management over the event store, with no second copy: a room's
//! archive is its timeline, and an account's archive is its DM rooms (its 1:1 chats). Read page
//! by page with RSM; archive ids are event IDs, the same as the stanza-ids the live messages
//! carried.

use std::collections::HashMap;

use estuary_core::StoredEvent;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::mam::Query;
use xmpp_parsers::ns;
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType};

use crate::c2s::{C2s, error_reply};
use crate::muc::pump::{MESSAGE_KINDS, Shown, groupchat, stamp};
use crate::muc::{event_nick, member_nick};

pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
/// Page size when the client names none, and the most it may ask for.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 250;
/// Events read from the store at a time while filling a page.
const BATCH: i64 = 200;

/// Stanzas that answer a MAM request to a room, in order: the result messages, then the IQ.
pub(crate) async fn room(
    c2s: &C2s,
    full: &FullJid,
    room_id: &str,
    room_jid: &BareJid,
    iq_id: String,
    payload: &Element,
    get: bool,
) -> Vec<Element> {
    let me: Jid = full.clone().into();
    let room: Jid = room_jid.clone().into();
    let refuse = |type_, condition| {
        vec![error_reply(iq_id.clone(), Some(room.clone()), Some(me.clone()), type_, condition).into()]
    };
    if get {
        return vec![crate::muc::result(full, Some(room), iq_id, Some(form())).into()];
    }
    let Ok(query) = Query::try_from(payload.clone()) else {
        return refuse(ErrorType::Modify, Condition::BadRequest);
    };
    match room_page(c2s, full, room_id, room_jid, &query).await {
        Ok((events, complete)) => {
            let queryid = query.queryid.as_ref().map(|q| q.0.clone());
            let nicks = nicks(c2s, room_id).await;
            let mut out = Vec::with_capacity(events.len() + 1);
            for e in &events {
                let nick = nicks
                    .get(&e.sender)
                    .cloned()
                    .unwrap_or_else(|| member_nick(&e.sender, &serde_json::Value::Null));
                let Some(message) = groupchat(&c2s.core, room_id, room_jid, full, &nick, e, Shown::Archive) else {
                    continue;
                };
                out.push(result_message(full, room_jid, queryid.as_deref(), e, message));
            }
            out.push(crate::muc::result(full, Some(room), iq_id, Some(fin(&events, complete))).into());
            out
        }
        Err((type_, condition)) => refuse(type_, condition),
    }
}

/// §5.1.1: the fields a query may use.
fn form() -> Element {
    let mut form = DataForm::new(DataFormType::Form, NS_MAM, vec![]);
    for var in ["with", "start", "end", "before-id", "after-id"] {
        let type_ = if var == "with" {
            FieldType::JidSingle
        } else {
            FieldType::TextSingle
        };
        form.fields.push(Field::new(var, type_));
    }
    Element::builder("query", NS_MAM).append(Element::from(form)).build()
}

/// `<fin/>` with the RSM set of a page.
fn fin(events: &[StoredEvent], complete: bool) -> Element {
    let mut set = Element::builder("set", NS_RSM);
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        set = set
            .append(
                Element::builder("first", NS_RSM)
                    .append(first.event_id.as_str())
                    .build(),
            )
            .append(Element::builder("last", NS_RSM).append(last.event_id.as_str()).build());
    }
    Element::builder("fin", NS_MAM)
        .attr(
            xml_ncname!("complete").to_owned(),
            if complete { "true" } else { "false" },
        )
        .append(set.build())
        .build()
}

/// Answers to a MAM request to the account's own archive (an IQ with no `to`, or to the
/// account's bare JID), delivered in order through the session's inbox: the results, then the
/// IQ. False when the IQ is not one.
pub(crate) async fn account(c2s: &C2s, iq: &Iq, full: &FullJid) -> bool {
    let (id, to, payload, get) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, true),
        Iq::Set { id, to, payload, .. } => (id, to, payload, false),
        _ => return false,
    };
    let own = full.to_bare();
    if !payload.is("query", NS_MAM)
        || to
            .as_ref()
            .is_some_and(|t| t.resource().is_some() || t.to_bare() != own)
    {
        return false;
    }
    let me: Jid = full.clone().into();
    let answer = |el: Element| c2s.router.deliver(&me, &el);
    if get {
        answer(crate::muc::result(full, to.clone(), id.clone(), Some(form())).into());
        return true;
    }
    let page = match Query::try_from(payload.clone()) {
        Ok(query) => account_page(c2s, full, &query).await.map(|p| (p, query)),
        Err(_) => Err((ErrorType::Modify, Condition::BadRequest)),
    };
    match page {
        Ok(((events, complete, dms), query)) => {
            let queryid = query.queryid.as_ref().map(|q| q.0.clone());
            for e in &events {
                let Some(parties) = dms.get(&e.room_id) else { continue };
                if let Some(message) = crate::direct::archived(c2s, e, parties).await {
                    answer(result_message(full, &own, queryid.as_deref(), e, message.into()));
                }
            }
            answer(crate::muc::result(full, to.clone(), id.clone(), Some(fin(&events, complete))).into());
        }
        Err((type_, condition)) => {
            answer(error_reply(id.clone(), to.clone(), Some(me.clone()), type_, condition).into());
        }
    }
    true
}

/// `<message><result><forwarded><delay/>…</forwarded></result></message>` (§4.2).
fn result_message(
    full: &FullJid,
    archive: &BareJid,
    queryid: Option<&str>,
    e: &StoredEvent,
    message: Element,
) -> Element {
    let mut result = Element::builder("result", NS_MAM).attr(xml_ncname!("id").to_owned(), e.event_id.as_str());
    if let Some(q) = queryid {
        result = result.attr(xml_ncname!("queryid").to_owned(), q);
    }
    let forwarded = Element::builder("forwarded", "urn:xmpp:forward:0")
        .append(
            Element::builder("delay", "urn:xmpp:delay")
                .attr(xml_ncname!("stamp").to_owned(), stamp(e.origin_server_ts))
                .build(),
        )
        .append(message)
        .build();
    Element::builder("message", ns::JABBER_CLIENT)
        .attr(xml_ncname!("to").to_owned(), full.to_string())
        .attr(xml_ncname!("from").to_owned(), archive.to_string())
        .attr(xml_ncname!("id").to_owned(), crate::c2s::new_id())
        .append(result.append(forwarded).build())
        .build()
}

/// Every member's nick by its latest member event (members who left keep theirs).
async fn nicks(c2s: &C2s, room_id: &str) -> HashMap<String, String> {
    let Ok(members) = c2s.core.rooms.members(room_id).await else {
        return HashMap::new();
    };
    members
        .iter()
        .map(|(u, (_, e))| (u.clone(), event_nick(u, e)))
        .collect()
}

type Refusal = (ErrorType, Condition);

/// The stream position of an archive id: an event of one of `rooms`.
async fn position(c2s: &C2s, rooms: &[String], id: &str) -> Result<i64, Refusal> {
    match c2s.core.rooms.event(id).await {
        Ok(Some(e)) if rooms.contains(&e.room_id) => Ok(e.stream_ordering),
        Ok(_) => Err((ErrorType::Cancel, Condition::ItemNotFound)),
        Err(_) => Err((ErrorType::Wait, Condition::InternalServerError)),
    }
}

fn timestamp(value: &str) -> Result<i64, Refusal> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| (ErrorType::Modify, Condition::BadRequest))
}

fn field(query: &Query, var: &str) -> Option<String> {
    query.form.as_ref().and_then(|f| {
        f.fields
            .iter()
            .find(|x| x.var.as_deref() == Some(var))
            .and_then(|x| x.values.first().cloned())
    })
}

/// One page of a room's archive.
async fn room_page(
    c2s: &C2s,
    full: &FullJid,
    room_id: &str,
    room_jid: &BareJid,
    query: &Query,
) -> Result<(Vec<StoredEvent>, bool), Refusal> {
    let internal = |_| (ErrorType::Wait, Condition::InternalServerError);
    let user = crate::muc::user_of(c2s, full).ok_or((ErrorType::Auth, Condition::Forbidden))?;
    let visibility = c2s.core.rooms.visibility(room_id, &user).await.map_err(internal)?;
    let member = c2s.core.rooms.membership(room_id, &user).await.map_err(internal)?;
    if member.as_deref() != Some("join") && !visibility.world_readable() {
        // §6.1.3: only occupants read a room's archive (and anyone a world-readable one).
        return Err((ErrorType::Auth, Condition::Forbidden));
    }
    let with = match field(query, "with") {
        Some(w) => Some(sender_of(c2s, room_id, room_jid, &w).await?),
        None => None,
    };
    page(c2s, &[room_id.to_owned()], query, &|e| {
        visibility.can_see(e.stream_ordering) && with.as_ref().is_none_or(|w| *w == e.sender)
    })
    .await
}

/// The two accounts of each DM room.
type Dms = HashMap<String, [String; 2]>;

/// One page of an account's archive: its DM rooms (with the one `with` names, if it names
/// one), and those rooms.
async fn account_page(c2s: &C2s, full: &FullJid, query: &Query) -> Result<(Vec<StoredEvent>, bool, Dms), Refusal> {
    let user = crate::muc::user_of(c2s, full).ok_or((ErrorType::Auth, Condition::Forbidden))?;
    let with = match field(query, "with") {
        Some(w) => {
            let jid = Jid::new(&w).map_err(|_| (ErrorType::Modify, Condition::JidMalformed))?;
            // Only local accounts have DM rooms here (no s2s yet): anyone else, no messages.
            Some(
                crate::local_account(jid.as_str(), &c2s.domain)
                    .map(|node| c2s.core.matrix_user_id(node))
                    .unwrap_or_default(),
            )
        }
        None => None,
    };
    let dms: Dms = crate::direct::rooms_of(&c2s.core, user.as_str(), with.as_deref())
        .await
        .map_err(|_| (ErrorType::Wait, Condition::InternalServerError))?
        .into_iter()
        .collect();
    let rooms: Vec<String> = dms.keys().cloned().collect();
    let (events, complete) = page(c2s, &rooms, query, &|_| true).await?;
    Ok((events, complete, dms))
}

/// One page of the messages of `rooms` that pass `wanted` and the query's filters: the
/// events, oldest first, and whether it is the last page in the direction asked.
async fn page(
    c2s: &C2s,
    rooms: &[String],
    query: &Query,
    wanted: &(dyn Fn(&StoredEvent) -> bool + Sync),
) -> Result<(Vec<StoredEvent>, bool), Refusal> {
    let start = field(query, "start").map(|v| timestamp(&v)).transpose()?;
    let end = field(query, "end").map(|v| timestamp(&v)).transpose()?;
    let set = query.set.as_ref();
    let max = set.and_then(|s| s.max).unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let mut lower = 0;
    let mut upper = c2s.core.rooms.current_position();
    if let Some(after) = field(query, "after-id").or_else(|| set.and_then(|s| s.after.clone())) {
        lower = position(c2s, rooms, &after).await?;
    }
    let mut newest = false;
    if let Some(before) = field(query, "before-id").or_else(|| set.and_then(|s| s.before.clone())) {
        newest = true;
        if !before.is_empty() {
            upper = position(c2s, rooms, &before).await? - 1;
        }
    }
    let wanted = |e: &StoredEvent| {
        MESSAGE_KINDS.contains(&e.kind.as_str())
            && start.is_none_or(|s| e.origin_server_ts >= s)
            && end.is_none_or(|t| e.origin_server_ts <= t)
            && wanted(e)
    };
    let mut out = vec![];
    let mut complete = true;
    'pages: while lower < upper && !rooms.is_empty() {
        let batch = batch(c2s, rooms, lower, upper, newest)
            .await
            .map_err(|_| (ErrorType::Wait, Condition::InternalServerError))?;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            break;
        };
        let (first, last) = (first.stream_ordering, last.stream_ordering);
        let full_batch = batch.len() as i64 == BATCH;
        let ordered: Box<dyn Iterator<Item = StoredEvent>> = if newest {
            Box::new(batch.into_iter().rev())
        } else {
            Box::new(batch.into_iter())
        };
        for e in ordered.filter(|e| wanted(e)) {
            if out.len() == max {
                complete = false;
                break 'pages;
            }
            out.push(e);
        }
        if !full_batch {
            break;
        }
        if newest {
            upper = first - 1;
        } else {
            lower = last;
        }
    }
    if newest {
        out.reverse();
    }
    if query.flip_page {
        out.reverse();
    }
    Ok((out, complete))
}

/// The next [`BATCH`] events of `rooms` in (lower, upper], oldest first: from the oldest end,
/// or from the newest when `newest`.
async fn batch(
    c2s: &C2s,
    rooms: &[String],
    lower: i64,
    upper: i64,
    newest: bool,
) -> Result<Vec<StoredEvent>, estuary_core::StoreError> {
    let mut all = vec![];
    for room in rooms {
        all.extend(c2s.core.store.room_events(room, lower, upper, BATCH, newest).await?);
    }
    all.sort_by_key(|e| e.stream_ordering);
    let n = all.len().min(BATCH as usize);
    if newest {
        all.drain(..all.len() - n);
    } else {
        all.truncate(n);
    }
    Ok(all)
}

/// The sender a `with` names: an occupant JID (room/nick) or a local account's JID.
async fn sender_of(c2s: &C2s, room_id: &str, room_jid: &BareJid, with: &str) -> Result<String, Refusal> {
    let jid = Jid::new(with).map_err(|_| (ErrorType::Modify, Condition::JidMalformed))?;
    if jid.to_bare() == *room_jid
        && let Some(nick) = jid.resource()
    {
        return nicks(c2s, room_id)
            .await
            .into_iter()
            .find(|(_, n)| n == nick.as_str())
            .map(|(u, _)| u)
            .ok_or((ErrorType::Cancel, Condition::ItemNotFound));
    }
    crate::local_account(jid.as_str(), &c2s.domain)
        .map(|node| c2s.core.matrix_user_id(node))
        .ok_or((ErrorType::Cancel, Condition::ItemNotFound))
}
