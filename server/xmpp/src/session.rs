//! A bound c2s session: resource binding or XEP-0198 resumption, the stanza loop, stream
//! management (acks both ways, resumption), and what becomes of the session when its
//! connection ends.
//!
//! A session with resumption enabled outlives a lost connection for `xmpp.sm_resume_seconds`:
//! it stays bound and available, stanzas for it queue, and a new stream of the same account
//! may take it over with `<resume/>`. When that window closes, or the stream ends for good,
//! the messages the client never acknowledged go to the account's other sessions or to
//! offline storage: an acknowledged stanza from the client was handled (and a message stored
//! offline was committed) before the server counted it.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::ReadError;
use xmpp_parsers::bind::{BindQuery, BindResponse};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::Message;
use xmpp_parsers::ns;
use xmpp_parsers::sm::{A, Enable, Enabled, Failed, HandledCountTooHigh, R, Resume, Resumed, StreamId};
use xmpp_parsers::stanza_error::{DefinedCondition as StanzaCondition, ErrorType};
use xmpp_parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};

use crate::c2s::{
    C2s, Finish, INBOX_CAPACITY, Outcome, Reply, Routed, error_reply, new_id, next_element, read_failed, stream_error,
};
use crate::limit::{Budget, Violation};
use crate::wire::Wire;

/// Stanzas sent but not acknowledged that a stream-managed session may hold; a client that
/// never acknowledges is cut off rather than grow the server's memory.
const MAX_UNACKED: usize = 2 * INBOX_CAPACITY;

/// A bound session: what survives its connection while it may be resumed.
pub(crate) struct Live {
    /// Tells this session apart from a later one bound to the same full JID.
    sid: u64,
    full: FullJid,
    inbox: mpsc::Receiver<Routed>,
    /// Kept messages the client has (written, without stream management), to forget.
    delivered: Vec<i64>,
    /// XEP-0352: while inactive, presence updates wait here (the latest per sender).
    inactive: bool,
    held: BTreeMap<String, Element>,
    sm: Option<Sm>,
}

/// XEP-0198 state of a session.
struct Sm {
    id: String,
    /// Stanzas handled from the client (its `h`).
    handled: u32,
    /// Stanzas sent to the client since enable (mod 2^32).
    sent: u32,
    /// Sent and not acknowledged yet, oldest first, with the id a kept message has.
    unacked: VecDeque<(Element, Option<i64>)>,
    /// An `<r/>` is out and unanswered.
    asked: bool,
    /// Requests from a resuming stream for this session (only when resumable).
    takeover: Option<mpsc::Receiver<oneshot::Sender<Live>>>,
}

/// How a stream-managed session resumes elsewhere: its account, and where to ask for it.
pub(crate) struct Resumable {
    bare: String,
    ask: mpsc::Sender<oneshot::Sender<Live>>,
}

/// Why the stanza loop ended.
enum End {
    /// The client closed the stream, or the server ended it with an error.
    Closed,
    /// The connection was lost (read failure, timeout, EOF without a stream footer).
    Lost,
    /// A new session was bound to the same full JID (RFC 6120 §7.7.2.2).
    Replaced,
    /// A stream resuming this session asked for it.
    TakenOver(oneshot::Sender<Live>),
}

fn is_stanza(el: &Element) -> bool {
    matches!(el.name(), "message" | "presence" | "iq") && el.ns() == ns::JABBER_CLIENT
}

/// Availability presence (no type, or unavailable): what CSI may hold back. Subscription
/// requests and errors are not held.
fn is_presence_update(el: &Element) -> bool {
    el.name() == "presence" && el.attr("type").is_none_or(|t| t == "unavailable")
}

