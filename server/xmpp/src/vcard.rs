//! XEP-0054 vcard-temp over the shared profile: FN (and NICKNAME) is the Matrix display
//! name, so a name set from either protocol shows on both. (PHOTO <-> avatar needs the media
//! repository and comes with it.)

use tokio_xmpp::minidom::Element;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::c2s::{C2s, error_reply};

pub const NS: &str = "vcard-temp";

/// Longest display name accepted from a vCard, in bytes (as the Matrix profile API).
const MAX_NAME_BYTES: usize = 256;

/// Answer a vCard get or set; None if the iq is not a vCard request.
pub async fn handle(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let me: Jid = full.clone().into();
    let (id, to, payload, set) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, false),
        Iq::Set { id, to, payload, .. } => (id, to, payload, true),
        _ => return None,
    };
    if !payload.is("vCard", NS) {
        return None;
    }
    let err = |condition| {
        Some(error_reply(
            id.clone(),
            to.clone(),
            Some(me.clone()),
            ErrorType::Cancel,
            condition,
        ))
    };
    // Bound JIDs always have a node: the account's localpart.
    let own = full.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    // Whose vCard: the sender's own (no `to`, or its bare JID), or another local account's.
    let target = match to {
        None => own.clone(),
        Some(t) if t.resource().is_none() && t.domain().as_str().eq_ignore_ascii_case(&c2s.domain) => match t.node() {
            Some(node) => node.as_str().to_owned(),
            None => return err(DefinedCondition::ServiceUnavailable),
        },
        Some(_) => return err(DefinedCondition::ServiceUnavailable),
    };
    let core = &c2s.core;
    if set {
        if target != own {
            return err(DefinedCondition::Forbidden);
        }
        let text = |name: &str| {
            payload
                .get_child(name, NS)
                .map(Element::text)
                .filter(|t| !t.trim().is_empty())
        };
        let name = text("FN").or_else(|| text("NICKNAME"));
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
            return Some(error_reply(
                id.clone(),
                to.clone(),
                Some(me),
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
            ));
        }
        if core
            .accounts
            .set_displayname(&target, name.as_deref().map(str::trim))
            .await
            .is_err()
        {
            return err(DefinedCondition::InternalServerError);
        }
        core.propagate_profile(&target).await;
        return Some(Iq::Result {
            from: to.clone(),
            to: Some(me),
            id: id.clone(),
            payload: None,
        });
    }
    let account = match core.accounts.find(&target).await {
        Ok(Some(a)) if a.is_active() => a,
        Ok(_) => return err(DefinedCondition::ItemNotFound),
        Err(_) => return err(DefinedCondition::InternalServerError),
    };
    let mut vcard = Element::builder("vCard", NS);
    if let Some(name) = account.displayname {
        vcard = vcard
            .append(Element::builder("FN", NS).append(name.as_str()).build())
            .append(Element::builder("NICKNAME", NS).append(name.as_str()).build());
    }
    Some(Iq::Result {
        from: to.clone(),
        to: Some(me),
        id: id.clone(),
        payload: Some(vcard.build()),
    })
}
