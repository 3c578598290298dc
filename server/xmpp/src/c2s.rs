//! XMPP client-to-server streams (RFC 6120): STARTTLS (required) or direct TLS (XEP-0368),
//! SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN; over TLS only), resource binding, and the stanza
//! loop. Accounts and passwords are the ones Matrix uses: one account, two protocols.
//!
//! Served today: XEP-0199 ping, XEP-0092 version, XEP-0202 time, XEP-0012 uptime, disco of the server,
//! the roster with presence subscriptions and broadcast (`roster`), vCard on the shared
//! profile (`vcard`, `avatar`), carbons (`carbons`), blocking (`blocking`), offline storage
//! (`offline`), stream management with resumption (`session`), entity caps (`caps`), PEP
//! (`pep`), private XML storage (`private`), and `<message/>` and `<iq/>` routing between
//! sessions of local accounts. Other requests get `service-unavailable`; MUC and s2s are
//! still to come (see docs/development).

use estuary_core::Locked;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estuary_core::Core;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{ReadError, Timeouts, accept_stream};
use xmpp_parsers::bind::BindFeature;
use xmpp_parsers::data_forms::DataForm;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::ns;
use xmpp_parsers::sasl::{
    Auth, Challenge, DefinedCondition as SaslCondition, Failure as SaslFailure, Mechanism as SaslMechanism,
    Response as SaslResponse, Success as SaslSuccess,
};
use xmpp_parsers::stanza_error::{DefinedCondition as StanzaCondition, ErrorType, StanzaError};
use xmpp_parsers::starttls::{Proceed, StartTls};
use xmpp_parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use xmpp_parsers::stream_features::StreamFeatures;

use crate::limit::{self, Budget, Limited, Violation};
use crate::scram::{self, ScramHash, ScramServer, StoredScram};
use crate::stream::ClientStream;
use crate::vcard;
use crate::wire::{self, Wire, WsWire};

// xmpp-parsers' `component` feature would make every stanza `jabber:component:accept`; it must
// never be on in a build that contains the server (crates.md: the namespace trap).
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(
    str_eq(xmpp_parsers::ns::DEFAULT_NS, xmpp_parsers::ns::JABBER_CLIENT),
    "xmpp-parsers `component` feature is enabled: stanzas would be jabber:component:accept"
);

/// How long a client may take for the TLS handshake.
const TLS_DEADLINE: Duration = Duration::from_secs(15);
/// Failed SASL attempts on one stream before it is closed with policy-violation.
const MAX_AUTH_FAILURES: u32 = 3;

/// One bound resource: the channel feeding its stream, and its last available presence
/// (None until initial presence, and after unavailable).
struct Session {
    resource: String,
    /// Tells this session apart from an earlier or later one with the same resource.
    sid: u64,
    tx: mpsc::Sender<Routed>,
    presence: Option<Element>,
    /// XEP-0280 carbons enabled on this session.
    carbons: bool,
    /// XEP-0191: the session asked for the blocklist, so it gets pushes.
    blocklist: bool,
    /// XEP-0115: its client's features, once known.
    features: Option<crate::caps::Features>,
}

/// A stanza on its way to a session. A message the store keeps until a session has it
/// carries its id (`kept`): the session deletes it once the client has the message.
pub(crate) struct Routed {
    /// Boxed: a session's inbox allocates room for 32 of these up front.
    pub el: Box<Element>,
    pub kept: Option<i64>,
}

/// Stanzas waiting for one session's stream. A client that stops reading while others write
/// to it fills this; further stanzas then count as not delivered (a message bounces) rather
/// than grow the server's memory without bound.
pub(crate) const INBOX_CAPACITY: usize = 2048;

impl Session {
    /// Queue a stanza for this session; false when it is gone or not keeping up.
    fn offer(&self, el: Element) -> bool {
        self.offer_kept(el, None)
    }

