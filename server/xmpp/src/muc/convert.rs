//! What an XMPP groupchat message becomes in a Matrix room: a message, a XEP-0308 correction
//! (`m.replace`), XEP-0444 reactions (`m.annotation`), a XEP-0461 reply (`m.in_reply_to`), a
//! XEP-0424 retraction (a redaction), a subject change (`m.room.topic`), or XEP-0085 chat
//! states (typing). The server reads no encrypted content: an OMEMO message becomes a notice.

use std::collections::BTreeSet;
use std::time::Duration;

use estuary_core::rooms::{EventTemplate, Pdu};
use serde_json::{Value, json};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::message::Message;
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType, StanzaError};

use super::{XMPP_DEVICE, stanza_error};
use crate::c2s::C2s;

pub const NS_CORRECT: &str = "urn:xmpp:message-correct:0";
pub const NS_REACTIONS: &str = "urn:xmpp:reactions:0";
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";
pub const NS_CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// How long an XMPP `composing` counts as typing (XEP-0085 lets a client stay silent 30 s).
const TYPING: Duration = Duration::from_secs(30);

/// What a Matrix client sees of an OMEMO message: the server cannot read it.
pub const OMEMO_NOTICE: &str =
    "[This message is end-to-end encrypted with OMEMO for XMPP clients and cannot be shown here.]";

/// Where an OMEMO message's `<encrypted/>` element is kept in the notice's content.
pub const OMEMO_KEY: &str = "org.estuary.xmpp.omemo";

/// OMEMO (legacy and OMEMO 2) payloads.
pub(crate) fn is_omemo(el: &Element) -> bool {
    el.is("encrypted", "eu.siacs.conversations.axolotl") || el.is("encrypted", "urn:xmpp:omemo:2")
}

/// Why a message was refused (small, unlike `StanzaError`).
#[derive(Debug)]
pub(crate) struct Refusal(&'static str);

impl Refusal {
    pub(crate) fn error(&self) -> StanzaError {
        stanza_error(ErrorType::Cancel, Condition::ItemNotFound, Some(self.0))
    }
}

fn not_found(what: &'static str) -> Refusal {
    Refusal(what)
}

fn payload<'a>(msg: &'a Message, name: &str, ns: &str) -> Option<&'a Element> {
    msg.payloads.iter().find(|p| p.is(name, ns))
}

/// `%`, `_` and the escape character itself, escaped for LIKE ... ESCAPE '!'.
fn like_escape(s: &str) -> String {
    s.replace('!', "!!").replace('%', "!%").replace('_', "!_")
}

/// The room event an XMPP message id names: an event ID (the stanza-id everyone saw, and the
/// id of messages from Matrix), or the id or origin-id an XMPP client of one of `senders`
/// (localparts) gave a message it sent.
pub(crate) async fn event_for_id(c2s: &C2s, room_id: &str, senders: &[&str], id: &str) -> Option<String> {
    let event_id = if id.starts_with('$') {
        id.to_owned()
    } else {
        let id = like_escape(id);
        let patterns = [format!("%\n{id}\n%"), format!("%\n{id}")];
        let mut found = None;
        for localpart in senders {
            found = c2s
                .core
                .rooms
                .txn_event_like(localpart, XMPP_DEVICE, [&patterns[0], &patterns[1]])
                .await
                .ok()
                .flatten();
            if found.is_some() {
                break;
            }
        }
        found?
    };
    let e = c2s.core.rooms.event(&event_id).await.ok().flatten()?;
    (e.room_id == room_id).then_some(event_id)
}

/// XEP-0428: the body without the part marked as a fallback for `for_ns` (code points).
fn strip_fallback(msg: &Message, body: &str, for_ns: &str) -> String {
    let Some(fallback) = msg
        .payloads
        .iter()
        .find(|p| p.is("fallback", NS_FALLBACK) && p.attr("for") == Some(for_ns))
    else {
        return body.to_owned();
    };
    let chars: Vec<char> = body.chars().collect();
    let Some(range) = fallback.get_child("body", NS_FALLBACK) else {
        // The whole body is a fallback.
        return String::new();
    };
    let start = range.attr("start").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let end = range
        .attr("end")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(chars.len());
    if start > end || end > chars.len() {
        return body.to_owned();
    }
    chars[..start].iter().chain(&chars[end..]).collect()
}

