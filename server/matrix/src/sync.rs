//! `GET /sync` (v3), `GET /rooms/{roomId}/messages`, and filters.
//!
//! Tokens are opaque to clients: `s<N>` is a position in the event stream. A sync returns every
//! event with a position in (since, next_batch]; appends are serialised, so nothing is lost
//! between two syncs and nothing is delivered twice.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use estuary_core::{Locked, StoredEvent};

use crate::push::Seen;
use ruma::api::Direction;
use ruma::api::client::filter::{create_filter::v3 as create_filter, get_filter::v3 as get_filter};
use ruma::api::client::message::get_message_events::v3 as messages;
use ruma::api::client::sync::sync_events::v3 as sync;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::OnceCell;

use futures::{StreamExt, TryStreamExt};

use estuary_core::streams::Positions;
use serde_json::{Map, Value, json};

use crate::events::{client_event, stripped};
use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

/// Longest long-poll a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeline events per room when the filter sets no limit (Synapse: 10).
const DEFAULT_TIMELINE_LIMIT: i64 = 10;
const MAX_TIMELINE_LIMIT: i64 = 1000;
/// Pages of history one `/messages` request reads looking for events that pass its filter.
const MAX_FILTER_PAGES: usize = 20;

pub fn token(position: i64) -> String {
    format!("s{position}")
}

/// The events position of a pagination or sync token.
pub fn parse_token(t: &str) -> Result<i64, MatrixError> {
    Positions::parse(t)
        .map(|p| p.events)
        .ok_or_else(|| MatrixError::invalid_param(format!("Invalid pagination token {t:?}")))
}

/// What a sync filter asks of each room: how many timeline events, which ones, and whether
/// member events are lazy-loaded.
struct SyncFilter {
    limit: i64,
    timeline: crate::filter::EventFilter,
    lazy_members: bool,
}

/// A sync filter: inline JSON or the ID of an uploaded filter.
async fn sync_filter(
    state: &MatrixState,
    caller: &Caller,
    filter: Option<&sync::Filter>,
) -> Result<SyncFilter, MatrixError> {
    let definition: Option<Value> = match filter {
        None => None,
        Some(sync::Filter::FilterDefinition(def)) => serde_json::to_value(def).ok(),
        Some(sync::Filter::FilterId(id)) => {
            let id: i64 = id
                .parse()
                .map_err(|_| MatrixError::invalid_param("Unknown filter ID"))?;
            let json = state
                .core
                .store
                .filter(&caller.localpart, id)
                .await
                .map_err(estuary_core::CoreError::from)?;
            let json = json.ok_or_else(|| MatrixError::invalid_param("Unknown filter ID"))?;
            serde_json::from_str(&json).ok()
        }
        Some(_) => None,
    };
    let room = definition.as_ref().map(|d| d["room"].clone()).unwrap_or_default();
    let timeline = crate::filter::EventFilter::from_json(&room["timeline"]);
    Ok(SyncFilter {
        limit: timeline
            .limit
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, MAX_TIMELINE_LIMIT),
        lazy_members: crate::filter::EventFilter::from_json(&room["state"]).lazy_load_members,
        timeline,
    })
}

pub async fn sync_v3(State(state): State<Arc<MatrixState>>, req: Ruma<sync::Request>) -> JsonResult {
    let caller = req.caller()?.clone();
    let b = &req.body;
    let core = &state.core;
    let since = match b.since.as_deref() {
        Some(t) => {
            Some(Positions::parse(t).ok_or_else(|| MatrixError::invalid_param(format!("Invalid since token {t:?}")))?)
        }
        None => None,
    };
    let filter = sync_filter(&state, &caller, b.filter.as_ref()).await?;
    let full_state = b.full_state;
    // Spec: set_presence defaults to online; syncing is activity.
    let presence = match &b.set_presence {
        ruma::presence::PresenceState::Offline => "offline",
        ruma::presence::PresenceState::Unavailable => "unavailable",
        _ => "online",
    };
    core.presence.set(caller.user_id.as_str(), presence, None);

    // Long-poll: compute; if nothing is new for this user, wait for any stream to move and
    // compute again, until the timeout. Subscribing first means no change is missed between
    // computing and waiting.
    let timeout = b.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut watch = core.streams.subscribe();
    loop {
        let now = *watch.borrow_and_update();
        let (response, news) = compute(&state, &caller, since, now, &filter, full_state).await?;
        if news || since.is_none() || full_state || tokio::time::Instant::now() >= deadline {
            return Ok(Json(with_key_counts(&state, &caller, response).await?));
        }
        if tokio::time::timeout_at(deadline, watch.changed()).await.is_err() {
            let now = core.streams.current();
            let (response, _) = compute(&state, &caller, since, now, &filter, full_state).await?;
            return Ok(Json(with_key_counts(&state, &caller, response).await?));
        }
    }
}