    fn offer_kept(&self, el: Element, kept: Option<i64>) -> bool {
        match self.tx.try_send(Routed { el: Box::new(el), kept }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(resource = %self.resource, "c2s session is not reading; stanza not queued");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Connected, bound sessions: bare JID -> resources.
#[derive(Default)]
pub struct Router {
    sessions: Mutex<HashMap<String, Vec<Session>>>,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Session>>> {
        self.sessions.locked()
    }

    pub(crate) fn add(&self, full: &FullJid, tx: mpsc::Sender<Routed>, sid: u64) {
        let mut s = self.lock();
        let list = s.entry(full.to_bare().to_string()).or_default();
        list.retain(|r| r.resource != full.resource().as_str());
        list.push(Session {
            resource: full.resource().to_string(),
            sid,
            tx,
            presence: None,
            carbons: false,
            blocklist: false,
            features: None,
        });
    }

    /// Whether `full` is bound to session `sid` (and not to a newer one).
    pub(crate) fn is_session(&self, full: &FullJid, sid: u64) -> bool {
        self.lock()
            .get(&full.to_bare().to_string())
            .is_some_and(|l| l.iter().any(|r| r.sid == sid && r.resource == full.resource().as_str()))
    }

    /// Unbind session `sid` (a newer session with the same resource stays).
    pub(crate) fn remove(&self, full: &FullJid, sid: u64) {
        let mut s = self.lock();
        let bare = full.to_bare().to_string();
        if let Some(list) = s.get_mut(&bare) {
            list.retain(|r| r.sid != sid);
            if list.is_empty() {
                s.remove(&bare);
            }
        }
    }

    /// RFC 6121 §8.5: deliver a message to a local account. To a bound full JID: that session.
    /// Otherwise (a bare JID, or a resource that is not bound) chat and normal messages go to
    /// the available sessions of highest non-negative priority, headlines to every available
    /// session of non-negative priority, and the rest nowhere. Returns the resources reached.
    /// `kept`: the id under which the store holds the message until a session has it.
    pub fn deliver_message(&self, to: &Jid, stanza: &Element, kind: &MessageType, kept: Option<i64>) -> Vec<String> {
        let s = self.lock();
        let Some(list) = s.get(&to.to_bare().to_string()) else {
            return vec![];
        };
        let send = |r: &Session| r.offer_kept(stanza.clone(), kept).then(|| r.resource.clone());
        if let Some(resource) = to.resource()
            && let Some(r) = list.iter().find(|r| r.resource == resource.as_str())
        {
            return send(r).into_iter().collect();
        }
        let available: Vec<(&Session, i8)> = list
            .iter()
            .filter_map(|r| Some((r, priority(r.presence.as_ref()?))))
            .filter(|(_, p)| *p >= 0)
            .collect();
        let top = available.iter().map(|(_, p)| *p).max();
        match kind {
            MessageType::Chat | MessageType::Normal => available
                .iter()
                .filter(|(_, p)| Some(*p) == top)
                .filter_map(|(r, _)| send(r))
                .collect(),
            MessageType::Headline => available.iter().filter_map(|(r, _)| send(r)).collect(),
            MessageType::Groupchat | MessageType::Error => vec![],
        }
    }

    /// Deliver to a full JID's session, or to every session of a bare JID. Returns false when
    /// no session received it.
    pub fn deliver(&self, to: &Jid, stanza: &Element) -> bool {
        let s = self.lock();
        let Some(list) = s.get(&to.to_bare().to_string()) else {
            return false;
        };
        let mut delivered = false;
        for r in list {
            if to.resource().is_none_or(|res| res.as_str() == r.resource) && r.offer(stanza.clone()) {
                delivered = true;
            }
        }
        delivered
    }

    /// Whether the account has any bound session.
    /// Whether any session is bound at all.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn has_sessions(&self, bare: &BareJid) -> bool {
        self.lock().contains_key(bare.as_str())
    }

    /// Hand a kept message (see [`Routed`]) to one bound session; false when it is not there
    /// or not keeping up.
    pub(crate) fn deliver_kept(&self, full: &FullJid, el: Element, kept: i64) -> bool {
        self.lock()
            .get(&full.to_bare().to_string())
            .and_then(|l| l.iter().find(|r| r.resource == full.resource().as_str()))
            .is_some_and(|r| r.offer_kept(el, Some(kept)))
    }

    /// Deliver to the sessions of an account that sent available presence.
    pub fn deliver_available(&self, bare: &BareJid, stanza: &Element) {
        let s = self.lock();
        for r in s
            .get(&bare.to_string())
            .into_iter()
            .flatten()
            .filter(|r| r.presence.is_some())
        {
            r.offer(stanza.clone());
        }
    }

    /// The full JIDs of an account's bound sessions.
    pub fn resources(&self, bare: &str) -> Vec<Jid> {
        let s = self.lock();
        s.get(bare)
            .into_iter()
            .flatten()
            .filter_map(|r| Jid::new(&format!("{bare}/{}", r.resource)).ok())
            .collect()
    }

    pub fn presence_of(&self, full: &FullJid) -> Option<Element> {
        let s = self.lock();
        s.get(&full.to_bare().to_string())?
            .iter()
            .find(|r| r.resource == full.resource().as_str())?
            .presence
            .clone()
    }

    /// Change one session's state, if it is still bound.
    fn update(&self, full: &FullJid, f: impl FnOnce(&mut Session)) {
        let mut s = self.lock();
        if let Some(r) = s
            .get_mut(&full.to_bare().to_string())
            .and_then(|l| l.iter_mut().find(|r| r.resource == full.resource().as_str()))
        {
            f(r);
        }
    }

    pub fn set_carbons(&self, full: &FullJid, enabled: bool) {
        self.update(full, |r| r.carbons = enabled);
    }

    pub(crate) fn set_features(&self, full: &FullJid, features: crate::caps::Features) {
        self.update(full, |r| r.features = Some(features));
    }

    /// The sessions of `bare` whose clients support `feature` (XEP-0115).
    pub(crate) fn sessions_with(&self, bare: &BareJid, feature: &str) -> Vec<FullJid> {
        self.lock()
            .get(bare.as_str())
            .into_iter()
            .flatten()
            .filter(|r| r.features.as_ref().is_some_and(|f| f.contains(feature)))
            .filter_map(|r| bare.with_resource_str(&r.resource).ok())
            .collect()
    }

    /// Whether this session's client supports `feature`.
    pub(crate) fn session_has(&self, full: &FullJid, feature: &str) -> bool {
        self.lock()
            .get(full.to_bare().as_str())
            .and_then(|l| l.iter().find(|r| r.resource == full.resource().as_str()))
            .is_some_and(|r| r.features.as_ref().is_some_and(|f| f.contains(feature)))
    }

    pub fn set_blocklist_interest(&self, full: &FullJid) {
        self.update(full, |r| r.blocklist = true);
    }

    /// Send `make(full JID)` to each session of `bare` with carbons enabled, but `except`.
    pub fn deliver_carbons(&self, bare: &BareJid, except: &[String], make: impl Fn(Jid) -> Element) {
        self.deliver_where(bare, |r| r.carbons && !except.contains(&r.resource), make);
    }

    /// Send `make(full JID)` to each session of `bare` that asked for the blocklist.
    pub fn deliver_blocklist_push(&self, bare: &BareJid, make: impl Fn(Jid) -> Element) {
        self.deliver_where(bare, |r| r.blocklist, make);
    }

    fn deliver_where(&self, bare: &BareJid, pred: impl Fn(&Session) -> bool, make: impl Fn(Jid) -> Element) {
        let s = self.lock();
        for r in s.get(&bare.to_string()).into_iter().flatten() {
            if pred(r)
                && let Ok(full) = bare.with_resource_str(&r.resource)
            {
                r.offer(make(full.into()));
            }
        }
    }

    pub fn set_presence(&self, full: &FullJid, presence: Option<Element>) {
        self.update(full, |r| r.presence = presence);
    }

    /// (full JID, last presence) of each available session of an account.
    pub fn available_presences(&self, bare: &BareJid) -> Vec<(Jid, Element)> {
        let s = self.lock();
        s.get(&bare.to_string())
            .into_iter()
            .flatten()
            .filter_map(|r| Some((Jid::new(&format!("{bare}/{}", r.resource)).ok()?, r.presence.clone()?)))
            .collect()
    }
}

/// The `<priority/>` of an available presence (RFC 6121 §4.7.2.3; 0 when absent or invalid).
pub(crate) fn priority(presence: &Element) -> i8 {
    presence
        .get_child("priority", ns::JABBER_CLIENT)
        .and_then(|p| p.text().trim().parse().ok())
        .unwrap_or(0)
}

/// What every c2s connection shares.
pub struct C2s {
    pub core: Arc<Core>,
    pub domain: String,
    pub(crate) tls: crate::tls::Acceptor,
    pub router: Router,
    /// The XEP-0045 service on `xmpp.muc_domain`.
    pub muc: crate::muc::Muc,
    /// 1:1 chats' DM rooms.
    pub(crate) direct: crate::direct::Direct,
    /// Secret for the fake SCRAM salts of unknown users (stable for the process's life).
    fake_salt_key: [u8; 32],
    /// The server's disco#info, with the XEP-0157 contact form from `[contact]`.
    disco_info: DiscoInfoResult,
    /// Its XEP-0115 capabilities (the hash of `disco_info`), offered as a stream feature.
    caps: xmpp_parsers::caps::Caps,
    /// For XEP-0012 server uptime.
    started: std::time::Instant,
    /// Group commit for messages kept until delivered.
    pub(crate) keeper: crate::offline::Keeper,
    /// Held while a presence subscription changes state (RFC 6121 §3): the change reads and
    /// writes two rosters.
    pub(crate) subscriptions: tokio::sync::Mutex<()>,
    /// XEP-0115 capabilities of the clients.
    pub(crate) client_caps: crate::caps::Known,
    /// XEP-0191 blocklists, read once per change.
    pub(crate) blocklists: crate::blocking::Cache,
    /// Accounts whose Matrix presence their XMPP watchers see.
    pub(crate) matrix_presence: crate::presence::Shown,
    /// XEP-0198 sessions that may be resumed, by stream management id.
    resumable: Mutex<HashMap<String, crate::session::Resumable>>,
    sessions: std::sync::atomic::AtomicU64,
}

impl C2s {
    pub fn new(core: Arc<Core>, tls: Arc<rustls::ServerConfig>) -> io::Result<Arc<Self>> {
        // XMPP over TLS announces its own ALPN; the HTTP listeners' h2/http1.1 would make
        // rustls refuse clients that offer "xmpp-client".
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
        let mut fake_salt_key = [0u8; 32];
        getrandom::fill(&mut fake_salt_key).map_err(|e| io::Error::other(e.to_string()))?;
        let domain = core.config.xmpp.domain.clone();
        let keeper = crate::offline::Keeper::start(&core);
        let disco_info = server_disco_info(server_info(&core.config.contact));
        let hash =
            xmpp_parsers::caps::hash_caps(&crate::caps::hash_input(&disco_info), xmpp_parsers::hashes::Algo::Sha_1)
                .map_err(io::Error::other)?;
        let caps = xmpp_parsers::caps::Caps::new(CAPS_NODE, hash);
        Ok(Arc::new_cyclic(|c2s| Self {
            muc: crate::muc::Muc::start(&core, c2s.clone()),
            matrix_presence: crate::presence::Shown::start(&core, c2s.clone()),
            core,
            domain,
            tls: crate::tls::Acceptor::new(config),
            router: Router::default(),
            direct: crate::direct::Direct::default(),
            fake_salt_key,
            disco_info,
            caps,
            started: std::time::Instant::now(),
            keeper,
            subscriptions: tokio::sync::Mutex::new(()),
            client_caps: crate::caps::Known::default(),
            blocklists: crate::blocking::Cache::default(),
            resumable: Mutex::default(),
            sessions: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// `node#ver` of the server's caps (XEP-0115 §6.2).
    fn caps_node(&self) -> String {
        crate::caps::node_ver(&self.caps)
    }

    pub(crate) fn resumable(&self) -> std::sync::MutexGuard<'_, HashMap<String, crate::session::Resumable>> {
        self.resumable.locked()
    }

    pub(crate) fn next_sid(&self) -> u64 {
        self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The server's disco#info (XEP-0030), also what its XEP-0115 caps hash covers.
fn server_disco_info(server_info: Option<DataForm>) -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity {
            category: "server".into(),
            type_: "im".into(),
            lang: None,
            name: Some("Estuary".into()),
        }],
        features: BTreeSet::from([
            ns::DISCO_INFO.to_owned(),
            ns::DISCO_ITEMS.to_owned(),
            ns::PING.to_owned(),
            ns::VERSION.to_owned(),
            ns::TIME.to_owned(),
            ns::REGISTER.to_owned(),
            crate::private::NS.to_owned(),
            crate::carbons::NS.to_owned(),
            crate::blocking::NS.to_owned(),
            LAST_ACTIVITY.to_owned(),
            vcard::NS.to_owned(),
            crate::roster::NS.to_owned(),
        ]),
        extensions: server_info.into_iter().collect(),
    }
}

/// XEP-0115 §6.3: the node of the server's own capabilities.
const CAPS_NODE: &str = "https://estuary.invalid/caps";

/// XEP-0157: the `http://jabber.org/network/serverinfo` form of the server's disco#info.
fn server_info(contact: &estuary_core::config::ContactConfig) -> Option<DataForm> {
    let info = xmpp_parsers::server_info::ServerInfo {
        abuse: contact.abuse.clone(),
        admin: contact.admin.clone(),
        feedback: vec![],
        sales: vec![],
        security: contact.security.clone(),
        support: contact.support.clone(),
    };
    let empty = [&info.abuse, &info.admin, &info.security, &info.support]
        .iter()
        .all(|l| l.is_empty());
    (!empty).then(|| {
        let mut form: DataForm = info.into();
        // Fields without a value say nothing, and clients disagree on how to hash them into
        // XEP-0115 caps (slixmpp counts an extra '<'): leave them out.
        form.fields
            .retain(|f| f.var.as_deref() == Some("FORM_TYPE") || !f.values.is_empty());
        form
    })
}

/// XEP-0012 Last Activity.
const LAST_ACTIVITY: &str = "jabber:iq:last";

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `xmpp.c2s_listen`: plaintext stream, STARTTLS required.
    StartTls,
    /// `xmpp.c2s_tls_listen`: TLS from the first byte (XEP-0368).
    DirectTls,
}

/// Accept connections until `stop` flips to true.
pub async fn serve(listener: TcpListener, mode: Mode, c2s: Arc<C2s>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "c2s accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping(&mut stop) => break,
        };
        let c2s = c2s.clone();
        let log_ips = c2s.core.config.privacy.log_ips;
        // Every phase of a connection (TLS, the stream headers, SASL, binding, each stanza) is
        // a boxed future of its own, freed when it is done: an idle session keeps only what its
        // stanza loop holds, not room for the largest state a connection ever passes through.
        tokio::spawn(async move {
            if let Err(e) = Box::pin(connection(tcp, mode, &c2s)).await {
                if log_ips {
                    tracing::debug!(%peer, error = %e, "c2s stream ended with an error");
                } else {
                    tracing::debug!(error = %e, "c2s stream ended with an error");
                }
            }
        });
    }
}

/// One TCP connection: negotiation (STARTTLS or direct TLS, the stream, SASL), then the
/// session. The negotiation's future is freed once it hands over the authenticated stream, so
/// the idle session keeps none of its room.
async fn connection(tcp: TcpStream, mode: Mode, c2s: &Arc<C2s>) -> io::Result<()> {
    // The TLS stream's own scope ends before the negotiation is awaited: otherwise the
    // connection's future keeps room for it (1.2 KB) for the whole session.
    let negotiation = {
        let tls = match mode {
            Mode::StartTls => Box::pin(starttls(tcp, c2s)).await?,
            Mode::DirectTls => tokio::time::timeout(TLS_DEADLINE, Box::pin(c2s.tls.accept(tcp)))
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(tls) = tls else { return Ok(()) };
        Box::pin(negotiate_tls(tls, c2s))
    };
    let Some((xml, bare, budget)) = negotiation.await? else {
        return Ok(());
    };
    Box::pin(crate::session::start(xml, c2s, bare, &budget)).await
}

/// Resolves once shutdown was requested; the watch guard is dropped before any await.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Now, in UTC (chrono's clock feature is not built).
pub(crate) fn utc_now() -> chrono::DateTime<chrono::Utc> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    chrono::DateTime::from_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX), now.subsec_nanos())
        .unwrap_or_default()
}

