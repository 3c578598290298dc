//! Offline messages (RFC 6121 §8.5.2.2.1, XEP-0160): a chat or normal message for a local
//! account with no available session is kept, stamped with XEP-0203 delay, and handed to the
//! account's next session when it sends initial presence of non-negative priority. A message
//! handed to an online session is kept the same way until the client has it (written to its
//! stream, or acknowledged under XEP-0198), so that a message the server acknowledged
//! survives a crash. Delivery deletes it.

use tokio_xmpp::minidom::Element;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};

use crate::c2s::C2s;

/// Most messages kept for one account; more are refused (the sender gets an error).
pub const LIMIT: i64 = 1000;

const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";

/// XEP-0160 §3: chat and normal messages with something to read in them (a chat-state
/// notification alone is stale by the time anyone reads it).
pub fn storable(msg: &Message) -> bool {
    matches!(msg.type_, MessageType::Chat | MessageType::Normal)
        && (!msg.bodies.is_empty() || !msg.subjects.is_empty() || msg.payloads.iter().any(|p| p.ns() != CHAT_STATES))
}

/// Now to the millisecond: XEP-0082 allows any fraction, but clients parse at most six digits
/// (slixmpp refuses nanoseconds).
fn stamp_now() -> chrono::DateTime<chrono::FixedOffset> {
    use chrono::Timelike;
    let now = crate::c2s::utc_now();
    let millis = now.nanosecond() / 1_000_000 * 1_000_000;
    now.with_nanosecond(millis).unwrap_or(now).fixed_offset()
}

/// Why a message could not be kept.
pub enum Refused {
    /// No such (active) account.
    NoAccount,
    /// The account holds [`LIMIT`] messages already.
    Full,
    Store,
}

/// The stanza as kept: with a delay stamp of now (a stanza kept twice keeps its first).
fn as_kept(c2s: &C2s, msg: &Message) -> String {
    let mut msg = msg.clone();
    if !msg.payloads.iter().any(|p| p.is("delay", xmpp_parsers::ns::DELAY)) {
        msg.payloads.push(
            Delay {
                from: Jid::new(&c2s.domain).ok(),
                stamp: xmpp_parsers::date::DateTime(stamp_now()),
                data: Some("Offline Storage".into()),
            }
            .into(),
        );
    }
    String::from(&Element::from(msg))
}

/// Keep `msg` for `localpart`, which has no session to take it. Durable when this returns Ok.
pub async fn store(c2s: &C2s, localpart: &str, msg: &Message) -> Result<(), Refused> {
    match c2s.core.accounts.find(localpart).await {
        Ok(Some(a)) if a.is_active() => {}
        Ok(_) => return Err(Refused::NoAccount),
        Err(_) => return Err(Refused::Store),
    }
    match c2s.core.store.offline_push(localpart, &as_kept(c2s, msg), LIMIT).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Refused::Full),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep an offline message");
            Err(Refused::Store)
        }
    }
}

/// Keep a message for `localpart` while its sessions are handed it; its id. None when the
/// store fails (the message then travels in memory only).
pub async fn keep(c2s: &C2s, localpart: &str, msg: &Message) -> Option<i64> {
    match c2s.core.store.offline_add(localpart, &as_kept(c2s, msg)).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a message in flight");
            None
        }
    }
}

/// Hand the account's kept messages to this session (through its inbox, so they follow
/// whatever the session was already sent). Each stays kept until the session has it.
pub async fn deliver(c2s: &C2s, full: &FullJid) {
    let Some(localpart) = full.node() else { return };
    let kept = match c2s.core.store.offline_list(localpart.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read offline messages");
            return;
        }
    };
    for (id, text) in kept {
        match text.parse::<Element>() {
            // Not taken (the session went, or is not keeping up): it waits for the next one.
            Ok(el) => {
                if !c2s.router.deliver_kept(full, el, id) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "a kept message does not parse; dropped");
                let _ = c2s.core.store.offline_delete(&[id]).await;
            }
        }
    }
}

/// The client has these kept messages: forget them.
pub async fn delivered(c2s: &C2s, ids: &mut Vec<i64>) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = c2s.core.store.offline_delete(ids).await {
        tracing::warn!(error = %e, "cannot forget delivered messages; they may arrive again");
    }
    ids.clear();
}
