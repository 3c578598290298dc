//! XEP-0054 vcard-temp over the shared profile: FN (and NICKNAME) is the Matrix display
//! name and PHOTO the Matrix avatar (an image in the media repository), so a name or picture
//! set from either protocol shows on both. XEP-0153: the server puts the avatar's hash into
//! the user's presence, so contacts know when to fetch the vCard again.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

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
        // A vCard replaces the whole card: no PHOTO means no avatar (EXTVAL, a link, cannot
        // be kept and counts as none).
        let photo = match payload.get_child("PHOTO", NS).and_then(photo_of) {
            Some(Ok(photo)) => Some(photo),
            Some(Err(())) => return err_modify(id, to, me, DefinedCondition::BadRequest),
            None => None,
        };
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
            return err_modify(id, to, me, DefinedCondition::NotAcceptable);
        }
        if core
            .accounts
            .set_displayname(&target, name.as_deref().map(str::trim))
            .await
            .is_err()
        {
            return err(DefinedCondition::InternalServerError);
        }
        match set_avatar(c2s, &target, photo).await {
            // XEP-0398: the new picture is announced as the user's PEP avatar too.
            Ok(true) => crate::avatar::announce(c2s, &target).await,
            Ok(false) => {}
            Err(estuary_core::CoreError::TooLarge(_)) => {
                return err_modify(id, to, me, DefinedCondition::NotAcceptable);
            }
            Err(_) => return err(DefinedCondition::InternalServerError),
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
    if let Some(photo) = avatar_photo(c2s, account.avatar_url.as_deref()).await {
        vcard = vcard.append(photo);
    }
    Some(Iq::Result {
        from: to.clone(),
        to: Some(me),
        id: id.clone(),
        payload: Some(vcard.build()),
    })
}

fn err_modify(id: &str, to: &Option<Jid>, me: Jid, condition: DefinedCondition) -> Option<Iq> {
    Some(error_reply(
        id.to_owned(),
        to.clone(),
        Some(me),
        ErrorType::Modify,
        condition,
    ))
}

/// Largest photo put into a vCard answer (a client fetching a card should not get megabytes).
const MAX_PHOTO_BYTES: i64 = 512 * 1024;

/// PHOTO as (type, bytes); Some(Err) when BINVAL is not base64, None without BINVAL.
fn photo_of(el: &Element) -> Option<Result<(String, Vec<u8>), ()>> {
    let binval = el.get_child("BINVAL", NS)?.text();
    let data: String = binval.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if data.is_empty() {
        return None;
    }
    let kind = el
        .get_child("TYPE", NS)
        .map(Element::text)
        .map(|t| t.trim().to_owned())
        .filter(|t| t.starts_with("image/"))
        .unwrap_or_else(|| "image/png".to_owned());
    Some(B64.decode(data.as_bytes()).map(|bytes| (kind, bytes)).map_err(|_| ()))
}

/// The avatar's media record, when it is an upload of this server.
async fn avatar_record(c2s: &C2s, avatar_url: Option<&str>) -> Option<estuary_core::MediaRecord> {
    let media = &c2s.core.media;
    let id = media.local_id(avatar_url?)?;
    media.info(id).await.ok().flatten()
}

/// Lower-case hex SHA-1 (XEP-0153 and XEP-0084 avatar ids).
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Make `photo` the account's avatar (None: no avatar). True when it changed (the same image
/// again changes nothing).
pub(crate) async fn set_avatar(
    c2s: &C2s,
    localpart: &str,
    photo: Option<(String, Vec<u8>)>,
) -> Result<bool, estuary_core::CoreError> {
    let core = &c2s.core;
    let account = core.accounts.get(localpart).await?;
    let Some((kind, bytes)) = photo else {
        if account.avatar_url.is_none() {
            return Ok(false);
        }
        core.accounts.set_avatar_url(localpart, None).await?;
        return Ok(true);
    };
    let current = avatar_record(c2s, account.avatar_url.as_deref()).await;
    if current.is_some_and(|r| r.sha1 == sha1_hex(&bytes)) {
        return Ok(false);
    }
    let record = core.media.put(localpart, &kind, None, bytes).await?;
    core.accounts
        .set_avatar_url(localpart, Some(&core.media.mxc(&record.media_id)))
        .await?;
    Ok(true)
}

/// The account's avatar: its media record and bytes, when it is an image of this server's.
pub(crate) async fn avatar(c2s: &C2s, localpart: &str) -> Option<(estuary_core::MediaRecord, Vec<u8>)> {
    let account = c2s.core.accounts.find(localpart).await.ok()??;
    let media = &c2s.core.media;
    let id = media.local_id(account.avatar_url.as_deref()?)?;
    media.get(id).await.ok().flatten()
}

/// The account's avatar as a vCard PHOTO, when it is an image of this server's and not huge.
async fn avatar_photo(c2s: &C2s, avatar_url: Option<&str>) -> Option<Element> {
    let media = &c2s.core.media;
    let id = media.local_id(avatar_url?)?;
    let (record, bytes) = media.get(id).await.ok().flatten()?;
    if record.size > MAX_PHOTO_BYTES {
        return None;
    }
    Some(
        Element::builder("PHOTO", NS)
            .append(
                Element::builder("TYPE", NS)
                    .append(record.content_type.as_str())
                    .build(),
            )
            .append(Element::builder("BINVAL", NS).append(B64.encode(&bytes)).build())
            .build(),
    )
}

/// XEP-0153 §3.2 namespace of the photo hash in presence.
pub const UPDATE_NS: &str = "vcard-temp:x:update";

/// XEP-0153: the user's available presence carries the current avatar's SHA-1 (empty for
/// none), whatever the client put there: the avatar may have changed from Matrix.
pub async fn stamp_photo_hash(c2s: &C2s, localpart: &str, presence: &mut xmpp_parsers::presence::Presence) {
    let Ok(Some(account)) = c2s.core.accounts.find(localpart).await else {
        return;
    };
    let hash = avatar_record(c2s, account.avatar_url.as_deref())
        .await
        .map(|r| r.sha1)
        .unwrap_or_default();
    presence.payloads.retain(|p| !p.is("x", UPDATE_NS));
    let photo = Element::builder("photo", UPDATE_NS).append(hash.as_str()).build();
    presence
        .payloads
        .push(Element::builder("x", UPDATE_NS).append(photo).build());
}
