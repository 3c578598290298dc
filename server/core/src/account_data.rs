//! Account data (global and per room) and read receipts: small per-user records that sync
//! delivers when they change.

use std::sync::Arc;

pub use estuary_store::AccountDataRow;
pub use estuary_store::Receipt as ReceiptRow;
use estuary_store::{Receipt, Store};
use serde_json::Value;

use crate::streams::{HeldWhile, Streams};
use crate::{CoreError, now_ms};

/// Largest account data content accepted, in bytes.
pub const MAX_ACCOUNT_DATA_BYTES: usize = 65_536;

#[derive(Clone)]
pub struct AccountData {
    store: Arc<dyn Store>,
    streams: Arc<Streams>,
    /// Global entries by (localpart, type), which every sync reads (push rules, ignored
    /// users), while the user's account data does not move.
    global: Arc<HeldWhile<(String, String), Option<Value>>>,
    /// (room, user) -> the position the user has read up to, while the room's receipts do not
    /// move.
    read_up_to: Arc<HeldWhile<(String, String), i64>>,
}

impl AccountData {
    pub fn new(store: Arc<dyn Store>, streams: Arc<Streams>) -> Self {
        Self {
            store,
            streams,
            global: Arc::default(),
            read_up_to: Arc::default(),
        }
    }

    /// Set account data; `room_id` None = global. The content must be a JSON object.
    pub async fn set(
        &self,
        localpart: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &Value,
    ) -> Result<(), CoreError> {
        if !content.is_object() {
            return Err(CoreError::InvalidParam(
                "account data content must be a JSON object".to_owned(),
            ));
        }
        let text = content.to_string();
        if text.len() > MAX_ACCOUNT_DATA_BYTES {
            return Err(CoreError::TooLarge(format!(
                "account data is larger than {MAX_ACCOUNT_DATA_BYTES} bytes"
            )));
        }
        let _writer = self.streams.account_data_writer.lock().await;
        let pos = self
            .store
            .set_account_data(localpart, room_id.unwrap_or(""), kind, &text)
            .await?;
        self.streams.user_account_data.note(localpart.to_owned(), pos);
        self.streams.advance(|p| p.account_data = p.account_data.max(pos));
        Ok(())
    }

    pub async fn get(&self, localpart: &str, room_id: Option<&str>, kind: &str) -> Result<Option<Value>, CoreError> {
        let read = || async {
            let text = self.store.account_data(localpart, room_id.unwrap_or(""), kind).await?;
            Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
        };
        match room_id {
            Some(_) => read().await,
            None => {
                let rows = self.streams.user_account_data.rows(localpart);
                let key = (localpart.to_owned(), kind.to_owned());
                self.global.get(key, rows, read).await
            }
        }
    }

    /// Everything that changed after `since`.
    pub async fn since(&self, localpart: &str, since: i64) -> Result<Vec<AccountDataRow>, CoreError> {
        Ok(self.store.account_data_since(localpart, since).await?)
    }

    /// Record a receipt (`m.read`, `m.read.private`); `thread_id` "" = unthreaded.
    pub async fn set_receipt(
        &self,
        room_id: &str,
        user_id: &str,
        receipt_type: &str,
        thread_id: &str,
        event_id: &str,
    ) -> Result<(), CoreError> {
        let receipt = Receipt {
            stream_id: 0,
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            receipt_type: receipt_type.to_owned(),
            thread_id: thread_id.to_owned(),
            event_id: event_id.to_owned(),
            ts: now_ms(),
        };
        let _writer = self.streams.receipts_writer.lock().await;
        let pos = self.store.set_receipt(&receipt).await?;
        self.streams.room_receipts.note(room_id.to_owned(), pos);
        self.streams.advance(|p| p.receipts = p.receipts.max(pos));
        Ok(())
    }

    /// The stream position of the newest event the user's read receipt (`m.read` or
    /// `m.read.private`) in the room is on; 0 if none.
    pub async fn read_up_to(&self, room_id: &str, user_id: &str) -> Result<i64, CoreError> {
        let rows = self.streams.room_receipts.rows(room_id);
        let key = (room_id.to_owned(), user_id.to_owned());
        let read = || async { Ok(self.store.read_up_to(room_id, user_id).await?) };
        self.read_up_to.get(key, rows, read).await
    }

    pub async fn receipts_since(&self, room_id: &str, since: i64) -> Result<Vec<Receipt>, CoreError> {
        Ok(self.store.receipts_since(room_id, since).await?)
    }
}
