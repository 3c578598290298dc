//! The storage layer: the [`Store`] trait and its SQLite and PostgreSQL implementations.
//! All SQL lives in this crate and in `migrations/`; nothing else imports sqlx.

use std::sync::Arc;

use async_trait::async_trait;

mod common;
mod postgres;
mod sql;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key already exists (for example, a taken localpart).
    #[error("already exists")]
    Conflict,
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://...")]
    BadUrl(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// RFC 5802 salted password material for one hash function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Everything derived from a password: the Argon2id hash that Matrix login checks and the
/// SCRAM credentials that XMPP SASL checks. The plaintext is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordCredentials {
    /// Argon2id in PHC string format.
    pub argon2_hash: String,
    pub scram_salt: Vec<u8>,
    pub scram_iterations: u32,
    pub scram_sha1: ScramKeys,
    pub scram_sha256: ScramKeys,
}

/// A new local account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub localpart: String,
    pub password: Option<PasswordCredentials>,
    pub admin: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// A local account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub localpart: String,
    pub password: Option<PasswordCredentials>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub admin: bool,
    pub created_at: i64,
    pub deactivated_at: Option<i64>,
}

impl Account {
    pub fn is_active(&self) -> bool {
        self.deactivated_at.is_none()
    }
}

/// A new login: the device (created if new, kept with its name if it exists) and a token
/// that replaces any token the device had.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub localpart: String,
    pub device_id: String,
    /// Used only when the device is new.
    pub display_name: Option<String>,
    pub token_sha256: String,
    pub created_at: i64,
}

/// Who an access token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub localpart: String,
    pub device_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub created_at: i64,
    pub published: bool,
}

/// A room to create, and the alias (`#name:server`) to point at it.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub record: RoomRecord,
    pub alias: Option<String>,
}

/// An event as stored: the signed PDU and the columns used to query it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    /// Sync position; assigned by the store.
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub sender: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub state_key: Option<String>,
    pub origin_server_ts: i64,
    /// Canonical JSON of the PDU.
    pub pdu: String,
    pub redacted_by: Option<String>,
    /// For state events: the event this one replaced, and its content (JSON).
    pub replaces_state: Option<String>,
    pub prev_content: Option<String>,
    /// For a redacted event: the redaction, in the client format (JSON).
    pub redacted_because: Option<String>,
}

/// An event to append, with what its acceptance changes.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub depth: i64,
    pub sender: String,
    pub kind: String,
    pub state_key: Option<String>,
    pub origin_server_ts: i64,
    pub pdu: String,
    /// For m.room.member: the membership, mirrored into the current state.
    pub membership: Option<String>,
    /// The extremities this event replaces (its prev_events).
    pub prev_events: Vec<String>,
    /// (localpart, device_id, txn_id) of a client send, for idempotency.
    pub txn: Option<(String, String, String)>,
    /// For state events: the state event replaced, and its content.
    pub replaces_state: Option<(String, String)>,
    /// m.relates_to of the content: (rel_type, event_id related to).
    pub relation: Option<(String, String)>,
    /// For a redaction: what it does to its target, applied with it.
    pub redaction: Option<Redaction>,
    /// The state group holding the room's state after this event.
    pub state_group: String,
    /// That group, when this event starts it.
    pub new_group: Option<NewStateGroup>,
    /// How the room's current state changes.
    pub state_update: StateUpdate,
}

impl NewEvent {
    /// The event as the store holds it once appended at `position` (not redacted yet).
    pub fn stored_at(&self, position: i64) -> StoredEvent {
        StoredEvent {
            stream_ordering: position,
            event_id: self.event_id.clone(),
            room_id: self.room_id.clone(),
            depth: self.depth,
            sender: self.sender.clone(),
            kind: self.kind.clone(),
            state_key: self.state_key.clone(),
            origin_server_ts: self.origin_server_ts,
            pdu: self.pdu.clone(),
            redacted_by: None,
            replaces_state: self.replaces_state.as_ref().map(|r| r.0.clone()),
            prev_content: self.replaces_state.as_ref().map(|r| r.1.clone()),
            redacted_because: None,
        }
    }