/// The sync response for (since, now], and whether it holds anything new.
async fn compute(
    state: &MatrixState,
    caller: &Caller,
    since: Option<Positions>,
    now: Positions,
    filter: &SyncFilter,
    full_state: bool,
) -> Result<(Value, bool), MatrixError> {
    let core = &state.core;
    let zero = Positions::default();
    let s = since.unwrap_or(zero);
    let mut news = false;
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut seen_users: BTreeSet<String> = BTreeSet::new();
    seen_users.insert(caller.user_id.to_string());

    // What did not move since `since` is not asked for; what only some rooms need is asked
    // for once, when the first needs it.
    let account_data = if core
        .streams
        .user_account_data
        .any_after(&caller.localpart, s.account_data)
    {
        core.account_data.since(&caller.localpart, s.account_data).await?
    } else {
        Vec::new()
    };
    let account_data: Vec<_> = account_data
        .into_iter()
        .filter(|a| a.stream_id <= now.account_data)
        .collect();
    let memberships = state.core.rooms.memberships(caller.user_id.as_str()).await?;
    let timelines = if since.is_none() || full_state {
        newest_events(state, &memberships, now.events, filter.limit + 1).await?
    } else {
        HashMap::new()
    };
    let asked = AskedOnce {
        timelines: std::sync::Mutex::new(timelines),
        ..AskedOnce::default()
    };
    let window = Window {
        state,
        caller,
        since,
        now,
        filter,
        full_state,
        account_data: &account_data,
        asked: &asked,
    };
    // Rooms are independent: several at once, so that their round trips to the store overlap.
    let sections: Vec<_> = memberships.iter().map(|m| window.section(m)).collect();
    let sections: Vec<Section> = futures::stream::iter(sections)
        .buffered(ROOMS_AT_ONCE)
        .try_collect()
        .await?;
    for (m, section) in memberships.iter().zip(sections) {
        match section {
            Section::Join { room, joined } => {
                if let Some(room) = room {
                    join.insert(m.room_id.clone(), room);
                    news = true;
                }
                seen_users.extend(joined);
            }
            Section::Invite(room) => {
                invite.insert(m.room_id.clone(), room);
                news = true;
            }
            Section::Leave(room) => {
                leave.insert(m.room_id.clone(), room);
                news = true;
            }
            Section::Nothing => {}
        }
    }
    let global_data: Vec<Value> = account_data
        .iter()
        .filter(|a| a.room_id.is_empty())
        .map(|a| json!({ "type": a.kind, "content": serde_json::from_str::<Value>(&a.content).unwrap_or_default() }))
        .collect();
    let mut global_data = global_data;
    // Clients expect their push rules in the first sync even if they never changed them.
    if since.is_none() && !global_data.iter().any(|e| e["type"] == crate::push::ACCOUNT_DATA_TYPE) {
        let rules = &window.push_rules().await?.rules;
        global_data.push(json!({ "type": crate::push::ACCOUNT_DATA_TYPE, "content": { "global": rules } }));
    }
    news |= since.is_some() && !global_data.is_empty();
    let presence: Vec<Value> = core
        .presence
        .changed_since(
            seen_users.iter().map(String::as_str),
            if since.is_some() { s.presence } else { -1 },
        )
        .into_iter()
        .filter(|(_, p)| p.changed_at <= now.presence || since.is_none())
        .map(|(user, p)| presence_event(&user, &p))
        .collect();
    news |= since.is_some() && !presence.is_empty();
    // To-device: delivered until the device's next sync acknowledges them (spec); at most
    // a page per sync, the rest next time.
    let device = caller.device_id.as_str();
    let to_device = core
        .e2ee
        .to_device_for_sync(&caller.localpart, device, s.to_device, now.to_device)
        .await?;
    let mut next = now;
    if to_device.len() as i64 >= estuary_core::e2ee::TO_DEVICE_PER_SYNC
        && let Some(last) = to_device.last()
    {
        next.to_device = last.stream_id;
    }
    news |= !to_device.is_empty();
    let to_device: Vec<Value> = to_device
        .iter()
        .map(|m| json!({ "type": m.kind, "sender": m.sender, "content": serde_json::from_str::<Value>(&m.content).unwrap_or_default() }))
        .collect();
    let (changed, left) = match since {
        Some(s) => crate::keys::device_list_updates(state, caller, &memberships, &s, &now).await?,
        None => (Vec::new(), Vec::new()),
    };
    news |= !left.is_empty();
    news |= !changed.is_empty();
    Ok((
        json!({
            "next_batch": next.token(),
            "rooms": { "join": join, "invite": invite, "leave": leave },
            "presence": { "events": presence },
            "account_data": { "events": global_data },
            "to_device": { "events": to_device },
            "device_lists": { "changed": changed, "left": left },
        }),
        news,
    ))
}