impl Live {
    fn bind(c2s: &C2s, full: FullJid) -> Self {
        let (tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let sid = c2s.next_sid();
        // RFC 6120 §7.7.2.2: a new session with the same resource replaces the old one.
        c2s.router.add(&full, tx, sid);
        Self {
            sid,
            full,
            inbox,
            delivered: Vec::new(),
            inactive: false,
            held: BTreeMap::new(),
            sm: None,
        }
    }

    /// Send a stanza; under stream management it is counted and held until acknowledged.
    async fn out<W: Wire>(&mut self, xml: &mut W, el: Element) -> io::Result<()> {
        self.out_kept(xml, el, None).await
    }

    /// Send a stanza the store may keep (`kept`) until the client has it: acknowledged under
    /// stream management, written to the stream otherwise.
    async fn out_kept<W: Wire>(&mut self, xml: &mut W, el: Element, kept: Option<i64>) -> io::Result<()> {
        match &mut self.sm {
            Some(sm) if is_stanza(&el) => {
                sm.unacked.push_back((el.clone(), kept));
                sm.sent = sm.sent.wrapping_add(1);
                xml.send(el).await
            }
            _ => {
                xml.send(el).await?;
                self.delivered.extend(kept);
                Ok(())
            }
        }
    }
}

impl Sm {
    /// The client acknowledged `h` stanzas in all: the kept messages among them go to
    /// `delivered`. Err(sent) when that is more than were sent.
    fn acked(&mut self, h: u32, delivered: &mut Vec<i64>) -> Result<(), u32> {
        let base = self.sent.wrapping_sub(self.unacked.len() as u32);
        let newly = h.wrapping_sub(base) as usize;
        if newly > self.unacked.len() {
            return Err(self.sent);
        }
        delivered.extend(self.unacked.drain(..newly).filter_map(|(_, kept)| kept));
        self.asked = false;
        Ok(())
    }
}

async fn takeover_request(sm: &mut Option<Sm>) -> Option<oneshot::Sender<Live>> {
    match sm.as_mut().and_then(|s| s.takeover.as_mut()) {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// After authentication: bind (or resume), then serve the session until it ends.
///
/// Not an `async fn`: one of those keeps its arguments twice in its future (as given, and
/// moved into the body's bindings), and the stream is the largest part of an idle session.
/// The block below uses the stream where it was captured.
#[allow(clippy::manual_async_fn)]
pub(crate) fn start<'a, W: Wire + 'a>(
    mut xml: W,
    c2s: &'a Arc<C2s>,
    bare: BareJid,
    budget: &'a Budget,
) -> impl Future<Output = io::Result<()>> + Send + 'a {
    async move {
        // Boxed, so that a long-lived session does not keep room for this phase's futures.
        let Some(mut live) = Box::pin(bind(&mut xml, c2s, &bare, budget)).await? else {
            return Ok(());
        };
        let (end, result) = match stanza_loop(&mut xml, c2s, &mut live, budget).await {
            Ok(end) => (Some(end), Ok(())),
            Err(e) => (None, Err(e)),
        };
        match end {
            Some(End::TakenOver(to)) => {
                stream_error(
                    &mut xml,
                    StreamCondition::Conflict,
                    "the session was resumed on another stream",
                )
                .await;
                if let Err(live) = to.send(live) {
                    park(c2s.clone(), live);
                }
            }
            Some(End::Replaced) => {
                if let Some(sm) = &live.sm {
                    c2s.resumable().remove(&sm.id);
                }
            }
            Some(End::Lost) | None if live.sm.as_ref().is_some_and(|s| s.takeover.is_some()) => park(c2s.clone(), live),
            _ => Box::pin(finish(c2s, live)).await,
        }
        result
    }
}

/// Until a resource is bound (or a session resumed): the session, or None when the stream
/// ended first.
async fn bind<W: Wire>(xml: &mut W, c2s: &Arc<C2s>, bare: &BareJid, budget: &Budget) -> io::Result<Option<Live>> {
    let live = loop {
        let Some(el) = Box::pin(next_element(xml, budget)).await else {
            return Ok(None);
        };
        if el.is("resume", ns::SM) {
            match Box::pin(resume(c2s, bare, el)).await {
                Ok((mut live, h)) => {
                    if Box::pin(resumed(xml, &mut live, h)).await? {
                        break live;
                    }
                    Box::pin(finish(c2s, live)).await;
                    return Ok(None);
                }
                Err(condition) => {
                    xml.send(
                        Failed {
                            h: None,
                            error: Some(condition),
                        }
                        .into(),
                    )
                    .await?;
                    continue;
                }
            }
        }
        if el.is("enable", ns::SM) {
            // XEP-0198 §3: only after binding.
            xml.send(
                Failed {
                    h: None,
                    error: Some(StanzaCondition::UnexpectedRequest),
                }
                .into(),
            )
            .await?;
            continue;
        }
        match Iq::try_from(el) {
            Ok(Iq::Set { id, payload, .. }) if payload.is("bind", ns::BIND) => {
                // RFC 6120 §7.6: the server generates a resource when the client asks for none.
                let resource = BindQuery::try_from(payload)
                    .ok()
                    .and_then(|q| q.resource)
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(new_id);
                let Ok(full) = bare.with_resource_str(&resource) else {
                    xml.send(error_reply(id, None, None, ErrorType::Modify, StanzaCondition::BadRequest).into())
                        .await?;
                    continue;
                };
                xml.send(
                    Iq::Result {
                        from: None,
                        to: None,
                        id,
                        payload: Some(BindResponse { jid: full.clone() }.into()),
                    }
                    .into(),
                )
                .await?;
                tracing::info!(jid = %full, "XMPP session bound");
                break Live::bind(c2s, full);
            }
            _ => {
                stream_error(xml, StreamCondition::NotAuthorized, "bind a resource first").await;
                return Ok(None);
            }
        }
    };
    Ok(Some(live))
}

/// Find the session `<resume/>` names, for the same account, and take it over.
async fn resume(c2s: &C2s, bare: &BareJid, el: Element) -> Result<(Live, u32), StanzaCondition> {
    let r = Resume::try_from(el).map_err(|_| StanzaCondition::BadRequest)?;
    let ask = {
        let map = c2s.resumable();
        match map.get(&r.previd.0) {
            Some(s) if s.bare == bare.as_str() => s.ask.clone(),
            _ => return Err(StanzaCondition::ItemNotFound),
        }
    };
    let (tx, rx) = oneshot::channel();
    ask.send(tx).await.map_err(|_| StanzaCondition::ItemNotFound)?;
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(live)) => Ok((live, r.h)),
        _ => Err(StanzaCondition::ItemNotFound),
    }
}

