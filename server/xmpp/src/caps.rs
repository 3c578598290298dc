//! XEP-0115 entity capabilities of the clients: what each session's client supports, learnt
//! from the caps in its presence (asked once per verification string with disco#info, and
//! checked against the hash). PEP (XEP-0163) sends notifications for a node only to sessions
//! whose features include `node+notify`.

use estuary_core::Locked;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio_xmpp::minidom::Element;
use xmpp_parsers::caps::{Caps, hash_caps};
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use xmpp_parsers::hashes::Algo;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::ns;
use xmpp_parsers::presence::Presence;

use crate::c2s::{C2s, new_id};

/// XEP-0115 §5.1: the string a verification hash covers. (xmpp-parsers' `compute_disco`
/// sorts after appending '<', which orders "x#y" before "x" and breaks the hash of clients
/// with such features, slixmpp among them.)
pub fn hash_input(info: &DiscoInfoResult) -> Vec<u8> {
    let mut out = String::new();
    let mut identities: Vec<String> = info
        .identities
        .iter()
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.category,
                i.type_,
                i.lang.as_deref().unwrap_or_default(),
                i.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    for i in identities {
        out.push_str(&i);
        out.push('<');
    }
    // BTreeSet: already in byte order.
    for f in &info.features {
        out.push_str(f);
        out.push('<');
    }
    let mut forms: Vec<(String, &xmpp_parsers::data_forms::DataForm)> = info
        .extensions
        .iter()
        .map(|f| (f.form_type().unwrap_or_default().to_owned(), f))
        .collect();
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    for (form_type, form) in forms {
        out.push_str(&form_type);
        out.push('<');
        let mut fields: Vec<_> = form
            .fields
            .iter()
            .filter(|f| f.var.as_deref() != Some("FORM_TYPE"))
            .collect();
        fields.sort_by(|a, b| a.var.cmp(&b.var));
        for field in fields {
            out.push_str(field.var.as_deref().unwrap_or_default());
            out.push('<');
            let mut values = field.values.clone();
            values.sort();
            for v in values {
                out.push_str(&v);
                out.push('<');
            }
        }
    }
    out.into_bytes()
}

/// A client's features.
pub type Features = Arc<BTreeSet<String>>;

/// Verification strings seen by this process (bounded: a client could invent them).
const MAX_KNOWN: usize = 10_000;

#[derive(Default)]
pub struct Known {
    /// "algo:ver" -> features, for hashes that checked out.
    verified: Mutex<HashMap<String, Features>>,
    /// Our disco#info questions in flight: IQ id -> (session, key, the caps asked about).
    asked: Mutex<HashMap<String, (FullJid, String, Caps)>>,
}

fn key(caps: &Caps) -> String {
    let algo: String = caps.hash.clone().into();
    format!("{algo}:{}", ver_string(caps))
}

/// XEP-0115 §6.2: the disco node that caps describe, `node#ver` (ver in base64).
pub fn node_ver(caps: &Caps) -> String {
    format!("{}#{}", caps.node, ver_string(caps))
}

fn ver_string(caps: &Caps) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(&caps.ver)
}

impl Known {
    fn verified(&self, key: &str) -> Option<Features> {
        self.verified.locked().get(key).cloned()
    }
}

/// A session's available presence: record its features when its caps are known (true), or
/// ask its client (false; the answer comes back through [`answer`]).
pub fn observe(c2s: &C2s, full: &FullJid, presence: &Presence) -> bool {
    let Some(caps) = presence
        .payloads
        .iter()
        .find(|p| p.is("c", ns::CAPS))
        .and_then(|p| Caps::try_from(p.clone()).ok())
    else {
        return false;
    };
    let key = key(&caps);
    if let Some(features) = c2s.client_caps.verified(&key) {
        c2s.router.set_features(full, features);
        return true;
    }
    let id = format!("caps-{}", new_id());
    let node = node_ver(&caps);
    c2s.client_caps
        .asked
        .locked()
        .insert(id.clone(), (full.clone(), key, caps));
    let query = Iq::Get {
        from: Jid::new(&c2s.domain).ok(),
        to: Some(full.clone().into()),
        id,
        payload: DiscoInfoQuery { node: Some(node) }.into(),
    };
    c2s.router.deliver(&full.clone().into(), &Element::from(query));
    false
}

/// An IQ result or error from a client to the server. Some(session) when it answered our
/// caps question and the session's features are now known; None otherwise.
pub fn answer(c2s: &C2s, iq: &Iq) -> Option<FullJid> {
    let (id, payload) = match iq {
        Iq::Result { id, payload, .. } => (id, payload.as_ref()),
        Iq::Error { id, .. } => (id, None),
        _ => return None,
    };
    let (full, key, caps) = c2s.client_caps.asked.locked().remove(id)?;
    let info = DiscoInfoResult::try_from(payload?.clone()).ok()?;
    let features: Features = Arc::new(info.features.clone());
    // XEP-0115 §5.4: only a hash that matches may be cached for other entities; the answer
    // still holds for this one (slixmpp, for one, announces a stale hash while its plugins
    // add features).
    let algo = caps.hash.clone();
    let verified =
        !matches!(algo, Algo::Unknown(_)) && hash_caps(&hash_input(&info), algo).is_ok_and(|h| h.hash == caps.ver);
    c2s.router.set_features(&full, features.clone());
    if !verified {
        tracing::debug!(jid = %full, "client caps do not match their hash; used for this session only");
        return Some(full);
    }
    {
        let mut verified = c2s.client_caps.verified.locked();
        if verified.len() >= MAX_KNOWN {
            verified.clear();
        }
        verified.insert(key, features);
    }
    Some(full)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn xep_0115_example_and_prefixed_features() {
        // XEP-0115 §5.2's simple example: QgayPKawpkPSDYmwT/WM94uAlu0=
        let info = DiscoInfoResult {
            node: None,
            identities: vec![xmpp_parsers::disco::Identity {
                category: "client".into(),
                type_: "pc".into(),
                lang: None,
                name: Some("Exodus 0.9.1".into()),
            }],
            features: [
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            extensions: vec![],
        };
        let hash = hash_caps(&hash_input(&info), Algo::Sha_1).unwrap();
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(hash.hash),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
        // "shim" sorts before "shim#SubID" (slixmpp advertises both).
        let input = hash_input(&DiscoInfoResult {
            node: None,
            identities: vec![],
            features: ["urn:x:shim#SubID", "urn:x:shim"]
                .into_iter()
                .map(String::from)
                .collect(),
            extensions: vec![],
        });
        assert_eq!(input, b"urn:x:shim<urn:x:shim#SubID<");
    }
}