pub(crate) fn new_id() -> String {
    estuary_core::random::string(16, estuary_core::random::BASE62).unwrap_or_else(|_| "id".to_owned())
}

/// Send a stream error, then the footer, and close.
pub(crate) async fn stream_error<W: Wire>(xml: &mut W, condition: StreamCondition, text: &str) {
    let error = if text.is_empty() {
        StreamError {
            condition,
            texts: BTreeMap::new(),
            application_specific: vec![],
        }
    } else {
        StreamError::new(condition, "en", text)
    };
    let _ = xml.send(error.into()).await;
    let _ = xml.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(ev) = xml.next().await {
            if matches!(ev, Err(ReadError::StreamFooterReceived) | Err(ReadError::HardError(_))) {
                break;
            }
        }
    })
    .await;
}

/// After the reader failed: the stream error the failure deserves, if it deserves one (a
/// transport failure does not: nobody would read it).
pub(crate) async fn read_failed<W: Wire>(xml: &mut W, budget: &Budget, e: &io::Error) {
    match budget.violation() {
        Violation::TooLarge => {
            stream_error(
                xml,
                StreamCondition::PolicyViolation,
                "stanza too large or too deeply nested",
            )
            .await;
        }
        Violation::Restricted => {
            let text = "no comments, processing instructions or DTDs (RFC 6120 §11.1)";
            stream_error(xml, StreamCondition::RestrictedXml, text).await;
        }
        Violation::None if e.kind() == io::ErrorKind::InvalidData => {
            // Entity references other than the predefined five are what the parser reports
            // as restricted XML; the rest is malformed.
            let restricted = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<tokio_xmpp::minidom::rxml::Error>())
                .is_some_and(|x| matches!(x, tokio_xmpp::minidom::rxml::Error::RestrictedXml(_)));
            let condition = if restricted {
                StreamCondition::RestrictedXml
            } else {
                StreamCondition::NotWellFormed
            };
            stream_error(xml, condition, "").await;
        }
        Violation::None => tracing::debug!(error = %e, "c2s read failed"),
    }
}

/// The read buffer under the XML parser. tokio's default is 8 KiB; an idle connection holds
/// it, and stanzas are mostly far smaller. Writes are not buffered here: the XML stream
/// collects each element before it writes, and rustls frames what it is given.
pub(crate) const READ_BUFFER: usize = 2048;

/// A connection's bytes as the XML parser reads them.
pub(crate) type Buffered<S> = BufReader<Limited<S>>;

pub(crate) fn buffered<S: tokio::io::AsyncRead + Unpin>(stream: Limited<S>) -> Buffered<S> {
    BufReader::with_capacity(READ_BUFFER, stream)
}