/// The device's one-time key counts and unused fallback key types, which every response
/// carries but which are not news (counted once the response is decided on).
async fn with_key_counts(state: &MatrixState, caller: &Caller, mut response: Value) -> Result<Value, MatrixError> {
    let (localpart, device) = (&caller.localpart, caller.device_id.as_str());
    let (counts, fallbacks) = state.core.e2ee.counts_and_fallbacks(localpart, device).await?;
    response["device_one_time_keys_count"] = json!(counts);
    response["device_unused_fallback_key_types"] = json!(fallbacks);
    Ok(response)
}

/// Rooms whose sections one sync computes at once.
const ROOMS_AT_ONCE: usize = 8;

/// The newest `limit` events up to `to` of every joined room, for a sync whose timelines
/// all start at the beginning (an initial or full-state one): see
/// [`estuary_core::rooms::Rooms::rooms_newest_events`].
async fn newest_events(
    state: &MatrixState,
    memberships: &[estuary_core::Membership],
    to: i64,
    limit: i64,
) -> Result<HashMap<String, Vec<StoredEvent>>, MatrixError> {
    let rooms: Vec<&str> = memberships
        .iter()
        .filter(|m| m.membership == "join" && m.stream_ordering <= to)
        .map(|m| m.room_id.as_str())
        .collect();
    Ok(state.core.rooms.rooms_newest_events(&rooms, to, limit).await?)
}

/// What a sync reads at most once, when the first room needs it.
#[derive(Default)]
struct AskedOnce {
    push_rules: OnceCell<Arc<crate::push::Rules>>,
    forgotten: OnceCell<HashMap<String, String>>,
    /// Joined rooms' newest events read for all rooms at once (see [`newest_events`]), each
    /// taken by its room's section.
    timelines: std::sync::Mutex<HashMap<String, Vec<StoredEvent>>>,
}

/// One room's part of a sync response.
enum Section {
    /// A joined room: its section if anything is new, and its joined members (for presence,
    /// when it moved).
    Join {
        room: Option<Value>,
        joined: Vec<String>,
    },
    Invite(Value),
    Leave(Value),
    Nothing,
}

/// What a sync covers: one user's view of (since, now].
struct Window<'a> {
    state: &'a MatrixState,
    caller: &'a Caller,
    since: Option<Positions>,
    now: Positions,
    filter: &'a SyncFilter,
    full_state: bool,
    /// The user's account data changed in the window.
    account_data: &'a [estuary_core::account_data::AccountDataRow],
    asked: &'a AskedOnce,
}