    /// Whether committing it changes nothing of its room but the forward extremities (and
    /// what only names it: a relation, a transaction ID): no state, no redaction.
    pub fn only_extends(&self) -> bool {
        self.state_key.is_none()
            && self.redaction.is_none()
            && self.new_group.is_none()
            && matches!(self.state_update, StateUpdate::Own)
    }

    /// The users whose entry of the room's current membership it changes: its own state key
    /// for a member event, and the member entries state resolution changes.
    pub fn members_changed(&self) -> impl Iterator<Item = &str> {
        let own = (self.kind == "m.room.member" && matches!(self.state_update, StateUpdate::Own))
            .then_some(self.state_key.as_deref())
            .flatten();
        let changes = match &self.state_update {
            StateUpdate::Own => &[][..],
            StateUpdate::Resolved(changes) => changes.as_slice(),
        };
        own.into_iter().chain(
            changes
                .iter()
                .filter(|c| c.kind == "m.room.member")
                .map(|c| c.state_key.as_str()),
        )
    }

    /// The changes of the current state it makes beyond taking its own place (see migration
    /// 0019): those state resolution makes.
    pub fn resets(&self) -> impl Iterator<Item = &StateChange> {
        let changes = match &self.state_update {
            StateUpdate::Own => &[][..],
            StateUpdate::Resolved(changes) => changes.as_slice(),
        };
        changes
            .iter()
            .filter(|c| c.event.as_ref().is_none_or(|entry| entry.event_id != self.event_id))
    }
}

/// A state group to store (see migration 0018): the entries that differ from `prev`, or the
/// whole state when `prev` is None.
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    pub id: String,
    pub prev: Option<String>,
    /// Deltas between this group and the full one its chain starts from.
    pub chain: i64,
    /// JSON: `[[type, state_key, event_id], ...]`.
    pub entries: String,
}

/// How an appended event changes its room's current state.
#[derive(Debug, Clone)]
pub enum StateUpdate {
    /// A state event replaces the entry of its type and key; any other event changes
    /// nothing. (One line of history: every event after the room's single extremity.)
    Own,
    /// State resolution's outcome, where branches meet: these entries change. An entry may
    /// be the appended event itself, named by its ID.
    Resolved(Vec<StateChange>),
}

/// One entry of a room's current state that changes: to `event`, or removed (None).
#[derive(Debug, Clone)]
pub struct StateChange {
    pub kind: String,
    pub state_key: String,
    pub event: Option<StateEntry>,
}

#[derive(Debug, Clone)]
pub struct StateEntry {
    pub event_id: String,
    pub stream_ordering: i64,
    pub membership: Option<String>,
}

/// A change of a room's current state made by state resolution (migration 0019).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StateReset {
    pub stream_ordering: i64,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub state_key: String,
    /// None: the key left the state.
    pub event_id: Option<String>,
}

/// Where an event stands among the state groups.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventGroup {
    pub room_id: String,
    pub stream_ordering: i64,
    /// The group of the state after it; None for events stored before state groups.
    pub state_group: Option<String>,
    /// That group's chain length.
    pub chain: Option<i64>,
}

/// A redaction's effect on the event it redacts.
#[derive(Debug, Clone)]
pub struct Redaction {
    /// The redacted event.
    pub target: String,
    /// Its redacted PDU (canonical JSON), replacing the stored one.
    pub pdu: String,
    /// The redaction in the client format, for the target's `unsigned.redacted_because`.
    pub because: String,
}

/// A relation of one event to another.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Relation {
    pub event_id: String,
    pub relates_to: String,
    pub rel_type: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub sender: String,
    pub stream_ordering: i64,
}

/// The newest position of each key of the streams that sync reads per key: rooms' events and
/// receipts, users' account data, devices' to-device messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewestRows {
    pub room_events: Vec<(String, i64)>,
    /// State events and redactions.
    pub room_state: Vec<(String, i64)>,
    pub room_receipts: Vec<(String, i64)>,
    /// Events relating to another (`m.relates_to`).
    pub room_relations: Vec<(String, i64)>,
    pub user_account_data: Vec<(String, i64)>,
    /// Keyed by (localpart, device ID).
    pub device_to_device: Vec<((String, String), i64)>,
}

