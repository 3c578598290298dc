//! XEP-0280 Message Carbons: a session that enables carbons receives a copy of the chat
//! messages its account sends from other sessions (`<sent/>`) and of those addressed to
//! another of its sessions (`<received/>`), so every device sees the whole conversation.
//! The flag lives with the session (it ends with the stream).

use xmpp_parsers::carbons::{Received, Sent};
use xmpp_parsers::forwarding::Forwarded;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::c2s::C2s;

pub const NS: &str = ns::CARBONS;
/// XEP-0334 `<no-copy/>`: the sender asks for no carbons either.
const HINTS: &str = "urn:xmpp:hints";

/// `<enable/>` and `<disable/>` (§4, §5). None when the IQ is not about carbons.
pub fn handle_iq(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<Iq> {
    let Iq::Set { id, to, payload, .. } = iq else {
        return None;
    };
    let enable = if payload.is("enable", NS) {
        true
    } else if payload.is("disable", NS) {
        false
    } else {
        return None;
    };
    // Addressed to the server or the account itself.
    if to
        .as_ref()
        .is_some_and(|t| t.as_str() != c2s.domain && t.to_bare() != full.to_bare())
    {
        return None;
    }
    c2s.router.set_carbons(full, enable);
    Some(Iq::Result {
        from: to.clone(),
        to: Some(full.clone().into()),
        id: id.clone(),
        payload: None,
    })
}

/// §6: chat messages, and normal ones with a body; never those marked private or no-copy.
fn eligible(msg: &Message) -> bool {
    let kind = match msg.type_ {
        MessageType::Chat => true,
        MessageType::Normal => !msg.bodies.is_empty(),
        _ => false,
    };
    kind && !msg
        .payloads
        .iter()
        .any(|p| p.is("private", NS) || p.is("no-copy", HINTS) || p.is("received", NS) || p.is("sent", NS))
}

/// After `msg` was delivered locally to the recipient's sessions `reached`: copies for the
/// sender's sessions (but the one it came from, if it came from one), and for the recipient's
/// sessions it did not reach.
pub fn copy(c2s: &C2s, msg: &Message, sender: &BareJid, from_resource: Option<&str>, reached: &[String]) {
    if !eligible(msg) {
        return;
    }
    let forwarded = || Forwarded {
        delay: None,
        message: msg.clone(),
    };
    let except: Vec<String> = from_resource.into_iter().map(str::to_owned).collect();
    c2s.router.deliver_carbons(sender, &except, |to: Jid| {
        wrapper(&sender.clone().into(), to, msg, Sent { forwarded: forwarded() }.into())
    });
    if let Some(to) = &msg.to
        && to.domain().as_str().eq_ignore_ascii_case(&c2s.domain)
    {
        let bare = to.to_bare();
        c2s.router.deliver_carbons(&bare, reached, |dest: Jid| {
            wrapper(
                &bare.clone().into(),
                dest,
                msg,
                Received { forwarded: forwarded() }.into(),
            )
        });
    }
}

fn wrapper(from: &Jid, to: Jid, original: &Message, payload: Element) -> Element {
    let mut m = Message::new(Some(to));
    m.from = Some(from.clone());
    m.type_ = original.type_.clone();
    m.payloads.push(payload);
    m.into()
}