impl Window<'_> {
    async fn push_rules(&self) -> Result<&crate::push::Rules, MatrixError> {
        let rules = self
            .asked
            .push_rules
            .get_or_try_init(|| crate::push::rules_of(self.state, self.caller))
            .await?;
        Ok(rules)
    }

    /// The section of the room of one of the user's memberships.
    async fn section(&self, m: &estuary_core::Membership) -> Result<Section, MatrixError> {
        let (state, caller, now, filter, full_state) =
            (self.state, self.caller, self.now, self.filter, self.full_state);
        let core = &state.core;
        let rooms = &core.rooms;
        let s = self.since.unwrap_or_default();
        // A membership committed after `now` waits for the next sync.
        if m.stream_ordering > now.events {
            return Ok(Section::Nothing);
        }
        // A new membership since the last sync, as opposed to an update of the same one (a
        // profile change rewrites every member event but joins nothing anew).
        let changed_since = match self.since {
            None => true,
            Some(s) if m.stream_ordering > s.events => !same_membership_as_before(state, m).await?,
            Some(_) => false,
        };
        match m.membership.as_str() {
            "join" => {
                let from = if full_state || changed_since {
                    None
                } else {
                    Some(s.events)
                };
                let read = match from {
                    None => self.asked.timelines.locked().remove(&m.room_id),
                    Some(_) => None,
                };
                let (mut room, seen) = room_section(
                    state,
                    caller,
                    &m.room_id,
                    from,
                    now.events,
                    filter,
                    full_state || changed_since,
                    read,
                )
                .await?;
                let mut ephemeral = Vec::new();
                let receipts_after = if changed_since { 0 } else { s.receipts };
                let receipts = if core.streams.room_receipts.any_after(&m.room_id, receipts_after) {
                    core.account_data.receipts_since(&m.room_id, receipts_after).await?
                } else {
                    Vec::new()
                };
                let receipts: Vec<_> = receipts
                    .into_iter()
                    .filter(|r| r.stream_id <= now.receipts)
                    // Private receipts are shown to their owner only.
                    .filter(|r| r.receipt_type != "m.read.private" || r.user_id == caller.user_id.as_str())
                    .collect();
                if !receipts.is_empty() {
                    ephemeral.push(receipt_edu(&receipts));
                }
                let typing_since = if changed_since { -1 } else { s.typing };
                if let Some(users) = core.typing.changed_since(&m.room_id, typing_since)
                    && (!changed_since || !users.is_empty())
                {
                    ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
                }
                let room_data: Vec<Value> = self
                    .account_data
                    .iter()
                    .filter(|a| a.room_id == m.room_id)
                    .map(|a| json!({ "type": a.kind, "content": serde_json::from_str::<Value>(&a.content).unwrap_or_default() }))
                    .collect();
                if room.is_some() || !ephemeral.is_empty() || !room_data.is_empty() {
                    let r = room.get_or_insert_with(|| empty_room(now.events));
                    r["ephemeral"]["events"] = json!(ephemeral);
                    r["account_data"]["events"] = json!(room_data);
                    let rules = self.push_rules().await?;
                    let (notify, highlight) =
                        crate::push::unread_counts(state, caller, &rules.rules, rules.print, &m.room_id, seen.as_ref())
                            .await?;
                    r["unread_notifications"] = json!({ "notification_count": notify, "highlight_count": highlight });
                }
                // Presence is looked up for them only if it moved.
                let joined = if self.since.is_none() || s.presence != now.presence {
                    rooms
                        .members(&m.room_id)
                        .await?
                        .iter()
                        .filter(|(_, (membership, _))| membership == "join")
                        .map(|(user, _)| user.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                Ok(Section::Join { room, joined })
            }
            "invite" if changed_since => {
                let current = rooms.current_state(&m.room_id).await?;
                let ignored = crate::relations::ignored_users(state, &caller.localpart).await;
                // Spec: invites from ignored users are ignored.
                if current
                    .iter()
                    .any(|e| e.event_id == m.event_id && ignored.contains(&e.sender))
                {
                    return Ok(Section::Nothing);
                }
                let mut invite_state: Vec<Value> = Vec::new();
                for e in current {
                    let shown = matches!(
                        e.kind.as_str(),
                        "m.room.create"
                            | "m.room.join_rules"
                            | "m.room.name"
                            | "m.room.avatar"
                            | "m.room.canonical_alias"
                            | "m.room.encryption"
                            | "m.room.topic"
                    ) || e.event_id == m.event_id;
                    if shown {
                        invite_state.push(stripped(&e));
                    }
                }
                Ok(Section::Invite(json!({ "invite_state": { "events": invite_state } })))
            }
            // Rooms left or banned from since the last sync; an initial sync leaves them out.
            "leave" | "ban" if self.since.is_some() && changed_since => {
                // A room the user forgot since is left out.
                let forgotten = self
                    .asked
                    .forgotten
                    .get_or_try_init(|| rooms.forgotten(&caller.user_id))
                    .await?;
                if forgotten.get(&m.room_id) == Some(&m.event_id) {
                    return Ok(Section::Nothing);
                }
                // Events since the last sync up to the end of the user's joined period; a user
                // who was not joined in that span (a rejected invite, a ban before joining)
                // gets only their own membership event.
                let until = rooms.joined_until(&m.room_id, &caller.user_id).await?;
                let from = match until {
                    Some(u) if u > s.events => s.events,
                    _ => m.stream_ordering - 1,
                };
                let (room, _) = room_section(
                    state,
                    caller,
                    &m.room_id,
                    Some(from),
                    m.stream_ordering,
                    filter,
                    false,
                    None,
                )
                .await?;
                Ok(room.map_or(Section::Nothing, Section::Leave))
            }
            _ => Ok(Section::Nothing),
        }
    }
}

/// True if the member event replaced one with the same membership (e.g. a profile update).
pub(crate) async fn same_membership_as_before(
    state: &MatrixState,
    m: &estuary_core::Membership,
) -> Result<bool, MatrixError> {
    let Some(e) = state.core.rooms.event(&m.event_id).await? else {
        return Ok(false);
    };
    let previous = e
        .prev_content
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok());
    Ok(previous.as_ref().and_then(|p| p["membership"].as_str()) == Some(m.membership.as_str()))
}