/// A membership of a user, from the current state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Membership {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountDataRow {
    pub stream_id: i64,
    /// "" for global account data.
    pub room_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Receipt {
    pub stream_id: i64,
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    /// "" for unthreaded receipts, "main" or a thread root otherwise.
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

/// A to-device message waiting for its device.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ToDeviceMessage {
    pub stream_id: i64,
    pub sender: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub content: String,
}

/// A to-device message to queue: (localpart, device_id, sender, type, content JSON).
pub type NewToDevice = (String, String, String, String, String);

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BackupKey {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// Opaque (encrypted by the client) JSON.
    pub session_data: String,
}

/// An XMPP roster item (RFC 6121 §2.1).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RosterItem {
    pub contact: String,
    pub name: Option<String>,
    pub subscription: String,
    pub ask: bool,
    pub pending_in: bool,
    /// JSON array of group names.
    pub groups: String,
}

/// A PEP node of an account (XEP-0163) and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PepNode {
    pub owner: String,
    pub node: String,
    /// open | presence | whitelist
    pub access_model: String,
    pub persist_items: bool,
    /// 0 = "max".
    pub max_items: i64,
}

/// One item of a PEP node.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PepItem {
    pub item_id: String,
    pub publisher: Option<String>,
    /// The payload element, serialised.
    pub payload: String,
}

/// One upload in the media repository (the bytes live in files, not in the database).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MediaRecord {
    pub media_id: String,
    pub uploader: String,
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i64,
    /// Lower-case hex SHA-1 of the bytes.
    pub sha1: String,
    pub created_at: i64,
}

