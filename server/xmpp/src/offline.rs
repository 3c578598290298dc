//! Offline messages (RFC 6121 §8.5.2.2.1, XEP-0160): a chat or normal message for a local
//! account with no available session is kept, stamped with XEP-0203 delay, and handed to the
//! account's next session when it sends initial presence of non-negative priority. Kept until
//! then only: delivery deletes it.

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

/// Keep `msg` for `localpart`, with a delay stamp of now. Durable when this returns Ok.
pub async fn store(c2s: &C2s, localpart: &str, msg: &Message) -> Result<(), Refused> {
    match c2s.core.accounts.find(localpart).await {
        Ok(Some(a)) if a.is_active() => {}
        Ok(_) => return Err(Refused::NoAccount),
        Err(_) => return Err(Refused::Store),
    }
    let mut msg = msg.clone();
    // A stanza kept twice (rerouted after a lost session) keeps its first stamp.
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
    let text = String::from(&Element::from(msg));
    match c2s.core.store.offline_push(localpart, &text, LIMIT).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refused::Full),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep an offline message");
            Err(Refused::Store)
        }
    }
}

/// Hand the account's offline messages to this session (through its inbox, so they follow
/// whatever the session was already sent).
pub async fn deliver(c2s: &C2s, full: &FullJid) {
    let Some(localpart) = full.node() else { return };
    let stanzas = match c2s.core.store.offline_take(localpart.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read offline messages");
            return;
        }
    };
    let me: Jid = full.clone().into();
    for text in stanzas {
        match text.parse::<Element>() {
            Ok(el) => {
                if !c2s.router.deliver(&me, &el) {
                    // The session went away meanwhile: keep it for the next one.
                    if let Ok(msg) = Message::try_from(el) {
                        let _ = store(c2s, localpart.as_str(), &msg).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "an offline message does not parse; dropped"),
        }
    }
}