/// A client's TLS connection.
pub(crate) type TlsStream = crate::tls::TlsStream;

/// Our stream header for a client stream, with a new stream ID.
pub(crate) fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' from='{}' id='{}' version='1.0'>",
        ns::JABBER_CLIENT,
        ns::STREAM,
        crate::wire::escape_attr(domain),
        new_id(),
    )
}

/// Read the client's first stream header and refuse one that is not an XMPP client stream
/// (`invalid-namespace`), or breaks the limits (`policy-violation`, `restricted-xml`), before
/// the parser sees it. True when the stream may go on.
async fn header_ok<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    limited: &mut Limited<S>,
    budget: &Budget,
    c2s: &C2s,
) -> io::Result<bool> {
    use tokio::io::AsyncWriteExt;
    let condition = match limited.peek_header().await {
        Ok(header) if limit::header_namespaces_ok(&header) => return Ok(true),
        Ok(_) => "invalid-namespace",
        Err(_) => match budget.violation() {
            Violation::TooLarge => "policy-violation",
            Violation::Restricted => "restricted-xml",
            // The client went away, or sent bytes that are not XML.
            Violation::None => "not-well-formed",
        },
    };
    let reply = format!(
        "{}<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
        stream_header(&c2s.domain)
    );
    let _ = limited.write_all(reply.as_bytes()).await;
    let _ = limited.shutdown().await;
    Ok(false)
}

/// The plain-text stream up to `<proceed/>` and the TLS handshake; None when the stream ended
/// before (its error, if any, sent).
async fn starttls(tcp: TcpStream, c2s: &Arc<C2s>) -> io::Result<Option<TlsStream>> {
    let budget = Budget::new(limit::UNAUTHENTICATED);
    let mut limited = Limited::new(tcp, budget.clone());
    if !Box::pin(header_ok(&mut limited, &budget, c2s)).await? {
        return Ok(None);
    }
    let stream = buffered(limited);
    let accepted = Box::pin(accept_stream(stream, ns::JABBER_CLIENT, Timeouts::tight())).await?;
    let features = StreamFeatures {
        starttls: Some(StartTls { required: true }),
        limits: Some(limit::advertised(limit::UNAUTHENTICATED)),
        ..Default::default()
    };
    let Some(mut xml) = Box::pin(wire::open(accepted, c2s, features)).await? else {
        return Ok(None);
    };
    match Box::pin(next_element(&mut xml, &budget)).await {
        Some(el) if el.is("starttls", ns::TLS) => {}
        Some(_) => {
            stream_error(&mut xml, StreamCondition::PolicyViolation, "STARTTLS is required").await;
            return Ok(None);
        }
        None => return Ok(None),
    }
    Wire::send(&mut xml, Proceed.into()).await?;
    // The client waits for <proceed/> before the handshake, so no buffered bytes are lost.
    let tcp: TcpStream = xml.into_inner().into_inner().into_inner();
    let tls = tokio::time::timeout(TLS_DEADLINE, Box::pin(c2s.tls.accept(tcp)))
        .await
        .map_err(|_| io::Error::other("TLS handshake timed out"))??;
    Ok(Some(tls))
}

/// What a stream offers for SASL: the mechanisms, and the channel-binding data of its TLS
/// connection (RFC 9266 `tls-exporter`) when the -PLUS variants are offered.
pub(crate) struct SaslOffer {
    mechanisms: Vec<&'static str>,
    channel_binding: Option<Vec<u8>>,
}

impl SaslOffer {
    /// Over TLS: SCRAM (with -PLUS on TLS 1.3, where tls-exporter is safe without further
    /// conditions), and PLAIN when the operator allows it.
    fn tls(c2s: &C2s, tls: &TlsStream) -> Self {
        let channel_binding = tls.channel_binding().map(<[u8]>::to_vec);
        let mut mechanisms = Vec::new();
        if channel_binding.is_some() {
            mechanisms.extend(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]);
        }
        mechanisms.extend(["SCRAM-SHA-256", "SCRAM-SHA-1"]);
        if c2s.core.config.xmpp.sasl_plain {
            mechanisms.push("PLAIN");
        }
        Self {
            mechanisms,
            channel_binding,
        }
    }

    /// Over WebSocket: SCRAM only (the server cannot tell whether a proxy in front used TLS,
    /// and has no TLS channel to bind to).
    fn websocket() -> Self {
        Self {
            mechanisms: vec!["SCRAM-SHA-256", "SCRAM-SHA-1"],
            channel_binding: None,
        }
    }

    /// The first stream's features: SASL (with XEP-0440 channel-binding types) and the
    /// pre-authentication size limit.
    fn features(&self, c2s: &C2s) -> StreamFeatures {
        StreamFeatures {
            sasl_mechanisms: self.mechanisms.iter().map(|m| (*m).to_owned()).collect(),
            sasl_cb: self
                .channel_binding
                .as_ref()
                .map(|_| xmpp_parsers::sasl_cb::SaslChannelBinding {
                    types: vec![xmpp_parsers::sasl_cb::Type::TlsExporter],
                }),
            limits: Some(limit::advertised(limit::UNAUTHENTICATED)),
            // XEP-0077 §4: offered only when anyone may register.
            in_band_registration: c2s.core.config.registration.open,
            ..Default::default()
        }
    }
}

/// A c2s stream over TLS, once authenticated: the restarted stream, its account, its budget.
type Authenticated<W> = Option<(W, BareJid, Budget)>;

/// From the first stream over TLS to the restarted stream after SASL.
async fn negotiate_tls(tls: TlsStream, c2s: &Arc<C2s>) -> io::Result<Authenticated<ClientStream<Limited<TlsStream>>>> {
    let offer = SaslOffer::tls(c2s, &tls);
    let budget = Budget::new(limit::UNAUTHENTICATED);
    let mut limited = Limited::new(tls, budget.clone());
    if !Box::pin(header_ok(&mut limited, &budget, c2s)).await? {
        return Ok(None);
    }
    let Some(xml) = Box::pin(ClientStream::accept(limited, c2s, offer.features(c2s))).await? else {
        return Ok(None);
    };
    let authenticated = Box::pin(authenticate(xml, c2s, &budget, &offer)).await?;
    Ok(authenticated.map(|(xml, bare)| (xml, bare, budget)))
}

/// RFC 7395: a c2s stream over a WebSocket on the HTTP client listener. Only SCRAM is
/// offered: the server cannot tell whether a proxy in front of it used TLS.
pub async fn handle_websocket(socket: axum::extract::ws::WebSocket, c2s: Arc<C2s>) {
    let budget = Budget::new(limit::UNAUTHENTICATED);
    let (reader, frames) = wire::split(socket, budget.clone());
    let result = async {
        let accepted = accept_stream(reader, ns::JABBER_CLIENT, Timeouts::tight()).await?;
        let offer = SaslOffer::websocket();
        let Some(ws) = WsWire::open(accepted, frames, &c2s, offer.features(&c2s)).await? else {
            return Ok(());
        };
        let Some((ws, bare)) = Box::pin(authenticate(ws, &c2s, &budget, &offer)).await? else {
            return Ok(());
        };
        Box::pin(crate::session::start(ws, &c2s, bare, &budget)).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "XMPP WebSocket ended with an error");
    }
}

fn mechanism_name(m: &SaslMechanism) -> &'static str {
    match m {
        SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        SaslMechanism::ScramSha1 => "SCRAM-SHA-1",
        SaslMechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
        SaslMechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
        SaslMechanism::Plain => "PLAIN",
        _ => "",
    }
}