fn empty_room(now: i64) -> Value {
    json!({
        "timeline": { "events": [], "limited": false, "prev_batch": token(now) },
        "state": { "events": [] },
        "ephemeral": { "events": [] },
        "account_data": { "events": [] },
        "unread_notifications": { "notification_count": 0, "highlight_count": 0 },
        "summary": {},
    })
}

/// `m.receipt`: `{ event_id: { receipt_type: { user_id: { ts, thread_id? } } } }`.
fn receipt_edu(receipts: &[estuary_core::account_data::ReceiptRow]) -> Value {
    let mut content = Map::new();
    for r in receipts {
        let mut info = json!({ "ts": r.ts });
        if !r.thread_id.is_empty() {
            info["thread_id"] = json!(r.thread_id);
        }
        let by_event = content.entry(r.event_id.clone()).or_insert_with(|| json!({}));
        by_event[&r.receipt_type][&r.user_id] = info;
    }
    json!({ "type": "m.receipt", "content": content })
}

pub fn presence_event(user: &str, p: &estuary_core::ephemeral::PresenceState) -> Value {
    let ago = estuary_core::now_ms().saturating_sub(p.last_active_ms).max(0);
    let mut content =
        json!({ "presence": p.presence, "last_active_ago": ago, "currently_active": p.presence == "online" });
    if let Some(m) = &p.status_msg {
        content["status_msg"] = json!(m);
    }
    json!({ "type": "m.presence", "sender": user, "content": content })
}