fn redaction(target: &str) -> Result<EventTemplate, Refusal> {
    let redacts = ruma::EventId::parse(target).map_err(|_| not_found("no such message"))?;
    Ok(EventTemplate {
        kind: "m.room.redaction".into(),
        state_key: None,
        content: json!({}),
        redacts: Some(redacts),
    })
}

/// The events a message asks for, in order (none for what the room does not keep): a
/// groupchat message, or with `peer` (its localpart) a chat message in the DM room of the two,
/// where ids may also name the peer's messages and a subject means nothing.
pub(crate) async fn inbound(
    c2s: &C2s,
    room_id: &str,
    user: &ruma::UserId,
    msg: &Message,
    peer: Option<&str>,
) -> Result<Vec<EventTemplate>, Refusal> {
    let mine = [user.localpart()];
    let both;
    let senders: &[&str] = match peer {
        Some(p) => {
            both = [user.localpart(), p];
            &both
        }
        None => &mine,
    };
    if let Some(retract) = payload(msg, "retract", NS_RETRACT) {
        let id = retract.attr("id").unwrap_or_default();
        let target = event_for_id(c2s, room_id, &mine, id)
            .await
            .ok_or_else(|| not_found("no such message"))?;
        return Ok(vec![redaction(&target)?]);
    }
    if let Some(reactions) = payload(msg, "reactions", NS_REACTIONS) {
        let id = reactions.attr("id").unwrap_or_default();
        let target = event_for_id(c2s, room_id, senders, id)
            .await
            .ok_or_else(|| not_found("no such message"))?;
        let wanted: BTreeSet<String> = reactions
            .children()
            .filter(|r| r.is("reaction", NS_REACTIONS))
            .map(Element::text)
            .filter(|r| !r.is_empty())
            .collect();
        return reaction_changes(c2s, user, &target, &wanted).await;
    }
    let body = msg.bodies.values().next().cloned();
    if let Some(omemo) = msg.payloads.iter().find(|p| is_omemo(p)) {
        // The ciphertext rides along for XMPP clients (live and from the archive).
        return Ok(vec![EventTemplate::message(
            "m.room.message",
            json!({ "msgtype": "m.notice", "body": OMEMO_NOTICE, OMEMO_KEY: String::from(omemo) }),
        )]);
    }
    if let Some(body) = body {
        let (msgtype, text) = match body.strip_prefix("/me ") {
            Some(action) => ("m.emote", action.to_owned()),
            None => ("m.text", body.clone()),
        };
        if let Some(replace) = payload(msg, "replace", NS_CORRECT) {
            // XEP-0308: only one's own message; as m.replace (spec: "Event replacements").
            let id = replace.attr("id").unwrap_or_default();
            let target = event_for_id(c2s, room_id, &mine, id)
                .await
                .ok_or_else(|| not_found("no such message to correct"))?;
            return Ok(vec![EventTemplate::message(
                "m.room.message",
                json!({
                    "msgtype": msgtype,
                    "body": format!("* {text}"),
                    "m.new_content": { "msgtype": msgtype, "body": text },
                    "m.relates_to": { "rel_type": "m.replace", "event_id": target },
                }),
            )]);
        }
        let mut content = json!({ "msgtype": msgtype, "body": text });
        if let Some(reply) = payload(msg, "reply", NS_REPLY) {
            let id = reply.attr("id").unwrap_or_default();
            if let Some(target) = event_for_id(c2s, room_id, senders, id).await {
                let text = strip_fallback(msg, &body, NS_REPLY);
                content["body"] = json!(text.strip_prefix("/me ").unwrap_or(&text).trim_start());
                content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": target } });
            }
        }
        return Ok(vec![EventTemplate::message("m.room.message", content)]);
    }
    if let Some(subject) = msg.subjects.values().next().filter(|_| peer.is_none()) {
        return Ok(vec![EventTemplate::state(
            "m.room.topic",
            "",
            json!({ "topic": subject }),
        )]);
    }
    // XEP-0085 chat states are typing notifications.
    if let Some(state) = msg.payloads.iter().find(|p| p.ns() == NS_CHAT_STATES) {
        let composing = state.name() == "composing";
        c2s.core.typing.set(room_id, user.as_str(), composing.then_some(TYPING));
        if peer.is_some() {
            // The peer's XMPP sessions have it from the stanza itself.
            c2s.direct.tell_typing(room_id, user.as_str(), composing);
        }
    }
    // A XEP-0333 displayed marker is a read receipt.
    if let Some(displayed) = payload(msg, "displayed", NS_MARKERS)
        && let Some(target) = event_for_id(c2s, room_id, senders, displayed.attr("id").unwrap_or_default()).await
    {
        if let Err(e) = c2s
            .core
            .account_data
            .set_receipt(room_id, user.as_str(), "m.read", "", &target)
            .await
        {
            tracing::warn!(error = %e, "a displayed marker was not kept as a receipt");
        }
        if peer.is_some() {
            c2s.direct.tell_read(room_id, user.as_str(), &target);
        }
    }
    Ok(vec![])
}

