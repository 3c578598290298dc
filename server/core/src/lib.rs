//! Estuary's protocol-neutral core: configuration, accounts, and (as they land) rooms,
//! events and streams. It knows no wire format: no HTTP, no XML.

use std::sync::Arc;

use estuary_store::Store;

pub mod account_data;
pub mod accounts;
pub mod config;
pub mod e2ee;
pub mod ephemeral;
pub mod keys;
pub mod localpart;
pub mod media;
pub mod password;
pub mod random;
pub mod ratelimit;
pub mod rooms;
pub mod sessions;
pub mod streams;

pub use accounts::Accounts;
pub use config::Config;
pub use estuary_store::{
    Account, BackupKey, BackupVersion, Device, MediaRecord, Membership, PepItem, PepNode, Relation, RosterItem,
    Session, StoreError, StoredEvent,
};
pub use sessions::Sessions;

/// Errors of the core, mapped to protocol errors (Matrix `M_*`, XMPP stanza errors) at the
/// edges.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    InvalidLocalpart(#[from] localpart::LocalpartError),
    #[error(transparent)]
    InvalidPassword(#[from] password::PasswordError),
    #[error("user name {0:?} is already taken")]
    UserInUse(String),
    #[error("no account {0:?}")]
    UnknownUser(String),
    #[error("account {0:?} is deactivated")]
    Deactivated(String),
    /// The action is not allowed (auth rules, power levels, membership).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A parameter has a value that cannot be used.
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("room alias {0} is already in use")]
    AliasInUse(String),
    #[error("unsupported room version {0:?}")]
    UnsupportedRoomVersion(String),
    #[error(transparent)]
    Store(#[from] estuary_store::StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Entries a cache of the service keeps before it is emptied and filled again.
pub(crate) const CACHED_ENTRIES: usize = 10_000;

/// Insert into a cache of at most [`CACHED_ENTRIES`] entries (emptied when full).
pub(crate) fn bounded_insert<K: Eq + std::hash::Hash, V>(map: &mut std::collections::HashMap<K, V>, key: K, value: V) {
    insert_capped(map, CACHED_ENTRIES, key, value);
}

/// Insert into a cache of at most `cap` entries, emptied when full: the caches of this
/// server start over rather than track what was used least.
pub fn insert_capped<K: Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
    cap: usize,
    key: K,
    value: V,
) {
    if map.len() >= cap {
        map.clear();
    }
    map.insert(key, value);
}

/// A std mutex's guard, also after a thread panicked while holding it: what the mutexes of
/// this server guard (caches, session tables) stays usable.
pub trait Locked<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> Locked<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Milliseconds since the Unix epoch: the one time representation of the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The running server's shared state: configuration, store, and the services over them.
/// Front ends hold an `Arc<Core>` and call into it.
pub struct Core {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub rooms: rooms::Rooms,
    pub account_data: account_data::AccountData,
    pub typing: Arc<ephemeral::Typing>,
    pub presence: Arc<ephemeral::Presence>,
    pub streams: Arc<streams::Streams>,
    pub e2ee: e2ee::E2ee,
    /// The server's signing key (events, and federation's key endpoint).
    pub key: Arc<keys::ServerKey>,
    pub limits: RateLimiters,
    pub media: media::Media,
}

/// One limiter per kind of action, configured by `[rate_limits]`.
pub struct RateLimiters {
    pub login: ratelimit::RateLimiter,
    pub registration: ratelimit::RateLimiter,
    pub message: ratelimit::RateLimiter,
}

impl Core {
    /// Build the core over an opened store: loads (or on first start creates) the server's
    /// signing key.
    pub async fn new(config: Config, store: Arc<dyn Store>) -> Result<Self, CoreError> {
        let server_name = ruma::ServerName::parse(&config.server_name)
            .map_err(|e| CoreError::InvalidParam(format!("server_name {:?}: {e}", config.server_name)))?;
        let key = keys::ServerKey::load_or_create(&store).await?;
        let start = streams::Positions {
            events: store.max_stream_ordering().await?,
            account_data: store.max_account_data_stream().await?,
            receipts: store.max_receipt_stream().await?,
            typing: 0,
            presence: 0,
            to_device: store.max_to_device_stream().await?,
            device_lists: store.max_device_list_stream().await?,
        };
        let streams = Arc::new(streams::Streams::loaded(start, store.newest_rows().await?));
        let rooms = rooms::Rooms::new(store.clone(), key.clone(), server_name, streams.clone());
        let account_data = account_data::AccountData::new(store.clone(), streams.clone());
        let typing = ephemeral::Typing::new(streams.clone());
        typing.spawn_expiry();
        let presence = Arc::new(ephemeral::Presence::new(streams.clone()));
        presence.spawn_expiry();
        let e2ee = e2ee::E2ee::new(store.clone(), streams.clone());
        let accounts = Accounts::new(store.clone(), config.server_name.clone());
        let sessions = Sessions::new(store.clone());
        let media = media::Media::new(
            &config.data_dir,
            store.clone(),
            config.server_name.clone(),
            config.media.max_upload_bytes,
        );
        let r = &config.rate_limits;
        let limits = RateLimiters {
            login: ratelimit::RateLimiter::new(r.login),
            registration: ratelimit::RateLimiter::new(r.registration),
            message: ratelimit::RateLimiter::new(r.message),
        };
        Ok(Self {
            config,
            store,
            accounts,
            sessions,
            rooms,
            account_data,
            typing,
            presence,
            streams,
            e2ee,
            key,
            limits,
            media,
        })
    }