/// Tell the client the session is back, drop what it acknowledged, send again what it did
/// not get. False when its `h` is impossible (the stream is then closed).
async fn resumed<W: Wire>(xml: &mut W, live: &mut Live, h: u32) -> io::Result<bool> {
    let Some(sm) = &mut live.sm else {
        return Ok(false);
    };
    let answer = Resumed {
        h: sm.handled,
        previd: StreamId(sm.id.clone()),
    };
    if let Err(sent) = sm.acked(h, &mut live.delivered) {
        too_high(xml, h, sent).await;
        return Ok(false);
    }
    xml.send(answer.into()).await?;
    tracing::info!(jid = %live.full, "XMPP session resumed");
    for (el, _) in sm.unacked.clone() {
        xml.send(el).await?;
    }
    // CSI state belongs to a stream; the new one starts active.
    live.inactive = false;
    for (_, presence) in std::mem::take(&mut live.held) {
        live.out(xml, presence).await?;
    }
    Ok(true)
}

async fn too_high<W: Wire>(xml: &mut W, h: u32, sent: u32) {
    let error: StreamError = HandledCountTooHigh { h, send_count: sent }.into();
    let _ = xml.send(error.into()).await;
    let _ = xml.shutdown().await;
}

/// A lost stream-managed connection: keep the session for a while, resumable.
fn park(c2s: Arc<C2s>, mut live: Live) {
    let Some(mut requests) = live.sm.as_mut().and_then(|s| s.takeover.take()) else {
        tokio::spawn(async move { finish(&c2s, live).await });
        return;
    };
    tracing::debug!(jid = %live.full, "XMPP session waits for resumption");
    let window = Duration::from_secs(c2s.core.config.xmpp.sm_resume_seconds);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(to) = request else { break };
                    if let Some(sm) = &mut live.sm {
                        sm.takeover = Some(requests);
                    }
                    match to.send(live) {
                        Ok(()) => return,
                        // The resuming stream gave up meanwhile: keep waiting.
                        Err(back) => {
                            live = back;
                            requests = match live.sm.as_mut().and_then(|s| s.takeover.take()) {
                                Some(r) => r,
                                None => break,
                            };
                        }
                    }
                }
                () = &mut deadline => break,
            }
        }
        finish(&c2s, live).await;
    });
}

