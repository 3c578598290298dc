//! Push rules (spec: "Push Rules"): the server-default ruleset plus the user's changes, kept
//! in the user's `m.push_rules` account data so sync delivers them to every device.
//! Pushers (push gateways) are not offered yet.

use estuary_core::{Locked, StoredEvent, insert_capped};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::push::{
    delete_pushrule::v3 as delete, get_pushrule::v3 as get_one, get_pushrule_actions::v3 as get_actions,
    get_pushrule_enabled::v3 as get_enabled, get_pushrules_all::v3 as get_all,
    get_pushrules_global_scope::v3 as get_global, set_pushrule::v3 as set, set_pushrule_actions::v3 as set_actions,
    set_pushrule_enabled::v3 as set_enabled,
};
use ruma::push::{Action, FlattenedJson, PushConditionRoomCtx, RuleKind, Ruleset};
use serde_json::{Value, json};

use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

pub const ACCOUNT_DATA_TYPE: &str = "m.push_rules";

/// The user's ruleset: stored, or the server default for a user who never changed it (read
/// through [`rules_of`], the one place that reads the stored rules).
pub async fn ruleset(state: &MatrixState, caller: &Caller) -> Result<Ruleset, MatrixError> {
    Ok(rules_of(state, caller).await?.rules.clone())
}

/// The ruleset of stored `m.push_rules` content, or the server default.
fn ruleset_from(stored: Option<Value>, caller: &Caller) -> Ruleset {
    match stored.and_then(|v| serde_json::from_value::<Ruleset>(v["global"].clone()).ok()) {
        Some(r) => r,
        None => Ruleset::server_default(&caller.user_id),
    }
}

async fn save(state: &MatrixState, caller: &Caller, rules: &Ruleset) -> Result<(), MatrixError> {
    let content = json!({ "global": rules });
    state
        .core
        .account_data
        .set(&caller.localpart, None, ACCOUNT_DATA_TYPE, &content)
        .await?;
    Ok(())
}

fn not_found() -> MatrixError {
    MatrixError::not_found("Push rule not found")
}

/// The JSON of one rule (as the ruleset serialises it), or 404.
fn rule_json(rules: &Ruleset, kind: RuleKind, rule_id: &str) -> Result<Value, MatrixError> {
    let all = serde_json::to_value(rules).map_err(MatrixError::internal)?;
    all[kind.as_str()]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["rule_id"] == rule_id))
        .cloned()
        .ok_or_else(not_found)
}

pub async fn all(State(state): State<Arc<MatrixState>>, req: Ruma<get_all::Request>) -> JsonResult {
    let caller = req.caller()?;
    Ok(Json(json!({ "global": ruleset(&state, caller).await? })))
}

pub async fn global(State(state): State<Arc<MatrixState>>, req: Ruma<get_global::Request>) -> JsonResult {
    let caller = req.caller()?;
    Ok(Json(
        serde_json::to_value(ruleset(&state, caller).await?).map_err(MatrixError::internal)?,
    ))
}

pub async fn one(State(state): State<Arc<MatrixState>>, req: Ruma<get_one::Request>) -> JsonResult {
    let caller = req.caller()?;
    let rules = ruleset(&state, caller).await?;
    Ok(Json(rule_json(&rules, req.body.kind.clone(), &req.body.rule_id)?))
}

pub async fn put(State(state): State<Arc<MatrixState>>, req: Ruma<set::Request>) -> JsonResult {
    let caller = req.caller()?.clone();
    let mut rules = ruleset(&state, &caller).await?;
    let b = req.body;
    rules
        .insert(b.rule, b.after.as_deref(), b.before.as_deref())
        .map_err(|e| MatrixError::invalid_param(e.to_string()))?;
    save(&state, &caller, &rules).await?;
    Ok(Json(json!({})))
}

pub async fn remove(State(state): State<Arc<MatrixState>>, req: Ruma<delete::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mut rules = ruleset(&state, caller).await?;
    rules
        .remove(req.body.kind.clone(), &req.body.rule_id)
        .map_err(|e| match e {
            ruma::push::RemovePushRuleError::NotFound => not_found(),
            other => MatrixError::forbidden(other.to_string()),
        })?;
    save(&state, caller, &rules).await?;
    Ok(Json(json!({})))
}

pub async fn enabled(State(state): State<Arc<MatrixState>>, req: Ruma<get_enabled::Request>) -> JsonResult {
    let caller = req.caller()?;
    let rules = ruleset(&state, caller).await?;
    let rule = rule_json(&rules, req.body.kind.clone(), &req.body.rule_id)?;
    Ok(Json(json!({ "enabled": rule["enabled"] })))
}