/// XEP-0444 sends the whole set of a user's reactions to a message; Matrix keeps one
/// `m.reaction` per key. New keys are sent, and dropped ones redacted.
async fn reaction_changes(
    c2s: &C2s,
    user: &ruma::UserId,
    target: &str,
    wanted: &BTreeSet<String>,
) -> Result<Vec<EventTemplate>, Refusal> {
    let mine = reactions_of(&c2s.core, target, user.as_str()).await;
    let mut out = vec![];
    for (event_id, key) in &mine {
        if !wanted.contains(key) {
            out.push(redaction(event_id)?);
        }
    }
    for key in wanted {
        if !mine.iter().any(|(_, k)| k == key) {
            out.push(EventTemplate::message(
                "m.reaction",
                json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } }),
            ));
        }
    }
    Ok(out)
}

/// A user's live reactions to an event: (reaction event ID, key).
pub(crate) async fn reactions_of(core: &estuary_core::Core, target: &str, user: &str) -> Vec<(String, String)> {
    let upto = core.rooms.current_position();
    let events = core
        .store
        .relating_events(target, Some("m.annotation"), Some("m.reaction"), 0, upto, 1000, false)
        .await
        .unwrap_or_default();
    events
        .iter()
        .filter(|e| e.sender == user && e.redacted_by.is_none())
        .filter_map(|e| {
            let content: Value = Pdu::from_stored(e).ok()?.content_value();
            let key = content["m.relates_to"]["key"].as_str()?.to_owned();
            Some((e.event_id.clone(), key))
        })
        .collect()
}

/// XEP-0444: `user`'s whole set of reactions to `target` (leaving out `removed`, a reaction
/// being redacted), naming the target as `shown_id` (the id its XMPP readers know).
pub(crate) async fn reactions_element(
    core: &estuary_core::Core,
    target: &str,
    user: &str,
    removed: Option<&str>,
    shown_id: &str,
) -> Element {
    let mut el = Element::builder("reactions", NS_REACTIONS).attr(xml_ncname!("id").to_owned(), shown_id);
    for (id, key) in reactions_of(core, target, user).await {
        if Some(id.as_str()) != removed {
            el = el.append(Element::builder("reaction", NS_REACTIONS).append(key).build());
        }
    }
    el.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("a%b_c!d"), "a!%b!_c!!d");
    }

    #[test]
    fn fallbacks_are_stripped_by_code_point() {
        let mut msg = Message::new(None);
        let fallback = Element::builder("fallback", NS_FALLBACK)
            .attr(xml_ncname!("for").to_owned(), NS_REPLY)
            .append(
                Element::builder("body", NS_FALLBACK)
                    .attr(tokio_xmpp::minidom::rxml::xml_ncname!("start").to_owned(), "0")
                    .attr(tokio_xmpp::minidom::rxml::xml_ncname!("end").to_owned(), "9")
                    .build(),
            )
            .build();
        msg.payloads.push(fallback);
        assert_eq!(strip_fallback(&msg, "> é quoté\nanswer", NS_REPLY), "\nanswer");
        assert_eq!(strip_fallback(&msg, "short", NS_REPLY), "short");
        assert_eq!(
            strip_fallback(&msg, "> é quoté\nanswer", NS_CORRECT),
            "> é quoté\nanswer"
        );
    }
}
