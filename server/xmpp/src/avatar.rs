//! XEP-0084 User Avatar as a view of the shared profile, and XEP-0398 conversion: the
//! `urn:xmpp:avatar:data` and `:metadata` PEP nodes of an account answer with its profile
//! avatar (the same picture as its vCard PHOTO and its Matrix avatar); a client publishing new
//! metadata (after the data) changes that avatar, and a vCard PHOTO change is announced on
//! the metadata node.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use estuary_core::PepItem;
use tokio_xmpp::minidom::Element;

use crate::c2s::C2s;

pub const DATA: &str = "urn:xmpp:avatar:data";
pub const METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398 §4: advertised on the account.
pub const CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

pub fn is_avatar_node(node: &str) -> bool {
    node == DATA || node == METADATA
}

fn metadata(record: Option<&estuary_core::MediaRecord>) -> Element {
    let mut meta = Element::builder("metadata", METADATA);
    if let Some(r) = record {
        let info = Element::builder("info", METADATA)
            .attr(tokio_xmpp::minidom::rxml::xml_ncname!("id").to_owned(), r.sha1.as_str())
            .attr(
                tokio_xmpp::minidom::rxml::xml_ncname!("bytes").to_owned(),
                r.size.to_string(),
            )
            .attr(
                tokio_xmpp::minidom::rxml::xml_ncname!("type").to_owned(),
                r.content_type.as_str(),
            )
            .build();
        meta = meta.append(info);
    }
    meta.build()
}

/// The items of an avatar node, from the profile (the newest, the only one).
pub async fn items(c2s: &C2s, owner: &str, node: &str) -> Vec<PepItem> {
    let Some((record, bytes)) = crate::vcard::avatar(c2s, owner).await else {
        return vec![];
    };
    let payload = if node == DATA {
        Element::builder("data", DATA).append(B64.encode(&bytes)).build()
    } else {
        metadata(Some(&record))
    };
    vec![PepItem {
        item_id: record.sha1,
        publisher: None,
        payload: String::from(&payload),
    }]
}

/// The owner published avatar metadata: the profile avatar follows (XEP-0084 §4.2: the data
/// was published first under the same id; empty metadata switches the avatar off). Err when
/// the data is missing or does not match its id.
pub async fn metadata_published(c2s: &C2s, owner: &str, payload: &Element) -> Result<(), ()> {
    let Some(info) = payload.get_child("info", METADATA) else {
        crate::vcard::set_avatar(c2s, owner, None).await.map_err(|_| ())?;
        c2s.core.propagate_profile(owner).await;
        return Ok(());
    };
    let id = info.attr("id").ok_or(())?;
    if crate::vcard::avatar(c2s, owner)
        .await
        .is_some_and(|(r, _)| r.sha1 == id)
    {
        return Ok(());
    }
    let data = c2s
        .core
        .store
        .pep_items(owner, DATA, crate::pep::MAX_KEPT)
        .await
        .map_err(|_| ())?
        .into_iter()
        .find(|i| i.item_id == id)
        .ok_or(())?;
    let el: Element = data.payload.parse().map_err(|_| ())?;
    let text: String = el.text().chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = B64.decode(text.as_bytes()).map_err(|_| ())?;
    if crate::vcard::sha1_hex(&bytes) != id {
        return Err(());
    }
    let kind = info
        .attr("type")
        .filter(|t| t.starts_with("image/"))
        .unwrap_or("image/png");
    crate::vcard::set_avatar(c2s, owner, Some((kind.to_owned(), bytes)))
        .await
        .map_err(|_| ())?;
    c2s.core.propagate_profile(owner).await;
    Ok(())
}

/// The avatar changed another way (vCard PHOTO): sessions that follow the metadata node hear
/// of it (XEP-0398 §4).
pub async fn announce(c2s: &C2s, owner: &str) {
    let record = crate::vcard::avatar(c2s, owner).await.map(|(r, _)| r);
    let item_id = record.as_ref().map_or_else(|| "none".to_owned(), |r| r.sha1.clone());
    crate::pep::announce(c2s, owner, METADATA, &item_id, metadata(record.as_ref())).await;
}
