//! Offline messages (RFC 6121 §8.5.2.2.1, XEP-0160): a chat or normal message for a local
//! account with no available session is kept, stamped with XEP-0203 delay, and handed to the
//! account's next session when it sends initial presence of non-negative priority. A message
//! handed to an online session is kept the same way until the client has it (written to its
//! stream, or acknowledged under XEP-0198), so that a message the server acknowledged
//! survives a crash; a 1:1 message between local accounts is not, being durable already as an
//! event of their DM room (`c2s::deliver_local`). Delivery deletes it.

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
fn as_kept(c2s: &C2s, stanza: &Element) -> String {
    if stanza.has_child("delay", xmpp_parsers::ns::DELAY) {
        return String::from(stanza);
    }
    let mut el = stanza.clone();
    el.append_child(
        Delay {
            from: Jid::new(&c2s.domain).ok(),
            stamp: xmpp_parsers::date::DateTime(stamp_now()),
            data: Some("Offline Storage".into()),
        }
        .into(),
    );
    String::from(&el)
}

/// Keep `msg` for `localpart`, which has no session to take it. Durable when this returns Ok.
pub async fn store(c2s: &C2s, localpart: &str, msg: &Message) -> Result<(), Refused> {
    match c2s.core.accounts.find(localpart).await {
        Ok(Some(a)) if a.is_active() => {}
        Ok(_) => return Err(Refused::NoAccount),
        Err(_) => return Err(Refused::Store),
    }
    match c2s
        .core
        .store
        .offline_push(localpart, &as_kept(c2s, &msg.clone().into()), LIMIT)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Refused::Full),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep an offline message");
            Err(Refused::Store)
        }
    }
}

/// Keep a message for `localpart` while its sessions are handed it; its id. None when the
/// store fails (the message then travels in memory only). Concurrent keeps share one commit
/// (see [`Keeper`]).
pub async fn keep(c2s: &C2s, localpart: &str, stanza: &Element) -> Option<i64> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job::Keep {
        localpart: localpart.to_owned(),
        stanza: as_kept(c2s, stanza),
        reply,
    };
    if c2s.keeper.jobs.send(job).await.is_err() {
        return None;
    }
    answer.await.ok().flatten()
}

enum Job {
    Keep {
        localpart: String,
        stanza: String,
        reply: tokio::sync::oneshot::Sender<Option<i64>>,
    },
    Forget(Vec<i64>),
}

/// Group commit for messages kept in flight: every keep and forget queued while one
/// transaction commits goes into the next, so concurrent senders share a sync to disk
/// instead of waiting for one each.
pub struct Keeper {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

/// Most jobs in one transaction.
const BATCH: usize = 512;

impl Keeper {
    pub fn start(core: &estuary_core::Core) -> Self {
        let store = core.store.clone();
        let (jobs, mut queue) = tokio::sync::mpsc::channel::<Job>(4 * BATCH);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let mut keep = Vec::new();
                let mut replies = Vec::new();
                let mut forget = Vec::new();
                for job in batch {
                    match job {
                        Job::Keep {
                            localpart,
                            stanza,
                            reply,
                        } => {
                            keep.push((localpart, stanza));
                            replies.push(reply);
                        }
                        Job::Forget(ids) => forget.extend(ids),
                    }
                }
                match store.offline_batch(&keep, &forget).await {
                    Ok(ids) => {
                        for (reply, id) in replies.into_iter().zip(ids) {
                            let _ = reply.send(Some(id));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot keep messages in flight (they travel in memory only)");
                        for reply in replies {
                            let _ = reply.send(None);
                        }
                    }
                }
            }
        });
        Self { jobs }
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

/// The client has these kept messages: forget them (with the next group commit; until then,
/// a crash means they arrive again, which is what at-least-once allows).
pub async fn delivered(c2s: &C2s, ids: &mut Vec<i64>) {
    if ids.is_empty() {
        return;
    }
    if c2s.keeper.jobs.send(Job::Forget(std::mem::take(ids))).await.is_err() {
        tracing::warn!("cannot forget delivered messages; they may arrive again");
    }
}
