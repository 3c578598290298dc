//! XEP-0163 Personal Eventing Protocol on XEP-0060: each account is a pubsub service at its
//! bare JID (OMEMO device lists and bundles, bookmarks, avatars...). Nodes are created on first
//! publish; publish-options are preconditions (a node configured otherwise gets
//! `precondition-not-met`); access models open, presence and whitelist (owner only). The
//! owner's sessions and the contacts subscribed to the owner's presence get notifications for
//! the nodes their clients ask for (`node+notify` in XEP-0115 caps), and the last item of each
//! when they come online. Some nodes are views of other data: the avatar nodes (avatar.rs) and
//! the old bookmarks node `storage:bookmarks` (private.rs).

use std::collections::BTreeSet;

use tokio_xmpp::minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::disco::{DiscoItemsResult, Item as DiscoItem};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::ns;
use xmpp_parsers::pubsub::event::{Event, Item as EventItem, Payload as EventPayload};
use xmpp_parsers::pubsub::owner::{Owner, Payload as OwnerPayload};
use xmpp_parsers::pubsub::pubsub::{Item, Items, PubSub, Publish};
use xmpp_parsers::pubsub::{ItemId, NodeName};
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType, StanzaError};

use crate::c2s::{C2s, new_id};
use estuary_core::{PepItem, PepNode};

/// Items kept by a node configured with `max_items = max`.
pub(crate) const MAX_KEPT: i64 = 1000;
const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// The features of an account's PEP service (disco#info on its bare JID).
pub const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// A node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Config {
    access: String,
    persist: bool,
    /// 0 = "max".
    max_items: i64,
}

impl Default for Config {
    /// XEP-0163 §4.2: presence access, persistent, the last item.
    fn default() -> Self {
        Self {
            access: "presence".into(),
            persist: true,
            max_items: 1,
        }
    }
}

impl Config {
    fn of(node: &PepNode) -> Self {
        Self {
            access: node.access_model.clone(),
            persist: node.persist_items,
            max_items: node.max_items,
        }
    }

    fn node(&self, owner: &str, node: &str) -> PepNode {
        PepNode {
            owner: owner.to_owned(),
            node: node.to_owned(),
            access_model: self.access.clone(),
            persist_items: self.persist,
            max_items: self.max_items,
        }
    }

