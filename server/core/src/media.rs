//! The media repository: uploads kept as files under `data_dir/media`, described in the
//! store. Served to Matrix clients (content repository) and used for XMPP vCard photos, so an
//! avatar set from either protocol is the same file.

use std::path::PathBuf;
use std::sync::Arc;

use estuary_store::{MediaRecord, Store};
use sha1::Digest;

use crate::{CoreError, now_ms, random};

pub struct Media {
    dir: PathBuf,
    store: Arc<dyn Store>,
    server_name: String,
    pub max_upload_bytes: usize,
}

impl Media {
    pub fn new(
        data_dir: &std::path::Path,
        store: Arc<dyn Store>,
        server_name: String,
        max_upload_bytes: usize,
    ) -> Self {
        Self {
            dir: data_dir.join("media"),
            store,
            server_name,
            max_upload_bytes,
        }
    }

    fn path(&self, media_id: &str) -> PathBuf {
        self.dir.join(&media_id[..2]).join(media_id)
    }

    /// The `mxc://` URI of a local media id.
    pub fn mxc(&self, media_id: &str) -> String {
        format!("mxc://{}/{media_id}", self.server_name)
    }

    /// The media id of an `mxc://` URI of this server (None for other servers' or malformed).
    pub fn local_id<'a>(&self, uri: &'a str) -> Option<&'a str> {
        let (server, id) = uri.strip_prefix("mxc://")?.split_once('/')?;
        (server == self.server_name && valid_id(id)).then_some(id)
    }

    /// Keep an upload; its media id. The file is on disk (synced) before the record exists,
    /// so a record never names a missing file.
    pub async fn put(
        &self,
        uploader: &str,
        content_type: &str,
        filename: Option<&str>,
        bytes: Vec<u8>,
    ) -> Result<MediaRecord, CoreError> {
        if bytes.len() > self.max_upload_bytes {
            return Err(CoreError::TooLarge(format!(
                "the upload is larger than {} bytes",
                self.max_upload_bytes
            )));
        }
        let media_id = random::string(24, random::BASE62)?;
        let path = self.path(&media_id);
        let sha1 = hex(&sha1::Sha1::digest(&bytes));
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let write = {
            let path = path.clone();
            move || -> std::io::Result<()> {
                use std::io::Write;
                let dir = path.parent().unwrap_or(&path);
                std::fs::create_dir_all(dir)?;
                let tmp = path.with_extension("part");
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            }
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| CoreError::Internal(format!("media write task failed: {e}")))?
            .map_err(|e| CoreError::Internal(format!("cannot write media file {}: {e}", path.display())))?;
        let record = MediaRecord {
            media_id,
            uploader: uploader.to_owned(),
            content_type: content_type.to_owned(),
            filename: filename.map(str::to_owned),
            size,
            sha1,
            created_at: now_ms(),
        };
        self.store.add_media(&record).await?;
        Ok(record)
    }

    /// What a media id describes, without reading the bytes.
    pub async fn info(&self, media_id: &str) -> Result<Option<MediaRecord>, CoreError> {
        if !valid_id(media_id) {
            return Ok(None);
        }
        Ok(self.store.media(media_id).await?)
    }

    /// An upload and its bytes; None when there is no such media.
    pub async fn get(&self, media_id: &str) -> Result<Option<(MediaRecord, Vec<u8>)>, CoreError> {
        let Some(record) = self.info(media_id).await? else {
            return Ok(None);
        };
        match tokio::fs::read(self.path(media_id)).await {
            Ok(bytes) => Ok(Some((record, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(media_id, "media record without its file");
                Ok(None)
            }
            Err(e) => Err(CoreError::Internal(format!("cannot read media {media_id}: {e}"))),
        }
    }
}

/// Media ids are ours: base62, so never a path.
fn valid_id(id: &str) -> bool {
    id.len() >= 2 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_paths() {
        assert!(valid_id("AbC123"));
        for bad in ["", "a", "../etc", "a/b", "a.b", "x".repeat(65).as_str()] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