/// One room's timeline and state for events in (from, to]. `initial`: the state is the
/// room's state before the timeline; otherwise only state that changed in a gap the timeline
/// skipped. None when nothing happened. With it, every event of the room in `(from, to]`
/// when the timeline holds them all (it is not limited). `read`: the room's newest events in
/// that window (one more than the limit) when they were read already.
#[allow(clippy::too_many_arguments)]
async fn room_section(
    state: &MatrixState,
    caller: &Caller,
    room_id: &str,
    from: Option<i64>,
    to: i64,
    filter: &SyncFilter,
    initial: bool,
    read: Option<Vec<StoredEvent>>,
) -> Result<(Option<Value>, Option<Seen>), MatrixError> {
    let limit = filter.limit;
    let rooms = &state.core.rooms;
    let lower = from.unwrap_or(0);
    // No event since `from`: no timeline, and no state reset either (a reset comes with one).
    if !initial && !state.core.streams.room_events.any_after(room_id, lower) {
        return Ok((
            None,
            Some(Seen {
                after: lower,
                until: to,
                events: Vec::new(),
            }),
        ));
    }
    // One more than the limit tells whether the timeline is limited.
    let mut events = match read {
        Some(events) => events,
        None => rooms.newest_events(room_id, lower, to, limit + 1).await?,
    };
    let limited = events.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    if limited {
        events.remove(0);
    }
    if events.is_empty() && !initial {
        return Ok((
            None,
            Some(Seen {
                after: lower,
                until: to,
                events,
            }),
        ));
    }
    let first = events.first().map_or(to + 1, |e| e.stream_ordering);
    // The state at the start of the timeline; for an incremental sync with a gap, only what
    // changed in the gap (after `since`). A timeline that follows on from `since` carries all
    // state changes itself.
    let mut state_events: Vec<StoredEvent> = if initial || limited {
        let after = if initial { 0 } else { lower };
        let before_timeline = rooms.state_at(room_id, first - 1).await?;
        // Lazy loading: of the member events, only the timeline senders' and the user's own.
        let senders: BTreeSet<&str> = events.iter().map(|e| e.sender.as_str()).collect();
        before_timeline
            .into_iter()
            .filter(|e| e.stream_ordering > after)
            .filter(|e| {
                !filter.lazy_members
                    || e.kind != "m.room.member"
                    || e.state_key
                        .as_deref()
                        .is_some_and(|k| senders.contains(k) || k == caller.user_id.as_str())
            })
            .collect()
    } else {
        Vec::new()
    };
    // State resolution (where federated branches meet) can change the room's state with no
    // event of the timeline: such entries come in `state`, as Synapse sends them.
    let resets = if initial {
        Vec::new()
    } else {
        rooms.state_resets(room_id, lower, to).await?
    };
    if !resets.is_empty() {
        let shown: BTreeSet<String> = events.iter().chain(&state_events).map(|e| e.event_id.clone()).collect();
        state_events.extend(resets.into_iter().filter(|e| !shown.contains(&e.event_id)));
    }
    // The timeline filter (types, senders...) applies to what is shown, not to the window.
    let passed: Vec<StoredEvent>;
    let shown = if filter.timeline.passes_everything() {
        &events
    } else {
        passed = events.iter().filter(|e| filter.timeline.matches(e)).cloned().collect();
        &passed
    };
    let shown = crate::relations::for_client(state, caller, shown, false, to).await?;
    let seen = (!limited).then_some(Seen {
        after: lower,
        until: to,
        events,
    });
    let prev_batch = token(first.saturating_sub(1));
    let section = json!({
        "timeline": {
            "events": shown,
            "limited": limited,
            "prev_batch": prev_batch,
        },
        "state": { "events": state_events.iter().map(|e| client_event(e, false)).collect::<Vec<_>>() },
        "ephemeral": { "events": [] },
        "account_data": { "events": [] },
        "unread_notifications": { "notification_count": 0, "highlight_count": 0 },
        "summary": {},
    });
    Ok((Some(section), seen))
}