    /// Delete devices: their tokens, their E2EE keys and queued to-device messages; the
    /// user's device list changes.
    pub async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<(), CoreError> {
        self.sessions.delete_devices(localpart, device_ids).await?;
        let user_id = self.matrix_user_id(localpart);
        for d in device_ids {
            self.e2ee.device_deleted(localpart, d, &user_id).await?;
        }
        Ok(())
    }

    /// Delete every device except `keep` (all with None).
    pub async fn delete_other_devices(&self, localpart: &str, keep: Option<&str>) -> Result<(), CoreError> {
        let ids: Vec<String> = self
            .sessions
            .devices(localpart)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| Some(d.as_str()) != keep)
            .collect();
        self.delete_devices(localpart, &ids).await
    }

    /// MSC3814: store a dehydrated device (replacing, and deleting, the previous one) with its
    /// keys, which are checked like any device's. The device has no access token.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_dehydrated_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
        device_data: &serde_json::Value,
        device_keys: &serde_json::Value,
        one_time_keys: &serde_json::Map<String, serde_json::Value>,
        fallback_keys: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), CoreError> {
        let user_id = self.matrix_user_id(localpart);
        // Check the keys before anything changes.
        e2ee::verify_device_keys(device_keys, &user_id, device_id)?;
        let previous = self.store.dehydrated_device(localpart).await?;
        let existing = self.sessions.device(localpart, device_id).await?;
        if existing.is_some() && previous.as_ref().is_none_or(|(d, _)| d != device_id) {
            return Err(CoreError::InvalidParam(format!("device {device_id} already exists")));
        }
        if let Some((old, _)) = &previous {
            self.delete_devices(localpart, std::slice::from_ref(old)).await?;
        }
        self.store
            .create_device(localpart, device_id, display_name, now_ms())
            .await?;
        self.e2ee
            .upload(
                localpart,
                &user_id,
                device_id,
                Some(device_keys),
                one_time_keys,
                fallback_keys,
            )
            .await?;
        self.store
            .set_dehydrated_device(localpart, device_id, &device_data.to_string())
            .await?;
        Ok(())
    }

    /// MSC3814: the user's dehydrated device, (device_id, device_data).
    pub async fn dehydrated_device(&self, localpart: &str) -> Result<Option<(String, serde_json::Value)>, CoreError> {
        Ok(self
            .store
            .dehydrated_device(localpart)
            .await?
            .map(|(d, data)| (d, serde_json::from_str(&data).unwrap_or_default())))
    }

    /// MSC3814: delete the dehydrated device (and the device with its keys); its ID if any.
    pub async fn delete_dehydrated_device(&self, localpart: &str) -> Result<Option<String>, CoreError> {
        let Some((device, _)) = self.store.dehydrated_device(localpart).await? else {
            return Ok(None);
        };
        self.delete_devices(localpart, std::slice::from_ref(&device)).await?;
        self.store.delete_dehydrated_device(localpart).await?;
        Ok(Some(device))
    }

    /// Deactivate an account, with its devices and their keys.
    pub async fn deactivate(&self, localpart: &str) -> Result<(), CoreError> {
        self.delete_dehydrated_device(localpart).await?;
        self.delete_other_devices(localpart, None).await?;
        let deactivated = self.accounts.deactivate(localpart).await;
        self.sessions.account_deactivated();
        deactivated
    }

    /// Matrix spec: a profile change is reflected in the user's member event in every joined
    /// room (whichever protocol changed it: Matrix profile API or XMPP vCard). A room that
    /// refuses the update (a power-level override, say) is logged, not fatal.
    pub async fn propagate_profile(&self, localpart: &str) {
        let Ok(Some(account)) = self.accounts.find(localpart).await else {
            return;
        };
        let user = self.matrix_user_id(localpart);
        let Ok(user_id) = ruma::UserId::parse(&user) else {
            return;
        };
        let Ok(memberships) = self.rooms.memberships(&user).await else {
            return;
        };
        for m in memberships.into_iter().filter(|m| m.membership == "join") {
            let Ok(room_id) = ruma::RoomId::parse(&m.room_id) else {
                continue;
            };
            let Ok(Some(current)) = self.rooms.state_event(&m.room_id, "m.room.member", &user).await else {
                continue;
            };
            let Ok(pdu) = rooms::Pdu::from_stored(&current) else {
                continue;
            };
            let mut content = pdu.content_value();
            let Some(obj) = content.as_object_mut() else { continue };
            for (key, value) in [
                ("displayname", &account.displayname),
                ("avatar_url", &account.avatar_url),
            ] {
                match value {
                    Some(v) => {
                        obj.insert(key.to_owned(), serde_json::Value::String(v.clone()));
                    }
                    None => {
                        obj.remove(key);
                    }
                }
            }
            let template = rooms::EventTemplate::state("m.room.member", &user, content);
            if let Err(e) = self.rooms.send(&room_id, &user_id, template, None).await {
                tracing::warn!(room = %room_id, error = %e, "profile change not reflected in the room");
            }
        }
    }

    /// `@localpart:server_name`
    pub fn matrix_user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.config.server_name)
    }

    /// The localpart of a user ID of this server (`@alice:server_name` -> `alice`); None for
    /// a user of another server or not a user ID.
    pub fn local_localpart<'a>(&self, user_id: &'a str) -> Option<&'a str> {
        let (local, server) = user_id.strip_prefix('@')?.split_once(':')?;
        (server == self.config.server_name).then_some(local)
    }
}