pub async fn put_enabled(State(state): State<Arc<MatrixState>>, req: Ruma<set_enabled::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mut rules = ruleset(&state, caller).await?;
    rules
        .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
        .map_err(|_| not_found())?;
    save(&state, caller, &rules).await?;
    Ok(Json(json!({})))
}

pub async fn actions(State(state): State<Arc<MatrixState>>, req: Ruma<get_actions::Request>) -> JsonResult {
    let caller = req.caller()?;
    let rules = ruleset(&state, caller).await?;
    let rule = rule_json(&rules, req.body.kind.clone(), &req.body.rule_id)?;
    Ok(Json(json!({ "actions": rule["actions"] })))
}

pub async fn put_actions(State(state): State<Arc<MatrixState>>, req: Ruma<set_actions::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mut rules = ruleset(&state, caller).await?;
    rules
        .set_actions(req.body.kind.clone(), &req.body.rule_id, req.body.actions.clone())
        .map_err(|_| not_found())?;
    save(&state, caller, &rules).await?;
    Ok(Json(json!({})))
}

/// At most this many unread events are evaluated per room at once; counts stop there.
const MAX_UNREAD_EVALUATED: i64 = 100;

/// Rooms whose unread counts are kept at most (then the memo starts over).
const MEMO_ENTRIES: usize = 100_000;

/// What the push rules made of a user's unread events in a room so far: each event is
/// evaluated once, when a sync first sees it, as Synapse's push actions are. Kept while the
/// read receipt and the ruleset stay the same.
struct Counted {
    read_up_to: i64,
    rules: u64,
    /// The stream position up to which every unread event is counted.
    evaluated_up_to: i64,
    notify: u64,
    highlight: u64,
}

/// Unread counts per (user, room), and what computing them needs again and again: each
/// user's ruleset with its fingerprint, and the events' flattened form. Memory only.
#[derive(Default)]
pub struct UnreadMemo {
    counts: std::sync::Mutex<std::collections::HashMap<(String, String), Counted>>,
    /// Per localpart: the ruleset last made of their stored rules.
    rules: std::sync::Mutex<std::collections::HashMap<String, Arc<Rules>>>,
    /// Per event ID: the client form flattened for the push rules, made once for every
    /// member whose unread events it is among.
    flattened: std::sync::Mutex<std::collections::HashMap<String, Arc<FlattenedJson>>>,
}

/// A ruleset and its [`fingerprint`], as made of the stored `m.push_rules` content (None: the
/// user never changed their rules).
pub struct Rules {
    stored: Option<Value>,
    pub rules: Ruleset,
    pub print: u64,
}

/// Events kept flattened at most (then the memo starts over): a few times what all
/// receivers of a busy server evaluate between two of their syncs.
const FLATTENED_ENTRIES: usize = 4_096;

impl UnreadMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), Counted>> {
        self.counts.locked()
    }

    /// The event's client form, flattened: made once, whoever's rules run on it.
    fn flattened(&self, e: &StoredEvent) -> Option<Arc<FlattenedJson>> {
        if let Some(f) = self.flattened.locked().get(&e.event_id) {
            return Some(f.clone());
        }
        let json = crate::events::client_event(e, true).to_string();
        let raw = ruma::serde::Raw::<Value>::from_json_string(json).ok()?;
        let flat = Arc::new(FlattenedJson::from_raw(&raw));
        insert_capped(
            &mut self.flattened.locked(),
            FLATTENED_ENTRIES,
            e.event_id.clone(),
            flat.clone(),
        );
        Some(flat)
    }
}

/// A fingerprint of a ruleset: counts made under other rules are made again.
pub fn fingerprint(rules: &Ruleset) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(rules).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The user's ruleset ([`ruleset`]) with its fingerprint, remembered while their stored rules
/// stay the same: a sync needs both, and making them (the server default, or parsing the
/// stored rules, then serialising for the fingerprint) costs more than the rest of a small sync.
pub async fn rules_of(state: &MatrixState, caller: &Caller) -> Result<Arc<Rules>, MatrixError> {
    let stored = state
        .core
        .account_data
        .get(&caller.localpart, None, ACCOUNT_DATA_TYPE)
        .await?;
    if let Some(rules) = state.unread.rules.locked().get(&caller.localpart)
        && rules.stored == stored
    {
        return Ok(rules.clone());
    }
    let rules = ruleset_from(stored.clone(), caller);
    let print = fingerprint(&rules);
    let made = Arc::new(Rules { stored, rules, print });
    insert_capped(
        &mut state.unread.rules.locked(),
        MEMO_ENTRIES,
        caller.localpart.clone(),
        made.clone(),
    );
    Ok(made)
}