/// `GET /rooms/{roomId}/messages`: history pages. Members see the room's events; a user who
/// left sees them up to the leave.
pub async fn room_messages(State(state): State<Arc<MatrixState>>, req: Ruma<messages::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let room_id = b.room_id.as_str();
    let visible_to = crate::relations::visible_until(&state, &b.room_id, caller).await?;
    let limit = i64::try_from(u64::from(b.limit))
        .unwrap_or(10)
        .clamp(1, MAX_TIMELINE_LIMIT);
    let now = state.core.rooms.current_position().min(visible_to);
    let from = match &b.from {
        Some(t) => parse_token(t)?,
        None if b.dir == Direction::Backward => now,
        None => 0,
    };
    let to = b.to.as_deref().map(parse_token).transpose()?;
    let filter = crate::filter::EventFilter::from_json(&serde_json::to_value(&b.filter).unwrap_or_default());
    let store = &state.core.store;
    // Pages of `limit` events are read until `limit` pass the filter (or the history ends);
    // `end` is where the next page starts. A bounded number of pages per request.
    let backward = b.dir == Direction::Backward;
    let (mut lower, mut upper) = if backward {
        (to.unwrap_or(0), from.min(now))
    } else {
        (from, to.unwrap_or(now).min(now))
    };
    let mut chunk: Vec<StoredEvent> = Vec::new();
    let mut end = None;
    for _ in 0..MAX_FILTER_PAGES {
        let events = store
            .room_events(room_id, lower, upper, limit, backward)
            .await
            .map_err(estuary_core::CoreError::from)?;
        let full_page = events.len() as i64 == limit;
        // Newest first when going back.
        let ordered: Vec<StoredEvent> = if backward {
            events.into_iter().rev().collect()
        } else {
            events
        };
        let mut last = None;
        for e in ordered {
            last = Some(e.stream_ordering);
            if filter.matches(&e) {
                chunk.push(e);
                if chunk.len() as i64 == limit {
                    break;
                }
            }
        }
        let Some(last) = last else { break };
        let next = if backward { last - 1 } else { last };
        end = None;
        if chunk.len() as i64 == limit || full_page {
            end = Some(next);
        }
        if chunk.len() as i64 == limit || !full_page {
            break;
        }
        if backward {
            upper = next;
        } else {
            lower = next;
        }
    }
    // Spec: with lazy loading, the member events of the chunk's senders.
    let mut member_state = Vec::new();
    if filter.lazy_load_members {
        let senders: BTreeSet<&str> = chunk.iter().map(|e| e.sender.as_str()).collect();
        for (user, (_, e)) in state.core.rooms.members(room_id).await?.iter() {
            if senders.contains(user.as_str()) {
                member_state.push(client_event(e, true));
            }
        }
    }
    let mut out = json!({
        "chunk": crate::relations::for_client(&state, caller, &chunk, true, visible_to).await?,
        "start": token(from),
        "state": member_state,
    });
    if let Some(end) = end {
        out["end"] = json!(token(end));
    }
    Ok(Json(out))
}

pub async fn put_filter(State(state): State<Arc<MatrixState>>, req: Ruma<create_filter::Request>) -> JsonResult {
    let caller = req.caller()?;
    if state.local(&req.body.user_id).as_deref() != Some(caller.localpart.as_str()) {
        return Err(MatrixError::forbidden("You can only create filters for yourself"));
    }
    let json = serde_json::to_string(&req.body.filter).map_err(MatrixError::internal)?;
    let id = state
        .core
        .store
        .add_filter(&caller.localpart, &json)
        .await
        .map_err(estuary_core::CoreError::from)?;
    Ok(Json(json!({ "filter_id": id.to_string() })))
}

pub async fn fetch_filter(State(state): State<Arc<MatrixState>>, req: Ruma<get_filter::Request>) -> JsonResult {
    let caller = req.caller()?;
    if state.local(&req.body.user_id).as_deref() != Some(caller.localpart.as_str()) {
        return Err(MatrixError::forbidden("You can only read your own filters"));
    }
    let id: i64 = req
        .body
        .filter_id
        .parse()
        .map_err(|_| MatrixError::not_found("No such filter"))?;
    let json = state
        .core
        .store
        .filter(&caller.localpart, id)
        .await
        .map_err(estuary_core::CoreError::from)?;
    let json = json.ok_or_else(|| MatrixError::not_found("No such filter"))?;
    Ok(Json(serde_json::from_str(&json).map_err(MatrixError::internal)?))
}