/// The session is over: watchers see it go, and the messages it never got (unacknowledged,
/// or still queued) go to the account's other sessions or offline.
async fn finish(c2s: &C2s, mut live: Live) {
    if let Some(sm) = &live.sm {
        c2s.resumable().remove(&sm.id);
    }
    // RFC 6121 §4.5.4: watchers see the session go unavailable, whatever ended it; unless
    // a newer session took its full JID meanwhile.
    if c2s.router.is_session(&live.full, live.sid) {
        crate::roster::disconnected(c2s, &live.full).await;
        c2s.router.remove(&live.full, live.sid);
        c2s.muc.gone(&live.full);
    }
    crate::offline::delivered(c2s, &mut live.delivered).await;
    let mut pending: Vec<(Element, Option<i64>)> = live.sm.take().map(|s| s.unacked.into()).unwrap_or_default();
    live.inbox.close();
    while let Ok(routed) = live.inbox.try_recv() {
        pending.push((*routed.el, routed.kept));
    }
    for (el, kept) in pending {
        if el.name() == "message" {
            reroute(c2s, &live.full, el, kept).await;
        }
    }
}

/// A message its session never received: to the account's other sessions, else offline
/// (where a kept one already is). Carbon copies are not rerouted (the original went where
/// it should).
async fn reroute(c2s: &C2s, full: &FullJid, el: Element, kept: Option<i64>) {
    if el.has_ns(crate::carbons::NS)
        || el
            .children()
            .any(|c| c.ns() == crate::carbons::NS && matches!(c.name(), "sent" | "received"))
    {
        return;
    }
    let Ok(msg) = Message::try_from(el) else { return };
    let bare: Jid = full.to_bare().into();
    let el: Element = msg.clone().into();
    if !c2s.router.deliver_message(&bare, &el, &msg.type_, kept).is_empty() || kept.is_some() {
        return;
    }
    if crate::offline::storable(&msg)
        && let Some(node) = full.node()
        && crate::offline::store(c2s, node.as_str(), &msg).await.is_err()
    {
        tracing::warn!(jid = %full, "a message its session never received could not be kept");
    }
}

/// Stanzas handled up to a commit and not finished (`Outcome::Later`), in the order they came.
type Unfinished<'a> = FuturesOrdered<Finish<'a>>;

/// Most unfinished stanzas of a session: beyond, it reads no more until the oldest is done.
const MAX_UNFINISHED: usize = 32;

impl Live {
    /// A stanza from the client is handled (XEP-0198 counts it), with its answer if any.
    async fn handled<W: Wire>(&mut self, xml: &mut W, reply: Option<Element>) -> io::Result<()> {
        if let Some(sm) = &mut self.sm {
            sm.handled = sm.handled.wrapping_add(1);
        }
        match reply {
            Some(reply) => self.out(xml, reply).await,
            None => Ok(()),
        }
    }

    /// Finish every unfinished stanza, in order.
    async fn finish_all<W: Wire>(&mut self, xml: &mut W, unfinished: &mut Unfinished<'_>) -> io::Result<()> {
        while let Some(last) = unfinished.next().await {
            self.handled(xml, last.await).await?;
        }
        Ok(())
    }
}

async fn stanza_loop<W: Wire>(xml: &mut W, c2s: &C2s, live: &mut Live, budget: &Budget) -> io::Result<End> {
    let mut unfinished = Unfinished::new();
    let end = serve_stanzas(xml, c2s, live, budget, &mut unfinished).await;
    // However the loop ended, what was handled up to a commit is finished: its messages are
    // delivered. Answers that cannot be written any more are lost with the stream.
    if Box::pin(live.finish_all(xml, &mut unfinished)).await.is_err() {
        while let Some(last) = unfinished.next().await {
            last.await;
        }
    }
    end
}

/// What woke an idle session.
enum Woken<'a> {
    Read(Option<Result<Element, ReadError>>),
    Finished(Reply<'a>),
    Routed(Option<Routed>),
    TakeOver(Option<oneshot::Sender<Live>>),
}