/// The next element from the client. None when the stream is over: ended by the client, or
/// failed (and then answered with the stream error the failure deserves).
pub(crate) async fn next_element<W: Wire>(xml: &mut W, budget: &Budget) -> Option<Element> {
    loop {
        match xml.next().await {
            Some(Ok(el)) => {
                budget.reset();
                return Some(el);
            }
            Some(Err(ReadError::HardError(e))) => {
                read_failed(xml, budget, &e).await;
                return None;
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::StreamFooterReceived)) => {
                // RFC 6120 §4.4: the client's closing tag is answered with ours.
                let _ = xml.shutdown().await;
                return None;
            }
            _ => return None,
        }
    }
}

/// SASL, then the restarted stream (and the authenticated account); None when the stream
/// ended before.
async fn authenticate<W: Wire>(
    mut xml: W,
    c2s: &Arc<C2s>,
    budget: &Budget,
    offer: &SaslOffer,
) -> io::Result<Option<(W, BareJid)>> {
    let mut failures = 0;
    let (localpart, success) = loop {
        let Some(el) = Box::pin(next_element(&mut xml, budget)).await else {
            return Ok(None);
        };
        // XEP-0077: registering an account comes before authenticating with it.
        if crate::register::is_request(&el) {
            if let Some(reply) = Box::pin(crate::register::before_auth(c2s, el)).await {
                xml.send(reply.into()).await?;
            }
            continue;
        }
        if !el.is("auth", ns::SASL) {
            stream_error(&mut xml, StreamCondition::NotAuthorized, "authenticate first").await;
            return Ok(None);
        }
        let outcome = match Auth::try_from(el) {
            Ok(auth) if offer.mechanisms.contains(&mechanism_name(&auth.mechanism)) => {
                Box::pin(sasl_exchange(&mut xml, c2s, auth, offer.channel_binding.as_deref())).await?
            }
            _ => Err(SaslCondition::InvalidMechanism),
        };
        match outcome {
            Ok(done) => break done,
            Err(condition) => {
                failures += 1;
                xml.send(
                    SaslFailure {
                        defined_condition: condition,
                        texts: BTreeMap::new(),
                    }
                    .into(),
                )
                .await?;
                if failures >= MAX_AUTH_FAILURES {
                    stream_error(
                        &mut xml,
                        StreamCondition::PolicyViolation,
                        "too many failed authentications",
                    )
                    .await;
                    return Ok(None);
                }
            }
        }
    };

    let features = StreamFeatures {
        bind: Some(BindFeature { required: false }),
        limits: Some(limit::advertised(limit::AUTHENTICATED)),
        stream_management: Some(xmpp_parsers::sm::StreamManagement { optional: false }),
        others: vec![xmpp_parsers::csi::Feature.into(), c2s.caps.clone().into()],
        ..Default::default()
    };
    let Some(xml) = Box::pin(xml.restart(SaslSuccess { data: success }.into(), c2s, features)).await? else {
        return Ok(None);
    };
    let bare = BareJid::new(&crate::bare_jid(&localpart, &c2s.domain)).map_err(|e| io::Error::other(e.to_string()))?;
    budget.set_limit(limit::AUTHENTICATED);
    Ok(Some((xml, bare)))
}

/// The last step of a stanza's handling: what `Outcome::Done` would hold.
pub(crate) type Reply<'a> = Pin<Box<dyn Future<Output = Option<Element>> + Send + 'a>>;
/// The end of a stanza's handling that waits for a commit, then gives its last step. The
/// waits of several may overlap; their last steps (deliveries) must run one after another,
/// in order.
pub(crate) type Finish<'a> = Pin<Box<dyn Future<Output = Reply<'a>> + Send + 'a>>;

/// What one stanza from the client calls for.
pub(crate) enum Outcome<'a> {
    /// Handled; with the stanza to send back, if any.
    Done(Option<Element>),
    /// Handled up to a commit: a chat message between local accounts, its DM room event
    /// queued. The session finishes these in the order their stanzas came (delivery, carbons,
    /// the answer), and counts each handled only then, so it may read the next message
    /// meanwhile and the room commits them together.
    Later(Finish<'a>),
    /// Handled; send this, then end the stream (the account is gone).
    Last(Element),
    /// The stream must end with this error.
    Fatal(StreamCondition, String),
}

/// Serve one stanza (`iq`, `message` or `presence` in `jabber:client`) from a bound session.
pub(crate) async fn handle_stanza<'a>(c2s: &'a C2s, el: Element, full: &FullJid, domain: &Jid) -> Outcome<'a> {
    if el.ns() != ns::JABBER_CLIENT {
        return Outcome::Fatal(StreamCondition::UnsupportedStanzaType, String::new());
    }
    if let Some(to) = el.attr("to").and_then(|t| Jid::new(t).ok())
        && c2s.muc.serves(&to)
    {
        return match crate::muc::handle(c2s, el, full).await {
            Ok(reply) => Outcome::Done(reply),
            Err(text) => Outcome::Fatal(StreamCondition::InvalidXml, text.to_owned()),
        };
    }
    // What a malformed IQ's error reply needs, taken before parsing consumes the element.
    let iq_attrs = (el.name() == "iq").then(|| ["id", "type", "to"].map(|a| el.attr(a).map(str::to_owned)));
    match el.name() {
        "iq" => match Iq::try_from(el) {
            Ok(iq) => match route_iq(c2s, iq, full).await {
                IqRoute::Routed(routed) => Outcome::Done(routed.map(Into::into)),
                IqRoute::Server(iq) => {
                    if matches!(iq, Iq::Result { .. } | Iq::Error { .. }) {
                        // Answers to the server's own questions (XEP-0115 caps).
                        if let Some(session) = crate::caps::answer(c2s, &iq) {
                            crate::pep::send_last_items(c2s, &session).await;
                        }
                        return Outcome::Done(None);
                    }
                    match crate::register::after_auth(c2s, &iq, full).await {
                        Some(crate::register::After::Reply(reply)) => return Outcome::Done(Some(reply.into())),
                        Some(crate::register::After::Removed(reply)) => return Outcome::Last(reply.into()),
                        None => {}
                    }
                    // Each feature module answers what is its own; the rest is handled here.
                    let mut reply = crate::carbons::handle_iq(c2s, &iq, full);
                    if reply.is_none() {
                        reply = crate::blocking::handle_iq(c2s, &iq, full).await;
                    }
                    if reply.is_none() {
                        reply = vcard::handle(c2s, &iq, full).await;
                    }
                    if reply.is_none() {
                        reply = crate::roster::handle_iq(c2s, &iq, full).await;
                    }
                    if reply.is_none() {
                        reply = crate::pep::handle_iq(c2s, &iq, full).await;
                    }
                    if reply.is_none() {
                        reply = crate::private::handle_iq(c2s, &iq, full).await;
                    }
                    if reply.is_none() {
                        reply = crate::pep::disco_items(c2s, &iq, full).await;
                    }
                    if reply.is_none() && crate::mam::account(c2s, &iq, full).await {
                        return Outcome::Done(None);
                    }
                    Outcome::Done(reply.or_else(|| handle_iq(c2s, iq, full, domain)).map(Into::into))
                }
            },
            // RFC 6120 §8.2.3: a get or set without exactly one payload is a bad request; an
            // IQ that is not even that ends the stream.
            Err(e) => match malformed_iq_reply(&iq_attrs, full) {
                Some(reply) => Outcome::Done(Some(reply.into())),
                None => Outcome::Fatal(StreamCondition::InvalidXml, e.to_string()),
            },
        },
        "message" => {
            let Ok(mut msg) = Message::try_from(el) else {
                return Outcome::Fatal(StreamCondition::InvalidXml, "malformed message".into());
            };
            // RFC 6120 §8.1.2.1: the server stamps the sender.
            msg.from = Some(full.clone().into());
            match begin_message(c2s, msg, full).await {
                Routing::Now(reply) => Outcome::Done(reply),
                Routing::Later(finish) => Outcome::Later(finish),
            }
        }
        "presence" => {
            let Ok(mut presence) = xmpp_parsers::presence::Presence::try_from(el) else {
                return Outcome::Fatal(StreamCondition::InvalidXml, "malformed presence".into());
            };
            presence.from = Some(full.clone().into());
            crate::roster::handle_presence(c2s, full, presence).await;
            Outcome::Done(None)
        }
        _ => Outcome::Fatal(StreamCondition::UnsupportedStanzaType, String::new()),
    }
}