    /// Take the fields of a configuration or publish-options form; Err when a value cannot
    /// be honoured. Fields this server does not know are accepted and ignored.
    fn apply(&mut self, form: &DataForm) -> Result<(), ()> {
        for field in &form.fields {
            let value = field.values.first().map(String::as_str).unwrap_or_default();
            match field.var.as_deref() {
                Some("pubsub#access_model") => match value {
                    "open" | "presence" | "whitelist" => self.access = value.to_owned(),
                    _ => return Err(()),
                },
                Some("pubsub#persist_items") => self.persist = boolean(value)?,
                Some("pubsub#max_items") => {
                    self.max_items = match value {
                        "max" => 0,
                        n => n.parse::<i64>().ok().filter(|n| *n >= 1).ok_or(())?,
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// XEP-0060 §7.1.5: whether the node meets publish-options taken as preconditions.
    fn meets(&self, form: &DataForm) -> bool {
        let mut wanted = self.clone();
        wanted.apply(form).is_ok() && wanted == *self
    }

    fn form(&self) -> DataForm {
        let mut access = Field::new("pubsub#access_model", FieldType::ListSingle).with_value(&self.access);
        access.options = ["open", "presence", "whitelist"]
            .iter()
            .map(|v| xmpp_parsers::data_forms::Option_ {
                label: None,
                value: (*v).to_owned(),
            })
            .collect();
        let max = if self.max_items == 0 {
            "max".to_owned()
        } else {
            self.max_items.to_string()
        };
        DataForm::new(
            DataFormType::Form,
            NODE_CONFIG,
            vec![
                access,
                Field::new("pubsub#persist_items", FieldType::Boolean).with_value(if self.persist { "1" } else { "0" }),
                Field::new("pubsub#max_items", FieldType::TextSingle).with_value(&max),
            ],
        )
    }

    fn keep(&self) -> i64 {
        if self.max_items == 0 {
            MAX_KEPT
        } else {
            self.max_items.min(MAX_KEPT)
        }
    }
}

/// The fixed configuration of a node that is a view of other data and exists for every
/// account: `storage:bookmarks` (XEP-0048 §3), the owner's alone whatever was once stored
/// under that name, as XEP-0223 wants private data kept.
fn view_config(node: &str) -> Option<Config> {
    (node == crate::private::BOOKMARKS_OLD).then(|| Config {
        access: "whitelist".into(),
        persist: true,
        max_items: 1,
    })
}

/// The items of a node that is a view of other data (newest first); None for a node that
/// keeps its own.
async fn view_items(c2s: &C2s, owner: &str, node: &str) -> Option<Vec<PepItem>> {
    if crate::avatar::is_avatar_node(node) {
        Some(crate::avatar::items(c2s, owner, node).await)
    } else if node == crate::private::BOOKMARKS_OLD {
        let storage = crate::private::bookmarks(c2s, owner).await;
        Some(vec![PepItem {
            item_id: crate::private::CURRENT.to_owned(),
            publisher: None,
            payload: String::from(&storage),
        }])
    } else {
        None
    }
}

fn boolean(v: &str) -> Result<bool, ()> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(()),
    }
}

/// A pubsub error with its XEP-0060 application condition.
/// XEP-0060 §7.1.3.5: a payload the node cannot hold.
fn invalid_payload(id: &str, to: &Option<Jid>, me: &Jid) -> Iq {
    error(
        id,
        to,
        me,
        ErrorType::Modify,
        Condition::BadRequest,
        Some("invalid-payload"),
    )
}

/// XEP-0060 §7.1.5: publish-options the node does not meet.
fn precondition_not_met(id: &str, to: &Option<Jid>, me: &Jid) -> Iq {
    error(
        id,
        to,
        me,
        ErrorType::Cancel,
        Condition::Conflict,
        Some("precondition-not-met"),
    )
}

fn error(id: &str, to: &Option<Jid>, me: &Jid, type_: ErrorType, condition: Condition, app: Option<&str>) -> Iq {
    Iq::Error {
        from: to.clone(),
        to: Some(me.clone()),
        id: id.to_owned(),
        error: StanzaError {
            type_,
            by: None,
            defined_condition: condition,
            texts: Default::default(),
            other: app.map(|a| Element::bare(a, ns::PUBSUB_ERRORS)),
        },
        payload: None,
    }
}

fn result(id: &str, to: &Option<Jid>, me: &Jid, payload: Option<Element>) -> Iq {
    Iq::Result {
        from: to.clone(),
        to: Some(me.clone()),
        id: id.to_owned(),
        payload,
    }
}

/// Whether `requester` (a local account, or None for anyone else) may read `owner`'s node.
async fn may_read(c2s: &C2s, owner: &str, access: &str, requester: Option<&str>) -> bool {
    if requester == Some(owner) {
        return true;
    }
    match access {
        "open" => true,
        "presence" => {
            let Some(requester) = requester else { return false };
            let contact = crate::bare_jid(requester, &c2s.domain);
            matches!(
                c2s.core.store.roster_item(owner, &contact).await,
                Ok(Some(item)) if matches!(item.subscription.as_str(), "from" | "both")
            )
        }
        _ => false,
    }
}

/// The error for a read the access model refuses (XEP-0060 §6.5.9).
fn refused_read(id: &str, to: &Option<Jid>, me: &Jid, access: &str) -> Iq {
    if access == "presence" {
        error(
            id,
            to,
            me,
            ErrorType::Auth,
            Condition::NotAuthorized,
            Some("presence-subscription-required"),
        )
    } else {
        error(
            id,
            to,
            me,
            ErrorType::Cancel,
            Condition::NotAllowed,
            Some("closed-node"),
        )
    }
}

/// Answer a pubsub or pubsub#owner IQ addressed to an account (or with no `to`: the sender's
/// own). None if the IQ is not one.
pub async fn handle_iq(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let (id, to, payload, set) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, false),
        Iq::Set { id, to, payload, .. } => (id, to, payload, true),
        _ => return None,
    };
    if !(payload.is("pubsub", ns::PUBSUB) || payload.is("pubsub", ns::PUBSUB_OWNER)) {
        return None;
    }
    let me: Jid = full.clone().into();
    let own = full.node()?.as_str().to_owned();
    let owner = match to {
        None => own.clone(),
        Some(t) if t.resource().is_none() && t.domain().as_str().eq_ignore_ascii_case(&c2s.domain) => {
            match t.node() {
                Some(n) => n.as_str().to_owned(),
                // The server itself has no pubsub service.
                None => {
                    return Some(error(
                        id,
                        to,
                        &me,
                        ErrorType::Cancel,
                        Condition::ServiceUnavailable,
                        None,
                    ));
                }
            }
        }
        Some(_) => return None,
    };
    if payload.is("pubsub", ns::PUBSUB_OWNER) {
        if owner != own {
            return Some(error(id, to, &me, ErrorType::Auth, Condition::Forbidden, None));
        }
        return Some(match Owner::try_from(payload.clone()) {
            Ok(o) => owner_request(c2s, id, to, &me, &own, o.payload, set).await,
            Err(_) => error(id, to, &me, ErrorType::Modify, Condition::BadRequest, None),
        });
    }
    let request = match PubSub::try_from(payload.clone()) {
        Ok(r) => r,
        Err(_) => return Some(error(id, to, &me, ErrorType::Modify, Condition::BadRequest, None)),
    };
    let store = &c2s.core.store;
    Some(match (request, set) {
        (
            PubSub::Publish {
                publish,
                publish_options,
            },
            true,
        ) => {
            if owner != own {
                return Some(error(id, to, &me, ErrorType::Auth, Condition::Forbidden, None));
            }
            let options = publish_options.and_then(|o| o.form);
            publish_item(c2s, id, to, &me, full, &own, publish, options).await
        }
        (PubSub::Items(items), false) => {
            let node = items.node.0.clone();
            let avatar = crate::avatar::is_avatar_node(&node);
            let access = match (view_config(&node), store.pep_node(&owner, &node).await) {
                (Some(fixed), _) => fixed.access,
                (None, Ok(Some(n))) => n.access_model,
                // The avatar nodes exist for every account: views of its profile.
                (None, Ok(None)) if avatar => Config::default().access,
                _ => return Some(error(id, to, &me, ErrorType::Cancel, Condition::ItemNotFound, None)),
            };
            if !may_read(c2s, &owner, &access, Some(&own)).await {
                return Some(refused_read(id, to, &me, &access));
            }
            let wanted: BTreeSet<String> = items.items.iter().filter_map(|i| i.id.clone().map(|i| i.0)).collect();
            let limit = if wanted.is_empty() {
                items.max_items.map_or(MAX_KEPT, i64::from)
            } else {
                MAX_KEPT
            };
            let mut found = match view_items(c2s, &owner, &node).await {
                Some(found) => found,
                None => store.pep_items(&owner, &node, limit).await.unwrap_or_default(),
            };
            found.retain(|i| wanted.is_empty() || wanted.contains(&i.item_id));
            // Oldest first among the most recent.
            found.reverse();
            let reply = Items {
                max_items: None,
                node: items.node,
                subid: None,
                items: found
                    .into_iter()
                    .map(|i| Item {
                        id: Some(ItemId(i.item_id)),
                        publisher: None,
                        payload: i.payload.parse::<Element>().ok(),
                    })
                    .collect(),
            };
            result(id, to, &me, Some(PubSub::Items(reply).into()))
        }
        (PubSub::Retract(retract), true) => {
            if owner != own {
                return Some(error(id, to, &me, ErrorType::Auth, Condition::Forbidden, None));
            }
            let node = retract.node.0.clone();
            let Ok(Some(n)) = store.pep_node(&own, &node).await else {
                return Some(error(id, to, &me, ErrorType::Cancel, Condition::ItemNotFound, None));
            };
            let Some(item_id) = retract.items.first().and_then(|i| i.id.clone()) else {
                return Some(error(
                    id,
                    to,
                    &me,
                    ErrorType::Modify,
                    Condition::BadRequest,
                    Some("item-required"),
                ));
            };
            match store.pep_retract(&own, &node, &item_id.0).await {
                Ok(true) => {}
                Ok(false) => return Some(error(id, to, &me, ErrorType::Cancel, Condition::ItemNotFound, None)),
                Err(_) => {
                    return Some(error(
                        id,
                        to,
                        &me,
                        ErrorType::Wait,
                        Condition::InternalServerError,
                        None,
                    ));
                }
            }
            if retract.notify {
                notify(c2s, &own, &node, &n.access_model, retracted(&node, item_id.0)).await;
            }
            if node == crate::private::BOOKMARKS {
                crate::private::bookmarks_changed(c2s, &own).await;
            }
            result(id, to, &me, None)
        }
        (PubSub::Create { create, configure }, true) => {
            if owner != own {
                return Some(error(id, to, &me, ErrorType::Auth, Condition::Forbidden, None));
            }
            let Some(node) = create.node else {
                return Some(error(
                    id,
                    to,
                    &me,
                    ErrorType::Modify,
                    Condition::NotAcceptable,
                    Some("nodeid-required"),
                ));
            };
            // A view node exists for every account already.
            if view_config(&node.0).is_some() || matches!(store.pep_node(&own, &node.0).await, Ok(Some(_))) {
                return Some(error(id, to, &me, ErrorType::Cancel, Condition::Conflict, None));
            }
            let mut config = Config::default();
            if let Some(form) = configure.and_then(|c| c.form)
                && config.apply(&form).is_err()
            {
                return Some(error(id, to, &me, ErrorType::Modify, Condition::NotAcceptable, None));
            }
            match store.put_pep_node(&config.node(&own, &node.0)).await {
                Ok(()) => result(id, to, &me, None),
                Err(_) => error(id, to, &me, ErrorType::Wait, Condition::InternalServerError, None),
            }
        }
        // Explicit subscriptions are not needed for PEP (presence and caps subscribe).
        _ => {
            let mut e = error(id, to, &me, ErrorType::Cancel, Condition::FeatureNotImplemented, None);
            if let Iq::Error { error, .. } = &mut e {
                error.other = Some(
                    Element::builder("unsupported", ns::PUBSUB_ERRORS)
                        .attr(
                            tokio_xmpp::minidom::rxml::xml_ncname!("feature").to_owned(),
                            "subscribe",
                        )
                        .build(),
                );
            }
            e
        }
    })
}

#[allow(clippy::too_many_arguments)]
async fn publish_item(
    c2s: &C2s,
    id: &str,
    to: &Option<Jid>,
    me: &Jid,
    full: &FullJid,
    own: &str,
    publish: Publish,
    options: Option<DataForm>,
) -> Iq {
    let store = &c2s.core.store;
    let node = publish.node.0.clone();
    let [item] = <[Item; 1]>::try_from(publish.items).unwrap_or_else(|items| {
        // One item per publish (XEP-0060 §7.1.3.6); none is item-required.
        let mut items = items.into_iter();
        [items.next().unwrap_or(Item {
            id: None,
            publisher: None,
            payload: None,
        })]
    });
    let Some(payload) = item.payload else {
        return error(
            id,
            to,
            me,
            ErrorType::Modify,
            Condition::BadRequest,
            Some("item-required"),
        );
    };
    // XEP-0048 §3.1: an old client publishes all its bookmarks as one `storage` element. Its
    // conferences become the XEP-0402 items (XEP-0402 §5.3) and the node stays a view of
    // them; the item is always `current`, whatever id the client gave.
    if let Some(fixed) = view_config(&node) {
        if options.as_ref().is_some_and(|f| !fixed.meets(f)) {
            return precondition_not_met(id, to, me);
        }
        if !crate::private::is_storage(&payload) {
            return invalid_payload(id, to, me);
        }
        if crate::private::storage_written(c2s, own, &payload).await.is_err() {
            return error(id, to, me, ErrorType::Wait, Condition::InternalServerError, None);
        }
        return result(
            id,
            to,
            me,
            Some(publish_answer(node, crate::private::CURRENT.to_owned())),
        );
    }
    let config = match store.pep_node(own, &node).await {
        Ok(Some(n)) => {
            let config = Config::of(&n);
            if options.as_ref().is_some_and(|f| !config.meets(f)) {
                return precondition_not_met(id, to, me);
            }
            config
        }
        Ok(None) => {
            // Auto-create (XEP-0163 §4.1), configured by the publish-options.
            let mut config = Config::default();
            if let Some(form) = &options
                && config.apply(form).is_err()
            {
                return precondition_not_met(id, to, me);
            }
            if store.put_pep_node(&config.node(own, &node)).await.is_err() {
                return error(id, to, me, ErrorType::Wait, Condition::InternalServerError, None);
            }
            config
        }
        Err(_) => return error(id, to, me, ErrorType::Wait, Condition::InternalServerError, None),
    };
    let item_id = item.id.map(|i| i.0).unwrap_or_else(new_id);
    // XEP-0398: new avatar metadata changes the profile avatar (vCard PHOTO, Matrix avatar).
    if node == crate::avatar::METADATA && crate::avatar::metadata_published(c2s, own, &payload).await.is_err() {
        return invalid_payload(id, to, me);
    }
    if config.persist {
        let kept = PepItem {
            item_id: item_id.clone(),
            publisher: Some(full.to_bare().to_string()),
            payload: String::from(&payload),
        };
        if store.pep_publish(own, &node, &kept, config.keep()).await.is_err() {
            return error(id, to, me, ErrorType::Wait, Condition::InternalServerError, None);
        }
    }
    notify(
        c2s,
        own,
        &node,
        &config.access,
        published(&node, item_id.clone(), Some(payload)),
    )
    .await;
    if node == crate::private::BOOKMARKS {
        crate::private::bookmarks_changed(c2s, own).await;
    }
    result(id, to, me, Some(publish_answer(node, item_id)))
}

/// The answer to a publish: the id the item was kept under (XEP-0060 §7.1.2).
fn publish_answer(node: String, item_id: String) -> Element {
    PubSub::Publish {
        publish: Publish {
            node: NodeName(node),
            items: vec![Item {
                id: Some(ItemId(item_id)),
                publisher: None,
                payload: None,
            }],
        },
        publish_options: None,
    }
    .into()
}

async fn owner_request(
    c2s: &C2s,
    id: &str,
    to: &Option<Jid>,
    me: &Jid,
    own: &str,
    payload: OwnerPayload,
    set: bool,
) -> Iq {
    let store = &c2s.core.store;
    match (payload, set) {
        (OwnerPayload::Configure { node: Some(node), form }, _) => {
            let Ok(Some(n)) = store.pep_node(own, &node.0).await else {
                return error(id, to, me, ErrorType::Cancel, Condition::ItemNotFound, None);
            };
            let mut config = Config::of(&n);
            if !set {
                let answer = OwnerPayload::Configure {
                    node: Some(node),
                    form: Some(config.form()),
                };
                return result(id, to, me, Some(Owner { payload: answer }.into()));
            }
            let Some(form) = form else {
                return error(id, to, me, ErrorType::Modify, Condition::BadRequest, None);
            };
            if config.apply(&form).is_err() {
                return error(id, to, me, ErrorType::Modify, Condition::NotAcceptable, None);
            }
            match store.put_pep_node(&config.node(own, &node.0)).await {
                Ok(()) => result(id, to, me, None),
                Err(_) => error(id, to, me, ErrorType::Wait, Condition::InternalServerError, None),
            }
        }
        (OwnerPayload::Default { .. }, false) => {
            let answer = OwnerPayload::Default {
                form: Some(Config::default().form()),
            };
            result(id, to, me, Some(Owner { payload: answer }.into()))
        }
        (OwnerPayload::Delete { node, .. }, true) => {
            let access = match store.pep_node(own, &node.0).await {
                Ok(Some(n)) => n.access_model,
                _ => return error(id, to, me, ErrorType::Cancel, Condition::ItemNotFound, None),
            };
            if store.delete_pep_node(own, &node.0).await.is_err() {
                return error(id, to, me, ErrorType::Wait, Condition::InternalServerError, None);
            }
            let name = node.0.clone();
            let event = EventPayload::Delete { node, redirect: None };
            notify(c2s, own, &name, &access, event).await;
            if name == crate::private::BOOKMARKS {
                crate::private::bookmarks_changed(c2s, own).await;
            }
            result(id, to, me, None)
        }
        _ => error(id, to, me, ErrorType::Cancel, Condition::FeatureNotImplemented, None),
    }
}

/// The event for one published item.
fn published(node: &str, item_id: String, payload: Option<Element>) -> EventPayload {
    EventPayload::Items {
        node: NodeName(node.to_owned()),
        published: vec![EventItem {
            id: Some(ItemId(item_id)),
            publisher: None,
            payload,
        }],
        retracted: vec![],
    }
}

/// The event for one retracted item.
fn retracted(node: &str, item_id: String) -> EventPayload {
    EventPayload::Items {
        node: NodeName(node.to_owned()),
        published: vec![],
        retracted: vec![ItemId(item_id)],
    }
}

fn event_message(owner: &BareJid, to: &FullJid, event: &EventPayload) -> Element {
    let mut msg = Message::new(Some(to.clone().into()));
    msg.from = Some(owner.clone().into());
    msg.type_ = MessageType::Headline;
    msg.id = Some(xmpp_parsers::message::Id(new_id()));
    msg.payloads.push(Event { payload: event.clone() }.into());
    msg.into()
}

/// XEP-0163 §4.3: the owner's sessions and those of its presence subscribers (all contacts
/// for open nodes alike: PEP subscriptions follow presence) whose clients asked for
/// `node+notify`, unless the access model keeps them out or a block stands between them.
async fn notify(c2s: &C2s, owner: &str, node: &str, access: &str, event: EventPayload) {
    let Ok(owner_jid) = BareJid::new(&crate::bare_jid(owner, &c2s.domain)) else {
        return;
    };
    let feature = format!("{node}+notify");
    let mut targets = c2s.router.sessions_with(&owner_jid, &feature);
    if access != "whitelist" {
        for watcher in crate::roster::watchers(c2s, owner).await {
            let Ok(contact) = BareJid::new(&watcher.contact) else {
                continue;
            };
            if !contact.domain().as_str().eq_ignore_ascii_case(&c2s.domain) {
                continue;
            }
            for session in c2s.router.sessions_with(&contact, &feature) {
                if crate::c2s::blocked(c2s, &session, &owner_jid.clone().into())
                    .await
                    .is_none()
                {
                    targets.push(session);
                }
            }
        }
    }
    for target in targets {
        c2s.router
            .deliver(&target.clone().into(), &event_message(&owner_jid, &target, &event));
    }
}

/// XEP-0402 §5.3: make the owner's bookmarks node hold exactly these conferences (room JID,
/// `<conference/>`), as written through the old XEP-0048 storage; followers hear of each
/// change. The node is created as XEP-0402 wants it (whitelist, every item kept).
pub async fn sync_bookmarks(c2s: &C2s, owner: &str, wanted: Vec<(String, Element)>) -> Result<(), ()> {
    let store = &c2s.core.store;
    let node = crate::private::BOOKMARKS;
    let config = match store.pep_node(owner, node).await.map_err(|_| ())? {
        Some(n) => Config::of(&n),
        None => {
            let config = Config {
                access: "whitelist".into(),
                persist: true,
                max_items: 0,
            };
            store.put_pep_node(&config.node(owner, node)).await.map_err(|_| ())?;
            config
        }
    };
    let current = store.pep_items(owner, node, MAX_KEPT).await.map_err(|_| ())?;
    for item in &current {
        if !wanted.iter().any(|(id, _)| *id == item.item_id)
            && store.pep_retract(owner, node, &item.item_id).await.map_err(|_| ())?
        {
            notify(c2s, owner, node, &config.access, retracted(node, item.item_id.clone())).await;
        }
    }
    for (id, conference) in wanted {
        let text = String::from(&conference);
        if current.iter().any(|i| i.item_id == id && i.payload == text) {
            continue;
        }
        let item = PepItem {
            item_id: id.clone(),
            publisher: Some(crate::bare_jid(owner, &c2s.domain)),
            payload: text,
        };
        store
            .pep_publish(owner, node, &item, config.keep())
            .await
            .map_err(|_| ())?;
        announce(c2s, owner, node, &id, conference).await;
    }
    Ok(())
}

/// Notify followers of `node` of a new item the server itself published for `owner`.
pub async fn announce(c2s: &C2s, owner: &str, node: &str, item_id: &str, payload: Element) {
    let access = match (view_config(node), c2s.core.store.pep_node(owner, node).await) {
        (Some(fixed), _) => fixed.access,
        (None, Ok(Some(n))) => n.access_model,
        _ => Config::default().access,
    };
    notify(
        c2s,
        owner,
        node,
        &access,
        published(node, item_id.to_owned(), Some(payload)),
    )
    .await;
}

/// XEP-0163 §4.3.4: a session whose interests just became known gets the last item of each
/// node it asked for, of its own account and of the contacts it is subscribed to.
pub async fn send_last_items(c2s: &C2s, full: &FullJid) {
    let Some(me) = full.node().map(|n| n.as_str().to_owned()) else {
        return;
    };
    let mut owners = vec![me.clone()];
    for item in c2s.core.store.roster(&me).await.unwrap_or_default() {
        if matches!(item.subscription.as_str(), "to" | "both")
            && let Some(local) = crate::local_account(&item.contact, &c2s.domain)
        {
            owners.push(local.to_owned());
        }
    }
    for owner in owners {
        send_last_items_of(c2s, full, &owner).await;
    }
}

/// The last item of each of `owner`'s nodes that this session wants and may read (also when
/// it just became subscribed to `owner`'s presence, §4.3.3).
pub async fn send_last_items_of(c2s: &C2s, full: &FullJid, owner: &str) {
    let Some(me) = full.node().map(|n| n.as_str()) else {
        return;
    };
    let Ok(owner_jid) = BareJid::new(&crate::bare_jid(owner, &c2s.domain)) else {
        return;
    };
    if owner != me
        && crate::c2s::blocked(c2s, full, &owner_jid.clone().into())
            .await
            .is_some()
    {
        return;
    }
    let mut nodes = c2s.core.store.pep_nodes(owner).await.unwrap_or_default();
    // The avatar metadata node is there for everyone (a view of the profile), and so is the
    // old bookmarks node, always as configured here.
    if !nodes.iter().any(|n| n.node == crate::avatar::METADATA) {
        nodes.push(Config::default().node(owner, crate::avatar::METADATA));
    }
    nodes.retain(|n| view_config(&n.node).is_none());
    if let Some(fixed) = view_config(crate::private::BOOKMARKS_OLD) {
        nodes.push(fixed.node(owner, crate::private::BOOKMARKS_OLD));
    }
    for node in nodes {
        if !c2s.router.session_has(full, &format!("{}+notify", node.node))
            || !may_read(c2s, owner, &node.access_model, Some(me)).await
        {
            continue;
        }
        let last = match view_items(c2s, owner, &node.node).await {
            Some(items) => items.into_iter().next(),
            None => c2s
                .core
                .store
                .pep_items(owner, &node.node, 1)
                .await
                .ok()
                .and_then(|mut v| v.pop()),
        };
        let Some(last) = last else {
            continue;
        };
        let event = published(&node.node, last.item_id, last.payload.parse::<Element>().ok());
        c2s.router
            .deliver(&full.clone().into(), &event_message(&owner_jid, full, &event));
    }
}

/// disco#items of an account's bare JID: its nodes the requester may read.
pub async fn disco_items(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let Iq::Get {
        id,
        to: Some(to),
        payload,
        ..
    } = iq
    else {
        return None;
    };
    if !payload.is("query", ns::DISCO_ITEMS) || payload.attr("node").is_some() || to.resource().is_some() {
        return None;
    }
    let owner = crate::local_account(to.as_str(), &c2s.domain)?;
    let requester = full.node().map(|n| n.as_str());
    let mut items = Vec::new();
    for node in c2s.core.store.pep_nodes(owner).await.unwrap_or_default() {
        let access = view_config(&node.node).map_or(node.access_model, |fixed| fixed.access);
        if may_read(c2s, owner, &access, requester).await {
            items.push(DiscoItem {
                jid: to.clone(),
                node: Some(node.node),
                name: None,
            });
        }
    }
    let answer = DiscoItemsResult {
        node: None,
        items,
        rsm: None,
    };
    Some(result(id, &Some(to.clone()), &full.clone().into(), Some(answer.into())))
}