/// The actions of the first rule that applies to the event (what `Ruleset::get_actions`
/// answers, on an event flattened once for everyone).
async fn actions_of<'r>(rules: &'r Ruleset, event: &FlattenedJson, ctx: &PushConditionRoomCtx) -> &'r [Action] {
    // The user's own events never notify them.
    if event.get_str("sender").is_some_and(|s| s == ctx.user_id) {
        return &[];
    }
    for rule in rules {
        if rule.applies(event, ctx).await {
            return rule.actions();
        }
    }
    &[]
}

/// Every event of a room in `(after, until]`, as a `/sync` read them for its timeline: the
/// unread events among them need no second read.
pub struct Seen {
    pub after: i64,
    pub until: i64,
    pub events: Vec<StoredEvent>,
}

impl Seen {
    /// What `Store::unread_events` answers for `(user, after)`, up to `until`: others' events that
    /// are not state and not redacted, newest first, at most `MAX_UNREAD_EVALUATED`.
    fn unread(&self, user: &str, after: i64) -> Vec<StoredEvent> {
        self.events
            .iter()
            .rev()
            .filter(|e| {
                e.stream_ordering > after && e.sender != user && e.state_key.is_none() && e.redacted_by.is_none()
            })
            .take(usize::try_from(MAX_UNREAD_EVALUATED).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

/// Unread counts of a room (spec: "Receiving notifications"): the user's push rules run on
/// each event after their read receipt; `notify` counts, a highlight tweak highlights.
/// `rules_print` is [`fingerprint`] of `rules`; `seen`, the room's events the caller read
/// already.
pub async fn unread_counts(
    state: &MatrixState,
    caller: &Caller,
    rules: &Ruleset,
    rules_print: u64,
    room_id: &str,
    seen: Option<&Seen>,
) -> Result<(u64, u64), MatrixError> {
    let store = &state.core.store;
    let user = caller.user_id.as_str();
    let read_up_to = state.core.account_data.read_up_to(room_id, user).await?;
    let key = (user.to_owned(), room_id.to_owned());
    let (after, mut notify, mut highlight) = match state.unread.lock().get(&key) {
        Some(c) if c.read_up_to == read_up_to && c.rules == rules_print => (c.evaluated_up_to, c.notify, c.highlight),
        _ => (read_up_to, 0, 0),
    };
    // The unread events after `after`, and the stream position up to which they are all
    // there (every event up to it is committed).
    let unread = |after| async move {
        // What the caller read already, or the room's newest event, may answer without the store.
        if let Some(seen) = seen.filter(|s| s.after <= after) {
            return Ok((seen.unread(user, after), seen.until));
        }
        let committed = state.core.streams.current().events;
        if !state.core.streams.room_events.any_after(room_id, after) {
            return Ok((Vec::new(), committed));
        }
        // The room's newest events, when memory holds all of them after `after`.
        if let Some(events) = state.core.rooms.recent_events(room_id, after, committed, usize::MAX) {
            let kept = Seen {
                after,
                until: committed,
                events,
            };
            return Ok((kept.unread(user, after), committed));
        }
        let events = store
            .unread_events(room_id, user, after, MAX_UNREAD_EVALUATED)
            .await
            .map_err(estuary_core::CoreError::from)?;
        Ok::<_, MatrixError>((events, committed))
    };
    let (mut events, mut covered) = unread(after).await?;
    // A redaction may have taken back an event counted before: count again.
    if after != read_up_to && events.iter().any(|e| e.kind == "m.room.redaction") {
        (notify, highlight) = (0, 0);
        (events, covered) = unread(read_up_to).await?;
    }
    if let Some(newest) = events.first() {
        let members = state.core.rooms.members(room_id).await?;
        let joined = members.values().filter(|(m, _)| m == "join").count();
        let display_name = members
            .get(user)
            .and_then(|(_, e)| {
                crate::events::client_event(e, false)["content"]["displayname"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| caller.localpart.clone());
        let room = ruma::RoomId::parse(room_id).map_err(MatrixError::internal)?;
        let ctx = PushConditionRoomCtx::new(
            room,
            ruma::UInt::try_from(joined).unwrap_or_default(),
            caller.user_id.clone(),
            display_name,
        );
        for e in &events {
            let Some(flat) = state.unread.flattened(e) else {
                continue;
            };
            let actions = actions_of(rules, &flat, &ctx).await;
            if actions.iter().any(|a| a.should_notify()) {
                notify += 1;
            }
            if actions.iter().any(|a| a.is_highlight()) {
                highlight += 1;
            }
        }
        covered = covered.max(newest.stream_ordering);
    }
    // Remembered even when nothing was unread, so that the next sync of a quiet room does not
    // ask the store again.
    if covered > after {
        let counted = Counted {
            read_up_to,
            rules: rules_print,
            evaluated_up_to: covered,
            notify,
            highlight,
        };
        insert_capped(&mut state.unread.lock(), MEMO_ENTRIES, key, counted);
    }
    Ok((notify, highlight))
}