/// Route a message between local sessions. Returns the error stanza to bounce, if any.
pub(crate) async fn route_message(c2s: &C2s, msg: Message, sender: &FullJid) -> Option<Element> {
    match begin_message(c2s, msg, sender).await {
        Routing::Now(reply) => reply,
        Routing::Later(finish) => finish.await.await,
    }
}

/// A message routed at once, or up to the commit of its DM room event.
pub(crate) enum Routing<'a> {
    /// Routed; the error stanza to bounce, if any.
    Now(Option<Element>),
    /// Recorded in its DM room: delivery follows the commit.
    Later(Finish<'a>),
}

/// [`route_message`], in two steps for a message between local accounts: what the session
/// may do before the message's DM room event is committed, and the rest.
pub(crate) async fn begin_message<'a>(c2s: &'a C2s, mut msg: Message, sender: &FullJid) -> Routing<'a> {
    // RFC 6120 §10.3.1: no 'to' means the account's own bare JID.
    let to = msg.to.get_or_insert_with(|| sender.to_bare().into()).clone();
    let local = to.domain().as_str().eq_ignore_ascii_case(&c2s.domain);
    // XEP-0359 §4: stanza-ids are the archive's to give, never a client's.
    msg.payloads.retain(|p| !p.is("stanza-id", crate::muc::NS_SID));
    let refused = if msg.type_ == MessageType::Error {
        None
    } else {
        blocked(c2s, sender, &to).await
    };
    // XEP-0249 to a local account, for one of our rooms: a Matrix invite, which reaches the
    // invitee's sessions as an invitation; an offline invitee gets this message kept.
    if refused.is_none()
        && local
        && to.node().is_some()
        && let Some(room) = msg
            .payloads
            .iter()
            .find(|p| p.is("x", "jabber:x:conference"))
            .and_then(|x| x.attr("jid"))
            .and_then(|j| BareJid::new(j).ok())
        && c2s.muc.serves(&room.clone().into())
        && crate::muc::invite(c2s, sender, &room, to.as_str(), None).await.is_ok()
        && c2s.router.has_sessions(&to.to_bare())
    {
        return Routing::Now(None);
    }
    if refused.is_none()
        && local
        && let Some(node) = to.node()
    {
        // Between two local accounts, the message is also an event of their DM room.
        let recorded = match crate::direct::record(c2s, sender, node.as_str(), &msg).await {
            Ok(recorded) => recorded,
            Err(error) => return Routing::Now(Some(crate::muc::bounce(msg, error).into())),
        };
        let node = node.to_string();
        let sender = sender.clone();
        // The commit is awaited here, the delivery only when the session's turn for it comes.
        #[allow(clippy::async_yields_async)]
        return Routing::Later(Box::pin(async move {
            let committed = recorded.committed().await;
            let deliver: Reply<'a> = Box::pin(deliver_recorded(c2s, msg, sender, to, node, committed));
            deliver
        }));
    }
    Routing::Now(undeliverable(msg, local, refused))
}

/// A message between local accounts, once its DM room events are committed (`committed`:
/// the message event's ID, if it became one): to the recipient's sessions (or offline), with
/// carbons; the bounce if any.
async fn deliver_recorded(
    c2s: &C2s,
    msg: Message,
    sender: FullJid,
    to: Jid,
    node: String,
    committed: Result<Option<String>, StanzaError>,
) -> Option<Element> {
    let mut delivered = msg.clone();
    let archived = match committed {
        Ok(Some(event_id)) => {
            delivered
                .payloads
                .push(crate::direct::stanza_id(&event_id, &to.to_bare()));
            true
        }
        Ok(None) => false,
        Err(error) => return Some(crate::muc::bounce(msg, error).into()),
    };
    match deliver_local(c2s, &to, &node, &delivered, archived).await {
        Ok(reached) => {
            crate::carbons::copy(c2s, &msg, &sender.to_bare(), Some(sender.resource().as_str()), &reached);
            None
        }
        Err(condition) => undeliverable(msg, true, condition),
    }
}

/// The bounce of a message that could not be delivered (`refused`: why; None: no such
/// account, or another server, as s2s is not there yet), if it gets one.
fn undeliverable(msg: Message, local: bool, refused: Option<StanzaCondition>) -> Option<Element> {
    // Errors are never sent for error messages (RFC 6120 §8.3.1), and headlines nobody can
    // receive are dropped (RFC 6121 §8.5.2.2.1).
    if msg.type_ == MessageType::Error || (local && msg.type_ == MessageType::Headline) {
        return None;
    }
    let condition = refused.unwrap_or(if local {
        StanzaCondition::ServiceUnavailable
    } else {
        StanzaCondition::RemoteServerNotFound
    });
    let blocked_by_sender = condition == StanzaCondition::NotAcceptable;
    let mut bounce = msg.clone();
    bounce.type_ = MessageType::Error;
    bounce.from = msg.to;
    bounce.to = msg.from;
    bounce.payloads.push(
        StanzaError {
            type_: ErrorType::Cancel,
            by: None,
            defined_condition: condition,
            texts: BTreeMap::new(),
            other: blocked_by_sender.then(blocked_error),
        }
        .into(),
    );
    Some(bounce.into())
}

/// Hand a message to a local account's sessions, or keep it for the next one (RFC 6121
/// §8.5.2.2.1). Ok with the resources it reached (none when kept); Err when it could be
/// neither, with the condition to bounce it with (None: no such account).
///
/// A message `archived` as an event of a DM room is durable there (and in the recipient's
/// MAM archive), so it is not also kept while its sessions are handed it. A session that
/// ends without it still passes it on (to other sessions, else offline).
pub(crate) async fn deliver_local(
    c2s: &C2s,
    to: &Jid,
    node: &str,
    msg: &Message,
    archived: bool,
) -> Result<Vec<String>, Option<StanzaCondition>> {
    let element: Element = msg.clone().into();
    // Kept in the store until a session has it: once counted as handled (XEP-0198), a
    // message survives a crash. An account with no session is handled below.
    let kept = if !archived && crate::offline::storable(msg) && c2s.router.has_sessions(&to.to_bare()) {
        crate::offline::keep(c2s, node, &element).await
    } else {
        None
    };
    let reached = c2s.router.deliver_message(to, &element, &msg.type_, kept);
    if !reached.is_empty() || kept.is_some() {
        // Reaching nobody, a kept message waits offline.
        return Ok(reached);
    }
    if !crate::offline::storable(msg) {
        return Err(None);
    }
    match crate::offline::store(c2s, node, msg).await {
        Ok(()) => Ok(vec![]),
        Err(crate::offline::Refused::Full) => Err(Some(StanzaCondition::ResourceConstraint)),
        Err(crate::offline::Refused::Store) => Err(Some(StanzaCondition::InternalServerError)),
        Err(crate::offline::Refused::NoAccount) => Err(None),
    }
}

/// XEP-0191 §3.5's application condition: the sender itself blocked the recipient.
fn blocked_error() -> Element {
    Element::builder("blocked", "urn:xmpp:blocking:errors").build()
}