/// The session's per-stream state that its handlers borrow.
struct Serving<'s, 'a, W> {
    xml: &'s mut W,
    c2s: &'a C2s,
    live: &'s mut Live,
    budget: &'s Budget,
    unfinished: &'s mut Unfinished<'a>,
    domain: &'s Jid,
}

async fn serve_stanzas<'a, W: Wire>(
    xml: &mut W,
    c2s: &'a C2s,
    live: &mut Live,
    budget: &Budget,
    unfinished: &mut Unfinished<'a>,
) -> io::Result<End> {
    let domain = Jid::new(&c2s.domain).map_err(|e| io::Error::other(e.to_string()))?;
    loop {
        // Only this wait lasts while the session is idle; what follows a wake-up (a stanza's
        // handling, a delivery, an answer) is a future of its own, boxed and freed when done,
        // so that an idle session does not keep room for the largest of them.
        let woken = tokio::select! {
            item = xml.next(), if unfinished.len() < MAX_UNFINISHED => Woken::Read(item),
            Some(last) = unfinished.next(), if !unfinished.is_empty() => Woken::Finished(last),
            routed = live.inbox.recv() => Woken::Routed(routed),
            request = takeover_request(&mut live.sm) => Woken::TakeOver(request),
        };
        let serving = Serving {
            xml: &mut *xml,
            c2s,
            live: &mut *live,
            budget,
            unfinished: &mut *unfinished,
            domain: &domain,
        };
        if let Some(end) = Box::pin(serving.woken(woken)).await? {
            return Ok(end);
        }
    }
}

impl<'a, W: Wire> Serving<'_, 'a, W> {
    /// Handle what woke the session; Some(end) when the stream is over.
    async fn woken(self, woken: Woken<'a>) -> io::Result<Option<End>> {
        let Serving {
            xml,
            c2s,
            live,
            budget,
            unfinished,
            domain,
        } = self;
        let item = match woken {
            Woken::Read(item) => item,
            Woken::Finished(last) => {
                live.handled(xml, last.await).await?;
                return Ok(None);
            }
            Woken::Routed(routed) => {
                match routed {
                    Some(Routed { el, .. }) if live.inactive && is_presence_update(&el) => {
                        live.held.insert(el.attr("from").unwrap_or_default().to_owned(), *el);
                    }
                    Some(Routed { el, kept }) => {
                        live.out_kept(xml, *el, kept).await?;
                        if live.inbox.is_empty() {
                            crate::offline::delivered(c2s, &mut live.delivered).await;
                        }
                        if let Some(sm) = &mut live.sm {
                            if sm.unacked.len() > MAX_UNACKED {
                                stream_error(
                                    xml,
                                    StreamCondition::ResourceConstraint,
                                    "too many stanzas not acknowledged",
                                )
                                .await;
                                return Ok(Some(End::Closed));
                            }
                            // One request per burst: when nothing else is waiting.
                            if !sm.asked && !sm.unacked.is_empty() && live.inbox.is_empty() {
                                sm.asked = true;
                                xml.send(R.into()).await?;
                            }
                        }
                    }
                    None => {
                        stream_error(xml, StreamCondition::Conflict, "replaced by a new connection").await;
                        return Ok(Some(End::Replaced));
                    }
                }
                return Ok(None);
            }
            Woken::TakeOver(request) => return Ok(request.map(End::TakenOver)),
        };
        let Some(item) = item else { return Ok(Some(End::Lost)) };
        let el = match item {
            Ok(el) => el,
            Err(ReadError::SoftTimeout) => {
                let ping = Iq::from_get(new_id(), xmpp_parsers::ping::Ping).with_to(live.full.clone().into());
                live.out(xml, ping.into()).await?;
                return Ok(None);
            }
            Err(ReadError::StreamFooterReceived) => {
                let _ = xml.shutdown().await;
                return Ok(Some(End::Closed));
            }
            Err(ReadError::HardError(e))
                if budget.violation() != Violation::None || e.kind() == io::ErrorKind::InvalidData =>
            {
                read_failed(xml, budget, &e).await;
                return Ok(Some(End::Closed));
            }
            Err(ReadError::ParseError(e)) => {
                stream_error(xml, StreamCondition::InvalidXml, &e.to_string()).await;
                return Ok(Some(End::Closed));
            }
            Err(ReadError::HardError(_)) => return Ok(Some(End::Lost)),
        };
        budget.reset();
        // Only messages may pass unfinished ones (their deliveries still go in order): any
        // other stanza or nonza may depend on what came before it being done.
        if el.name() != "message" {
            live.finish_all(xml, unfinished).await?;
        }
        if el.has_ns(ns::SM) {
            if let Some(end) = Box::pin(stream_management(xml, c2s, live, el)).await? {
                return Ok(Some(end));
            }
            return Ok(None);
        }
        if el.is("inactive", ns::CSI) {
            live.inactive = true;
            return Ok(None);
        }
        if el.is("active", ns::CSI) {
            live.inactive = false;
            for (_, presence) in std::mem::take(&mut live.held) {
                live.out(xml, presence).await?;
            }
            return Ok(None);
        }
        let full = live.full.clone();
        // Boxed: the future of one stanza (routing, the store, a room) is large, and an idle
        // session should not keep room for it.
        match Box::pin(crate::c2s::handle_stanza(c2s, el, &full, domain)).await {
            // Counted once served: whatever it stored is committed by now. Behind unfinished
            // stanzas, it waits its turn.
            Outcome::Done(reply) if unfinished.is_empty() => live.handled(xml, reply).await?,
            Outcome::Done(reply) => {
                let last: Reply<'a> = Box::pin(std::future::ready(reply));
                unfinished.push_back(Box::pin(std::future::ready(last)));
            }
            Outcome::Later(finish) => unfinished.push_back(finish),
            Outcome::Last(reply) => {
                live.finish_all(xml, unfinished).await?;
                live.out(xml, reply).await?;
                stream_error(xml, StreamCondition::NotAuthorized, "the account was removed").await;
                return Ok(Some(End::Closed));
            }
            Outcome::Fatal(condition, text) => {
                live.finish_all(xml, unfinished).await?;
                stream_error(xml, condition, &text).await;
                return Ok(Some(End::Closed));
            }
        }
        Ok(None)
    }
}