/// The storage interface the rest of the server uses. Both backends implement it with the
/// same SQL (written once in `sql.rs`), and pass the same tests.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Apply pending migrations. Idempotent: applied migrations are recorded and skipped.
    async fn migrate(&self) -> Result<()>;

    /// Create an account; [`StoreError::Conflict`] if the localpart is taken (also by a
    /// deactivated account, so that a user ID is never handed to someone else).
    async fn create_account(&self, account: &NewAccount) -> Result<()>;

    async fn account(&self, localpart: &str) -> Result<Option<Account>>;

    /// All accounts, ordered by localpart.
    async fn list_accounts(&self) -> Result<Vec<Account>>;

    /// Replace the password credentials of an active account. Returns false if there is no
    /// such active account.
    async fn set_password(&self, localpart: &str, password: &PasswordCredentials) -> Result<bool>;

    /// Deactivate an account: erase its credentials and profile, delete its devices and
    /// tokens, keep the name reserved. Returns false if there is no such active account.
    async fn deactivate_account(&self, localpart: &str, at: i64) -> Result<bool>;

    /// Set (or, with None, remove) the display name of an active account.
    async fn set_displayname(&self, localpart: &str, displayname: Option<&str>) -> Result<bool>;
    async fn set_avatar_url(&self, localpart: &str, avatar_url: Option<&str>) -> Result<bool>;

    /// Record a login; see [`NewSession`].
    async fn add_session(&self, session: &NewSession) -> Result<()>;
    /// The session of an access token (by its SHA-256), if the token is live and the
    /// account active.
    async fn session(&self, token_sha256: &str) -> Result<Option<Session>>;

    async fn devices(&self, localpart: &str) -> Result<Vec<Device>>;
    async fn device(&self, localpart: &str, device_id: &str) -> Result<Option<Device>>;
    /// Rename a device; false if it does not exist.
    async fn rename_device(&self, localpart: &str, device_id: &str, display_name: Option<&str>) -> Result<bool>;
    /// Delete devices (and their tokens); unknown IDs are ignored.
    async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<()>;
    /// Delete every device of the account except `keep` (all of them with None).
    async fn delete_other_devices(&self, localpart: &str, keep: Option<&str>) -> Result<()>;

    // --- server keys ---

    /// The server's signing key: (key_id, PKCS#8 DER), the oldest if several.
    async fn signing_key(&self) -> Result<Option<(String, Vec<u8>)>>;
    /// Store a new signing key; ignored if the key ID exists.
    async fn add_signing_key(&self, key_id: &str, pkcs8: &[u8], created_at: i64) -> Result<()>;

    // --- rooms and events ---

    async fn room(&self, room_id: &str) -> Result<Option<RoomRecord>>;
    async fn set_room_published(&self, room_id: &str, published: bool) -> Result<()>;
    async fn published_rooms(&self) -> Result<Vec<RoomRecord>>;

    /// Create `rooms` (with their aliases) and append accepted `events`, in one transaction
    /// (all or none; a new room is never stored with only part of its initial state): each
    /// event row (assigning its stream_ordering), the room's current state for state events,
    /// the forward extremities, relations and transaction IDs. The events' stream positions,
    /// in order; [`StoreError::Conflict`] if an alias is taken. Callers serialise appends so
    /// that stream positions become visible in order.
    async fn append_events(&self, rooms: &[&NewRoom], events: &[&NewEvent]) -> Result<Vec<i64>>;
    async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>>;
    async fn txn_event(&self, localpart: &str, device_id: &str, txn_id: &str) -> Result<Option<String>>;
    /// The transaction IDs a device has sent events under, at most `limit` of them.
    async fn device_txn_ids(&self, localpart: &str, device_id: &str, limit: i64) -> Result<Vec<String>>;
    /// An event whose transaction ID matches either LIKE pattern (escape character `!`).
    async fn txn_event_like(&self, localpart: &str, device_id: &str, patterns: [&str; 2]) -> Result<Option<String>>;
    /// The (device ID, transaction ID) an event was sent under, if it was (kept on the event's
    /// row: the sender is the event's own).
    async fn event_txn(&self, event_id: &str) -> Result<Option<(String, String)>>;
    /// The current state events of a room, oldest first.
    async fn current_state(&self, room_id: &str) -> Result<Vec<StoredEvent>>;
    async fn current_state_event(&self, room_id: &str, kind: &str, state_key: &str) -> Result<Option<StoredEvent>>;
    /// The room's state at stream position `at` (see `sql::STATE_AT`), in stream order;
    /// `resets`: with the room's state resets (migration 0019), which a room without any
    /// need not read.
    async fn state_at(&self, room_id: &str, at: i64, resets: bool) -> Result<Vec<StoredEvent>>;
    /// The room's state resets in (after, to], oldest first: (position, type, state key, event).
    async fn state_resets(&self, room_id: &str, after: i64, to: i64) -> Result<Vec<StateReset>>;
    /// The newest state reset of each room that has any: (room, position).
    async fn last_state_resets(&self) -> Result<Vec<(String, i64)>>;
    /// The state group of an event (see [`EventGroup`]); None if the event is not stored.
    async fn event_group(&self, event_id: &str) -> Result<Option<EventGroup>>;
    /// The entries of a state group's chain, the full group first and the group itself last:
    /// applied in order, they make the group's state.
    async fn state_group_chain(&self, group_id: &str) -> Result<Vec<String>>;
    /// The room's forward extremities with their depths.
    async fn forward_extremities(&self, room_id: &str) -> Result<Vec<(String, i64)>>;
    /// Every room the user has a membership in (any state), from the current state.
    async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>>;
    /// Events of a room with from < stream_ordering <= to, oldest first, at most `limit`
    /// taken from the `newest` end when true, else from the oldest end.
    async fn room_events(
        &self,
        room_id: &str,
        from: i64,
        to: i64,
        limit: i64,
        newest: bool,
    ) -> Result<Vec<StoredEvent>>;
    /// The newest `limit` events with from < stream_ordering <= to of each of `rooms`, in
    /// one statement (an initial sync's timelines): oldest first.
    async fn rooms_newest_events(&self, rooms: &[&str], from: i64, to: i64, limit: i64) -> Result<Vec<StoredEvent>>;
    /// Events of every room with from < stream_ordering <= to (of one type when `kind` is
    /// given), oldest first, at most `limit`.
    async fn events_between(&self, from: i64, to: i64, limit: i64, kind: Option<&str>) -> Result<Vec<StoredEvent>>;
    /// The highest stream position assigned so far (0 when there is none).
    async fn max_stream_ordering(&self) -> Result<i64>;

    /// Events relating to `target` (optionally of one rel_type and event type), with
    /// from < stream_ordering <= to, `limit` from the newest end when `newest`.
    #[allow(clippy::too_many_arguments)]
    async fn relating_events(
        &self,
        target: &str,
        rel_type: Option<&str>,
        kind: Option<&str>,
        from: i64,
        to: i64,
        limit: i64,
        newest: bool,
    ) -> Result<Vec<StoredEvent>>;
    /// All relations pointing at any of `targets`, oldest first.
    async fn relations_to(&self, targets: &[String]) -> Result<Vec<Relation>>;
    /// m.room.message events in the given rooms whose JSON contains `needle` (lower case,
    /// compared case-insensitively), newest first, below `before`. Callers check the body.
    async fn search_messages(
        &self,
        room_ids: &[String],
        needle: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>>;
    /// Thread roots of a room (events with at least one m.thread relation), newest thread
    /// activity first, with latest activity below `before`.
    async fn thread_roots(&self, room_id: &str, before: i64, limit: i64) -> Result<Vec<(String, i64)>>;

    async fn add_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<()>;
    async fn alias(&self, alias: &str) -> Result<Option<String>>;
    async fn delete_alias(&self, alias: &str) -> Result<bool>;
    async fn alias_creator(&self, alias: &str) -> Result<Option<String>>;
    /// Every event of one state key in a room (a user's m.room.member events, the history
    /// visibility changes), oldest first: (stream_ordering, pdu JSON).
    async fn state_history(&self, room_id: &str, kind: &str, state_key: &str) -> Result<Vec<(i64, String)>>;

    async fn add_filter(&self, localpart: &str, json: &str) -> Result<i64>;
    async fn filter(&self, localpart: &str, filter_id: i64) -> Result<Option<String>>;

    // --- account data and receipts ---

    /// Set account data (room_id "" = global); returns its new stream position.
    async fn set_account_data(&self, localpart: &str, room_id: &str, kind: &str, content: &str) -> Result<i64>;
    async fn account_data(&self, localpart: &str, room_id: &str, kind: &str) -> Result<Option<String>>;
    /// Account data of a user changed after `since` (all of it with since = 0).
    async fn account_data_since(&self, localpart: &str, since: i64) -> Result<Vec<AccountDataRow>>;
    async fn max_account_data_stream(&self) -> Result<i64>;

    /// Record a receipt, replacing the user's previous one of that type and thread.
    async fn set_receipt(&self, receipt: &Receipt) -> Result<i64>;
    /// Receipts in a room changed after `since` (all with since = 0).
    async fn receipts_since(&self, room_id: &str, since: i64) -> Result<Vec<Receipt>>;
    /// Receipts of every room set after `since`, oldest first, at most `limit`.
    async fn receipts_after(&self, since: i64, limit: i64) -> Result<Vec<Receipt>>;
    async fn max_receipt_stream(&self) -> Result<i64>;
    /// The stream position of the event of the user's latest read receipt (public or
    /// private) in a room; 0 if none.
    async fn read_up_to(&self, room_id: &str, user_id: &str) -> Result<i64>;
    /// Unredacted non-state events from others in a room after stream position `after`,
    /// newest first, at most `limit`: what unread counts are computed from.
    async fn unread_events(&self, room_id: &str, user_id: &str, after: i64, limit: i64) -> Result<Vec<StoredEvent>>;

    // --- end-to-end encryption keys (opaque to the server) ---

    /// Store a device's identity keys; records a device-list change for the user when they
    /// are new or different. Returns the change's stream position, if any.
    async fn set_device_keys(
        &self,
        localpart: &str,
        device_id: &str,
        user_id: &str,
        key_json: &str,
    ) -> Result<Option<i64>>;
    /// (device_id, key JSON) of every device of the user that uploaded keys.
    async fn device_keys(&self, localpart: &str) -> Result<Vec<(String, String)>>;
    /// Add one-time keys (algorithm, key_id, JSON); a key ID already present is kept as is.
    async fn add_one_time_keys(
        &self,
        localpart: &str,
        device_id: &str,
        keys: &[(String, String, String)],
    ) -> Result<()>;
    /// Replace the device's fallback key for an algorithm (unused again).
    async fn set_fallback_key(
        &self,
        localpart: &str,
        device_id: &str,
        algorithm: &str,
        key_id: &str,
        key_json: &str,
    ) -> Result<()>;
    /// The unclaimed one-time keys per algorithm and the algorithms of the unused fallback
    /// keys, in one statement (every `/sync` response carries both).
    async fn key_counts(&self, localpart: &str, device_id: &str) -> Result<(Vec<(String, i64)>, Vec<String>)>;
    /// Claim a key of `algorithm` for a device: a one-time key (removed, so it is given out
    /// once even under concurrent claims), else the fallback key (marked used, kept).
    async fn claim_key(&self, localpart: &str, device_id: &str, algorithm: &str) -> Result<Option<(String, String)>>;
    /// Forget a device's keys and pending to-device messages (device deleted); records a
    /// device-list change. Returns its stream position.
    async fn delete_device_keys(&self, localpart: &str, device_id: &str, user_id: &str) -> Result<i64>;
    /// Users whose device lists changed with after < stream_id <= upto.
    async fn device_list_changes(&self, after: i64, upto: i64) -> Result<Vec<String>>;
    async fn max_device_list_stream(&self) -> Result<i64>;

    /// Record that a user's device list (or cross-signing keys) changed.
    async fn add_device_list_change(&self, user_id: &str) -> Result<i64>;
    async fn cross_signing_key(&self, localpart: &str, key_type: &str) -> Result<Option<String>>;
    async fn set_cross_signing_key(&self, localpart: &str, key_type: &str, key_json: &str) -> Result<()>;

    // --- key backup (room_keys), opaque to the server ---

    /// Create the next backup version (1, 2, ...).
    async fn create_backup_version(&self, localpart: &str, algorithm: &str, auth_data: &str) -> Result<i64>;
    /// A backup version that is not deleted; the latest with None.
    async fn backup_version(&self, localpart: &str, version: Option<i64>) -> Result<Option<BackupVersion>>;
    async fn update_backup_version(&self, localpart: &str, version: i64, auth_data: &str) -> Result<bool>;
    /// Delete a version and its keys.
    async fn delete_backup_version(&self, localpart: &str, version: i64) -> Result<bool>;
    /// Store (insert or replace) keys and bump the version's etag, in one transaction.
    async fn put_backup_keys(&self, localpart: &str, version: i64, keys: &[BackupKey]) -> Result<()>;
    /// Keys of a version, optionally of one room, optionally of one session.
    async fn backup_keys(
        &self,
        localpart: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKey>>;
    async fn delete_backup_keys(
        &self,
        localpart: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<()>;
    async fn backup_key_count(&self, localpart: &str, version: i64) -> Result<i64>;

    /// Create a device with no access token (a dehydrated device); no-op if it exists.
    async fn create_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
        created_at: i64,
    ) -> Result<()>;
    /// Record the user's dehydrated device (replacing the record of a previous one).
    async fn set_dehydrated_device(&self, localpart: &str, device_id: &str, device_data: &str) -> Result<()>;
    /// (device_id, device_data) of the user's dehydrated device.
    async fn dehydrated_device(&self, localpart: &str) -> Result<Option<(String, String)>>;
    async fn delete_dehydrated_device(&self, localpart: &str) -> Result<()>;

    // --- XMPP rosters ---

    async fn roster(&self, localpart: &str) -> Result<Vec<RosterItem>>;
    async fn roster_item(&self, localpart: &str, contact: &str) -> Result<Option<RosterItem>>;
    /// Insert or replace an item and bump the roster version; returns the new version.
    async fn put_roster_item(&self, localpart: &str, item: &RosterItem) -> Result<i64>;
    /// Remove an item and bump the version; returns the new version.
    async fn remove_roster_item(&self, localpart: &str, contact: &str) -> Result<i64>;
    async fn roster_version(&self, localpart: &str) -> Result<i64>;

    // --- forgotten rooms ---
    /// Record that `user_id` forgot `room_id` at membership event `member_event`.
    async fn forget_room(&self, user_id: &str, room_id: &str, member_event: &str) -> Result<()>;
    /// The rooms a user forgot: (room, membership event at the time).
    async fn forgotten_rooms(&self, user_id: &str) -> Result<Vec<(String, String)>>;

    // --- PEP (XEP-0163) ---
    async fn pep_node(&self, owner: &str, node: &str) -> Result<Option<PepNode>>;
    async fn pep_nodes(&self, owner: &str) -> Result<Vec<PepNode>>;
    /// Create the node or change its configuration (items beyond a smaller max_items go).
    async fn put_pep_node(&self, node: &PepNode) -> Result<()>;
    /// Delete a node with its items; false if there was none.
    async fn delete_pep_node(&self, owner: &str, node: &str) -> Result<bool>;
    /// Publish (or replace) an item as the newest, keeping at most `keep` items.
    async fn pep_publish(&self, owner: &str, node: &str, item: &PepItem, keep: i64) -> Result<()>;
    /// Items, newest first, at most `limit`.
    async fn pep_items(&self, owner: &str, node: &str, limit: i64) -> Result<Vec<PepItem>>;
    /// Retract an item; false if there was none.
    async fn pep_retract(&self, owner: &str, node: &str, item_id: &str) -> Result<bool>;

    // --- media repository ---
    async fn add_media(&self, record: &MediaRecord) -> Result<()>;
    async fn media(&self, media_id: &str) -> Result<Option<MediaRecord>>;

    // --- XMPP messages kept until delivered (offline, and in flight to a session) ---
    /// Keep a stanza for an account without a session, unless it already holds `limit`;
    /// its id, or None when full. Durable when this returns.
    async fn offline_push(&self, localpart: &str, stanza: &str, limit: i64) -> Result<Option<i64>>;
    /// An account's kept stanzas, oldest first, with their ids.
    async fn offline_list(&self, localpart: &str) -> Result<Vec<(i64, String)>>;
    /// Forget delivered stanzas.
    async fn offline_delete(&self, ids: &[i64]) -> Result<()>;
    /// Group commit: keep these (account, stanza) pairs and forget these ids in one
    /// transaction; the ids of the kept, in order.
    async fn offline_batch(&self, keep: &[(String, String)], forget: &[i64]) -> Result<Vec<i64>>;

    /// Queue to-device messages; with a (localpart, device, txn_id) already seen, nothing is
    /// queued and None is returned. Else the last stream position used.
    async fn add_to_device(&self, messages: &[NewToDevice], txn: Option<(&str, &str, &str)>) -> Result<Option<i64>>;
    /// Messages for a device with after < stream_id <= upto, oldest first, at most `limit`.
    async fn to_device(
        &self,
        localpart: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceMessage>>;
    /// Delete a device's messages up to `upto` (acknowledged by its next sync).
    async fn delete_to_device(&self, localpart: &str, device_id: &str, upto: i64) -> Result<()>;
    async fn max_to_device_stream(&self) -> Result<i64>;
    /// The newest row of each key of the keyed streams.
    async fn newest_rows(&self) -> Result<NewestRows>;

    /// Close the pool, waiting for connections in use to be returned (clean shutdown; for
    /// SQLite this also checkpoints the WAL).
    async fn close(&self);
}

/// Open the store named by a database URL (`sqlite://PATH` or `postgres://...`) and run
/// its migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PgStore::connect(url).await?)
    } else {
        return Err(StoreError::BadUrl(url.to_owned()));
    };
    store.migrate().await?;
    Ok(store)
}

/// Check that a database URL names a supported backend and parses, without connecting.
pub fn check_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    if url.starts_with("sqlite:") {
        let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
        if path.is_empty() {
            return Err("sqlite URL has no file path (sqlite://PATH)".to_owned());
        }
        sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        Ok(())
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        Ok(())
    } else {
        Err(format!(
            "unsupported database URL {url:?}: expected \"\" (SQLite in data_dir), sqlite://PATH or postgres://..."
        ))
    }
}