/// XEP-0191 §3.5: the sender blocked the recipient (`not-acceptable`, so its client can say
/// why), or a local recipient blocked the sender (`service-unavailable`, as if nobody were
/// there).
pub(crate) async fn blocked(c2s: &C2s, sender: &FullJid, to: &Jid) -> Option<StanzaCondition> {
    blocked_between(c2s, &sender.clone().into(), to).await
}

/// [`blocked`] for a stanza from any JID of a local account (a session, or its bare JID).
pub(crate) async fn blocked_between(c2s: &C2s, from: &Jid, to: &Jid) -> Option<StanzaCondition> {
    let own = from.node()?.as_str();
    if crate::blocking::blocks(c2s, own, to).await {
        return Some(StanzaCondition::NotAcceptable);
    }
    if to.domain().as_str().eq_ignore_ascii_case(&c2s.domain)
        && let Some(node) = to.node()
        && crate::blocking::blocks(c2s, node.as_str(), from).await
    {
        return Some(StanzaCondition::ServiceUnavailable);
    }
    None
}

/// The `bad-request` answer to a get or set IQ that xmpp-parsers refused (no payload, or
/// more than one); None when the IQ has no id or is not a request.
fn malformed_iq_reply(attrs: &Option<[Option<String>; 3]>, full: &FullJid) -> Option<Iq> {
    let [id, type_, to] = attrs.as_ref()?;
    let id = id.as_deref().filter(|id| !id.is_empty())?;
    if !matches!(type_.as_deref(), Some("get" | "set")) {
        return None;
    }
    let to = to.as_deref().and_then(|t| Jid::new(t).ok());
    Some(error_reply(
        id.to_owned(),
        to,
        Some(full.clone().into()),
        ErrorType::Modify,
        StanzaCondition::BadRequest,
    ))
}

/// Where an IQ from a client goes.
enum IqRoute {
    /// The server answers: addressed to it, or to an account (which the server answers for).
    Server(Iq),
    /// Sent on to a session or dropped; with the error to return when it could not be delivered.
    Routed(Option<Iq>),
}

/// RFC 6120 §10.5.3.1 and §10.4: an IQ for the full JID of a local account belongs to that
/// session, and one for another server to that server; neither is the server's to answer.
async fn route_iq(c2s: &C2s, mut iq: Iq, full: &FullJid) -> IqRoute {
    let (from, to, id) = match &mut iq {
        Iq::Get { from, to, id, .. }
        | Iq::Set { from, to, id, .. }
        | Iq::Result { from, to, id, .. }
        | Iq::Error { from, to, id, .. } => (from, to.clone(), id.clone()),
    };
    let Some(to) = to else {
        return IqRoute::Server(iq);
    };
    let local = to.domain().as_str().eq_ignore_ascii_case(&c2s.domain);
    if local && (to.resource().is_none() || to.node().is_none()) {
        return IqRoute::Server(iq);
    }
    // RFC 6120 §8.1.2.1: the server stamps the sender.
    *from = Some(full.clone().into());
    let request = matches!(iq, Iq::Get { .. } | Iq::Set { .. });
    let refused = if request { blocked(c2s, full, &to).await } else { None };
    if let Some(condition) = refused {
        return IqRoute::Routed(Some(error_reply(
            id,
            Some(to),
            Some(full.clone().into()),
            ErrorType::Cancel,
            condition,
        )));
    }
    if local && c2s.router.deliver(&to, &Element::from(iq)) {
        return IqRoute::Routed(None);
    }
    // Results and errors that cannot be delivered are dropped (§8.2.3: never answer them).
    if !request {
        return IqRoute::Routed(None);
    }
    // No such session (local), or no s2s yet (remote).
    let condition = if local {
        StanzaCondition::ServiceUnavailable
    } else {
        StanzaCondition::RemoteServerNotFound
    };
    IqRoute::Routed(Some(error_reply(
        id,
        Some(to),
        Some(full.clone().into()),
        ErrorType::Cancel,
        condition,
    )))
}

pub(crate) fn error_reply(
    id: String,
    from: Option<Jid>,
    to: Option<Jid>,
    type_: ErrorType,
    condition: StanzaCondition,
) -> Iq {
    Iq::Error {
        from,
        to,
        id,
        error: StanzaError {
            type_,
            by: None,
            defined_condition: condition,
            texts: BTreeMap::new(),
            other: None,
        },
        payload: None,
    }
}

fn handle_iq(c2s: &C2s, iq: Iq, full: &FullJid, domain: &Jid) -> Option<Iq> {
    let me: Jid = full.clone().into();
    match iq {
        Iq::Get { to, id, payload, .. } => {
            // Addressed to the server, or to the account (which the server answers for).
            let for_server = to
                .as_ref()
                .is_none_or(|t| t == domain || (t.resource().is_none() && t.to_bare() == full.to_bare()));
            if for_server && payload.is("ping", ns::PING) {
                return Some(Iq::Result {
                    from: to,
                    to: Some(me),
                    id,
                    payload: None,
                });
            }
            if for_server && payload.is("query", ns::VERSION) {
                // XEP-0092. The operating system is left out: nothing a client needs, and
                // something an attacker would like.
                let version = xmpp_parsers::version::VersionResult {
                    name: "Estuary".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    os: None,
                };
                return Some(Iq::Result {
                    from: to,
                    to: Some(me),
                    id,
                    payload: Some(version.into()),
                });
            }
            if to.as_ref().is_none_or(|t| t == domain) && payload.is("query", LAST_ACTIVITY) {
                // XEP-0012 §5: asked of the server, the answer is its uptime. (Accounts' last
                // activity is not kept: little metadata.)
                let uptime = Element::builder("query", LAST_ACTIVITY)
                    .attr(
                        tokio_xmpp::minidom::rxml::xml_ncname!("seconds").to_owned(),
                        c2s.started.elapsed().as_secs().to_string(),
                    )
                    .build();
                return Some(Iq::Result {
                    from: to,
                    to: Some(me),
                    id,
                    payload: Some(uptime),
                });
            }
            if for_server && payload.is("time", ns::TIME) {
                // XEP-0202, in UTC: the server's own time zone is nobody's business.
                let time = xmpp_parsers::time::TimeResult {
                    tz_offset: chrono::Offset::fix(&chrono::Utc),
                    utc: utc_now(),
                };
                return Some(Iq::Result {
                    from: to,
                    to: Some(me),
                    id,
                    payload: Some(time.into()),
                });
            }
            let disco_info = payload.is("query", ns::DISCO_INFO);
            // Any local account's bare JID, answered alike whether or not it exists (no
            // probing for accounts): an account and its PEP service.
            let any_account = to.as_ref().is_some_and(|t| {
                t.resource().is_none() && t.node().is_some() && t.domain().as_str().eq_ignore_ascii_case(&c2s.domain)
            });
            if (for_server || any_account) && (disco_info || payload.is("query", ns::DISCO_ITEMS)) {
                // XEP-0030: the only node served is the server's XEP-0115 caps node (whose info
                // is the server's); any other is item-not-found.
                let node = payload.attr("node").map(str::to_owned);
                if node.as_ref().is_some_and(|n| !(disco_info && *n == c2s.caps_node())) {
                    return Some(error_reply(
                        id,
                        to,
                        Some(me),
                        ErrorType::Cancel,
                        StanzaCondition::ItemNotFound,
                    ));
                }
                let account = to.as_ref().is_some_and(|t| t != domain);
                let result: Element = if !disco_info {
                    // The server's services (the MUC); an account lists no items.
                    let items = match (account, Jid::new(&c2s.muc.domain)) {
                        (false, Ok(jid)) => vec![xmpp_parsers::disco::Item {
                            jid,
                            node: None,
                            name: Some("Chatrooms".into()),
                        }],
                        _ => vec![],
                    };
                    DiscoItemsResult {
                        node: None,
                        items,
                        rsm: None,
                    }
                    .into()
                } else if account {
                    // §3.1 on an account's bare JID, answered by the server for the account.
                    let mut features = BTreeSet::from([ns::DISCO_INFO.to_owned(), ns::DISCO_ITEMS.to_owned()]);
                    features.extend(crate::pep::FEATURES.iter().map(|f| (*f).to_owned()));
                    features.insert(crate::avatar::CONVERSION.to_owned());
                    features.extend(crate::private::FEATURES.iter().map(|f| (*f).to_owned()));
                    features.insert(crate::mam::NS_MAM.to_owned());
                    features.insert(crate::mam::NS_MAM_EXTENDED.to_owned());
                    DiscoInfoResult {
                        node: None,
                        identities: vec![
                            Identity {
                                category: "account".into(),
                                type_: "registered".into(),
                                lang: None,
                                name: None,
                            },
                            // XEP-0163 §6.1: the account is a PEP service.
                            Identity {
                                category: "pubsub".into(),
                                type_: "pep".into(),
                                lang: None,
                                name: None,
                            },
                        ],
                        features,
                        extensions: vec![],
                    }
                    .into()
                } else {
                    let mut info = c2s.disco_info.clone();
                    info.node = node;
                    info.into()
                };
                return Some(Iq::Result {
                    from: to,
                    to: Some(me),
                    id,
                    payload: Some(result),
                });
            }
            Some(error_reply(
                id,
                to,
                Some(me),
                ErrorType::Cancel,
                StanzaCondition::ServiceUnavailable,
            ))
        }
        Iq::Set { to, id, .. } => Some(error_reply(
            id,
            to,
            Some(me),
            ErrorType::Cancel,
            StanzaCondition::ServiceUnavailable,
        )),
        // Never answer a result or an error (RFC 6120 §8.2.3).
        Iq::Result { .. } | Iq::Error { .. } => None,
    }
}