/// XEP-0198 nonzas on a bound stream; Some(end) when the stream must end.
async fn stream_management<W: Wire>(xml: &mut W, c2s: &C2s, live: &mut Live, el: Element) -> io::Result<Option<End>> {
    match el.name() {
        "enable" => {
            if live.sm.is_some() {
                let failed = Failed {
                    h: None,
                    error: Some(StanzaCondition::UnexpectedRequest),
                };
                xml.send(failed.into()).await?;
                return Ok(None);
            }
            let resume = Enable::try_from(el).is_ok_and(|e| e.resume);
            let id = new_id();
            let takeover = resume.then(|| {
                let (ask, requests) = mpsc::channel(1);
                c2s.resumable().insert(
                    id.clone(),
                    Resumable {
                        bare: live.full.to_bare().to_string(),
                        ask,
                    },
                );
                requests
            });
            let window = u32::try_from(c2s.core.config.xmpp.sm_resume_seconds).unwrap_or(u32::MAX);
            xml.send(
                Enabled {
                    id: Some(StreamId(id.clone())),
                    location: None,
                    max: resume.then_some(window),
                    resume,
                }
                .into(),
            )
            .await?;
            live.sm = Some(Sm {
                id,
                handled: 0,
                sent: 0,
                unacked: VecDeque::new(),
                asked: false,
                takeover,
            });
        }
        "r" => {
            if let Some(sm) = &live.sm {
                xml.send(A::new(sm.handled).into()).await?;
            }
        }
        "a" => {
            let (Some(sm), Ok(a)) = (&mut live.sm, A::try_from(el)) else {
                return Ok(None);
            };
            if let Err(sent) = sm.acked(a.h, &mut live.delivered) {
                too_high(xml, a.h, sent).await;
                return Ok(Some(End::Closed));
            }
            crate::offline::delivered(c2s, &mut live.delivered).await;
        }
        // A <resume/> on a bound stream, or anything else of the namespace.
        _ => {
            let failed = Failed {
                h: None,
                error: Some(StanzaCondition::UnexpectedRequest),
            };
            xml.send(failed.into()).await?;
        }
    }
    Ok(None)
}