/// One SASL exchange. Outer Err: I/O. Inner Err: the SASL failure condition.
async fn sasl_exchange<W: Wire>(
    xml: &mut W,
    c2s: &C2s,
    auth: Auth,
    channel_binding: Option<&[u8]>,
) -> io::Result<Result<(String, Vec<u8>), SaslCondition>> {
    let core = &c2s.core;
    let plus = matches!(
        auth.mechanism,
        SaslMechanism::ScramSha256Plus | SaslMechanism::ScramSha1Plus
    );
    let hash = match auth.mechanism {
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha256Plus => ScramHash::Sha256,
        SaslMechanism::ScramSha1 | SaslMechanism::ScramSha1Plus => ScramHash::Sha1,
        SaslMechanism::Plain => {
            // authzid \0 authcid \0 password
            let mut parts = auth.data.split(|b| *b == 0);
            let (Some(authzid), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Ok(Err(SaslCondition::MalformedRequest));
            };
            let user = String::from_utf8_lossy(user).to_lowercase();
            let authzid = (!authzid.is_empty()).then(|| String::from_utf8_lossy(authzid).into_owned());
            if let Err(condition) = may_try(c2s, &user, authzid.as_deref()) {
                return Ok(Err(condition));
            }
            let password = String::from_utf8_lossy(pass);
            let ok = core.accounts.check_password(&user, &password).await.unwrap_or(false);
            return Ok(if ok {
                Ok((user, Vec::new()))
            } else {
                Err(SaslCondition::NotAuthorized)
            });
        }
        _ => return Ok(Err(SaslCondition::InvalidMechanism)),
    };
    let first = match scram::parse_client_first(&auth.data) {
        Ok(f) => f,
        Err(_) => return Ok(Err(SaslCondition::MalformedRequest)),
    };
    // RFC 5802 §6: -PLUS binds to our channel (tls-exporter only); plain SCRAM must not
    // claim a binding, and a client saying it would bind had we offered it ("y") while we
    // did offer it is being downgraded by someone in the middle.
    let binding_ok = match (&first.cb, plus) {
        (scram::CbFlag::Bound(kind), true) => kind == "tls-exporter" && channel_binding.is_some(),
        (_, true) | (scram::CbFlag::Bound(_), false) => false,
        (scram::CbFlag::NotOffered, false) => channel_binding.is_none(),
        (scram::CbFlag::None, false) => true,
    };
    if !binding_ok {
        return Ok(Err(SaslCondition::NotAuthorized));
    }
    let user = first.username.to_lowercase();
    if let Err(condition) = may_try(c2s, &user, first.authzid.as_deref()) {
        return Ok(Err(condition));
    }
    // Unknown or deactivated users go through the same exchange with a fake, stable salt and
    // fail at the end, so user names cannot be probed.
    let account = core
        .accounts
        .find(&user)
        .await
        .ok()
        .flatten()
        .filter(|a| a.is_active())
        .and_then(|a| a.password);
    let creds = match &account {
        Some(p) => {
            let keys = if hash == ScramHash::Sha1 {
                &p.scram_sha1
            } else {
                &p.scram_sha256
            };
            StoredScram {
                salt: p.scram_salt.clone(),
                iterations: p.scram_iterations,
                stored_key: keys.stored_key.clone(),
                server_key: keys.server_key.clone(),
            }
        }
        None => StoredScram {
            salt: fake_salt(&c2s.fake_salt_key, &user),
            iterations: estuary_core::password::SCRAM_ITERATIONS,
            stored_key: vec![0; 32],
            server_key: vec![0; 32],
        },
    };
    let (server, server_first) = ScramServer::new(hash, &first, creds, &new_id(), channel_binding);
    xml.send(Challenge { data: server_first }.into()).await?;
    let response = loop {
        match xml.next().await {
            Some(Ok(el)) => break el,
            Some(Err(ReadError::SoftTimeout)) => continue,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended during SASL",
                ));
            }
        }
    };
    if response.is("abort", ns::SASL) {
        return Ok(Err(SaslCondition::Aborted));
    }
    let Ok(response) = SaslResponse::try_from(response) else {
        return Ok(Err(SaslCondition::MalformedRequest));
    };
    Ok(match server.finish(&response.data) {
        Ok(server_final) if account.is_some() => Ok((user, server_final)),
        Ok(_) | Err(scram::ScramError::NotAuthorized) => Err(SaslCondition::NotAuthorized),
        Err(_) => Err(SaslCondition::MalformedRequest),
    })
}

/// Before checking a password: an authzid other than the user's own JID is refused (no
/// acting for others), and so is a user over the login rate limit.
fn may_try(c2s: &C2s, user: &str, authzid: Option<&str>) -> Result<(), SaslCondition> {
    if authzid.is_some_and(|a| a.to_lowercase() != crate::bare_jid(user, &c2s.domain)) {
        return Err(SaslCondition::InvalidAuthzid);
    }
    if c2s.core.limits.login.check(&format!("user:{user}")).is_err() {
        return Err(SaslCondition::TemporaryAuthFailure);
    }
    Ok(())
}

/// A salt for an unknown user: the same every time within this process, so repeated probes
/// look like a real account's.
fn fake_salt(key: &[u8; 32], user: &str) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        return vec![0; 16];
    };
    mac.update(user.as_bytes());
    mac.finalize().into_bytes()[..16].to_vec()
}
#[cfg(test)]
mod tests {
    fn future_size<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection's own future lives as long as its session: it must hold the boxed phases,
    /// never room for a stream (a TLS stream is 1.2 KB, the session's stream 2 KB).
    #[test]
    fn a_connections_future_keeps_no_stream() {
        let size = future_size::<tokio::net::TcpStream, super::Mode, &'static std::sync::Arc<super::C2s>, _>(
            super::connection,
        );
        let stream = std::mem::size_of::<super::TlsStream>();
        assert!(size < stream / 2, "connection future {size} B, a TLS stream {stream} B");
    }
}
