//! SQL shared by both backends, in the portable subset with `$N` placeholders.
//!
//! A bound `LIMIT` or `OFFSET` is written `CAST($N AS BIGINT)`: SQLite (3.51) reads a bare
//! `LIMIT $N` at prepare time, which marks the statement to be prepared again each time `$N`
//! is bound, so every execution parsed and planned it anew (15 % of the server's CPU in the
//! paced Matrix benchmark). A cast is evaluated when the statement runs.

macro_rules! account_columns {
    () => {
        "localpart, password_hash, scram_salt, scram_iterations, scram_sha1_stored_key, \
         scram_sha1_server_key, scram_sha256_stored_key, scram_sha256_server_key, displayname, \
         avatar_url, admin, created_at, deactivated_at"
    };
}

pub const INSERT_ACCOUNT: &str = "INSERT INTO accounts (localpart, password_hash, scram_salt, \
    scram_iterations, scram_sha1_stored_key, scram_sha1_server_key, scram_sha256_stored_key, \
    scram_sha256_server_key, admin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub const SET_PASSWORD: &str = "UPDATE accounts SET password_hash = $2, scram_salt = $3, \
    scram_iterations = $4, scram_sha1_stored_key = $5, scram_sha1_server_key = $6, \
    scram_sha256_stored_key = $7, scram_sha256_server_key = $8 \
    WHERE localpart = $1 AND deactivated_at IS NULL";

pub const DEACTIVATE_ACCOUNT: &str = "UPDATE accounts SET password_hash = NULL, \
    scram_salt = NULL, scram_iterations = NULL, scram_sha1_stored_key = NULL, \
    scram_sha1_server_key = NULL, scram_sha256_stored_key = NULL, \
    scram_sha256_server_key = NULL, displayname = NULL, avatar_url = NULL, \
    deactivated_at = $2 WHERE localpart = $1 AND deactivated_at IS NULL";

pub const SELECT_ACCOUNT: &str = concat!("SELECT ", account_columns!(), " FROM accounts WHERE localpart = $1");

pub const LIST_ACCOUNTS: &str = concat!("SELECT ", account_columns!(), " FROM accounts ORDER BY localpart");

pub const SET_DISPLAYNAME: &str =
    "UPDATE accounts SET displayname = $2 WHERE localpart = $1 AND deactivated_at IS NULL";
pub const SET_AVATAR_URL: &str = "UPDATE accounts SET avatar_url = $2 WHERE localpart = $1 AND deactivated_at IS NULL";

pub const INSERT_DEVICE_IF_NEW: &str = "INSERT INTO devices (localpart, device_id, display_name, created_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (localpart, device_id) DO NOTHING";
/// Logging in again on a device revokes the tokens it had (spec: POST /login, device_id).
pub const DELETE_DEVICE_TOKENS: &str = "DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2";
pub const INSERT_TOKEN: &str =
    "INSERT INTO access_tokens (token_sha256, localpart, device_id, created_at) VALUES ($1, $2, $3, $4)";
pub const SESSION_BY_TOKEN: &str = "SELECT t.localpart, t.device_id FROM access_tokens t \
    JOIN accounts a ON a.localpart = t.localpart \
    WHERE t.token_sha256 = $1 AND a.deactivated_at IS NULL";
pub const LIST_DEVICES: &str = "SELECT device_id, display_name, created_at FROM devices \
    WHERE localpart = $1 ORDER BY device_id";
pub const GET_DEVICE: &str = "SELECT device_id, display_name, created_at FROM devices \
    WHERE localpart = $1 AND device_id = $2";
pub const RENAME_DEVICE: &str = "UPDATE devices SET display_name = $3 WHERE localpart = $1 AND device_id = $2";
pub const DELETE_DEVICE: &str = "DELETE FROM devices WHERE localpart = $1 AND device_id = $2";
/// Deleting a device deletes its tokens (ON DELETE CASCADE).
pub const DELETE_OTHER_DEVICES: &str = "DELETE FROM devices WHERE localpart = $1 AND ($2 IS NULL OR device_id <> $2)";

pub const SIGNING_KEY: &str = "SELECT key_id, pkcs8 FROM server_signing_keys ORDER BY created_at, key_id LIMIT 1";
pub const ADD_SIGNING_KEY: &str =
    "INSERT INTO server_signing_keys (key_id, pkcs8, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING";

pub const CREATE_ROOM: &str =
    "INSERT INTO rooms (room_id, room_version, creator, created_at, published) VALUES ($1, $2, $3, $4, $5)";
pub const ROOM: &str = "SELECT room_id, room_version, creator, created_at, published FROM rooms WHERE room_id = $1";
pub const SET_ROOM_PUBLISHED: &str = "UPDATE rooms SET published = $2 WHERE room_id = $1";
pub const PUBLISHED_ROOMS: &str =
    "SELECT room_id, room_version, creator, created_at, published FROM rooms WHERE published ORDER BY created_at";

macro_rules! event_columns {
    () => {
        "stream_ordering, event_id, room_id, depth, sender, type, state_key, origin_server_ts, pdu, redacted_by, \
         replaces_state, prev_content, redacted_because"
    };
}
pub(crate) use event_columns;

macro_rules! event_columns_e {
    () => {
        "e.stream_ordering, e.event_id, e.room_id, e.depth, e.sender, e.type, e.state_key, e.origin_server_ts, \
         e.pdu, e.redacted_by, e.replaces_state, e.prev_content, e.redacted_because"
    };
}
pub(crate) use event_columns_e;

pub const INSERT_STATE_GROUP: &str =
    "INSERT INTO state_groups (group_id, room_id, prev_group, chain, entries) VALUES ($1, $2, $3, $4, $5)";
pub const DELETE_CURRENT_STATE: &str =
    "DELETE FROM room_current_state WHERE room_id = $1 AND type = $2 AND state_key = $3";
pub const EVENT_GROUP: &str = "SELECT e.room_id, e.stream_ordering, e.state_group, g.chain FROM events e \
    LEFT JOIN state_groups g ON g.group_id = e.state_group WHERE e.event_id = $1";
/// A state group and the groups it is a delta of, back to a full one; oldest first.
pub const STATE_GROUP_CHAIN: &str = "WITH RECURSIVE chain (group_id, prev_group, entries, n) AS ( \
    SELECT group_id, prev_group, entries, 0 FROM state_groups WHERE group_id = $1 \
    UNION ALL SELECT g.group_id, g.prev_group, g.entries, c.n + 1 FROM state_groups g \
    JOIN chain c ON g.group_id = c.prev_group) SELECT entries FROM chain ORDER BY n DESC";
pub const UPSERT_CURRENT_STATE: &str = "INSERT INTO room_current_state \
    (room_id, type, state_key, event_id, stream_ordering, membership) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, \
    stream_ordering = excluded.stream_ordering, membership = excluded.membership";
/// Heads of multi-row statements (`QueryBuilder::push_values` adds the rows).
pub const DELETE_EXTREMITIES: &str = "DELETE FROM room_forward_extremities WHERE (room_id, event_id) IN (";
pub const ADD_EXTREMITIES: &str = "INSERT INTO room_forward_extremities (room_id, event_id) ";
pub const INSERT_TXNS: &str = "INSERT INTO event_txn_ids (localpart, device_id, txn_id, event_id) ";
pub const INSERT_EVENTS: &str = "INSERT INTO events (event_id, room_id, depth, sender, type, state_key, \
    origin_server_ts, pdu, replaces_state, prev_content, state_group, txn_device, txn_id) ";
pub const TXN_EVENT: &str =
    "SELECT event_id FROM event_txn_ids WHERE localpart = $1 AND device_id = $2 AND txn_id = $3";
pub const DEVICE_TXN_IDS: &str = "SELECT txn_id FROM event_txn_ids WHERE localpart = $1 AND device_id = $2 LIMIT $3";
pub const TXN_EVENT_LIKE: &str = "SELECT event_id FROM event_txn_ids WHERE localpart = $1 AND device_id = $2 \
     AND (txn_id LIKE $3 ESCAPE '!' OR txn_id LIKE $4 ESCAPE '!') LIMIT 1";
pub const EVENT_TXN: &str = "SELECT txn_device, txn_id FROM events WHERE event_id = $1 AND txn_id IS NOT NULL";
pub const EVENT: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE event_id = $1");
pub const REDACT_EVENT: &str =
    "UPDATE events SET pdu = $2, redacted_by = $3, redacted_because = $4 WHERE event_id = $1";
pub const CURRENT_STATE: &str = concat!(
    "SELECT ",
    event_columns_e!(),
    " FROM room_current_state s JOIN events e ON e.event_id = s.event_id WHERE s.room_id = $1 \
     ORDER BY e.stream_ordering"
);
/// The room's state at a stream position: of each (type, state_key), the newest event at or
/// before it. Exact for a room whose current state was never reset by state resolution.
pub const STATE_AT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM (SELECT ",
    event_columns!(),
    ", ROW_NUMBER() OVER (PARTITION BY type, state_key ORDER BY stream_ordering DESC) AS newest \
     FROM events WHERE room_id = $1 AND state_key IS NOT NULL AND stream_ordering <= $2) s \
     WHERE newest = 1 ORDER BY stream_ordering"
);
/// [`STATE_AT`] with the room's state resets: of each key, the newest of its state events and
/// its resets up to the position (a reset made at an event's own position wins over it); a
/// reset to no event removes the key.
pub const STATE_AT_WITH_RESETS: &str = concat!(
    "SELECT ",
    event_columns_e!(),
    " FROM (SELECT event_id, ROW_NUMBER() OVER (PARTITION BY type, state_key ORDER BY at DESC, reset DESC) \
     AS newest FROM (SELECT type, state_key, event_id, stream_ordering AS at, 0 AS reset FROM events \
     WHERE room_id = $1 AND state_key IS NOT NULL AND stream_ordering <= $2 \
     UNION ALL SELECT type, state_key, event_id, stream_ordering, 1 FROM state_resets \
     WHERE room_id = $1 AND stream_ordering <= $2) w) s \
     JOIN events e ON e.event_id = s.event_id WHERE s.newest = 1 ORDER BY e.stream_ordering"
);
pub const INSERT_STATE_RESET: &str =
    "INSERT INTO state_resets (room_id, stream_ordering, type, state_key, event_id) VALUES ($1, $2, $3, $4, $5)";
pub const STATE_RESETS: &str = "SELECT stream_ordering, type, state_key, event_id FROM state_resets \
    WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY stream_ordering";
pub const LAST_STATE_RESETS: &str = "SELECT room_id, MAX(stream_ordering) FROM state_resets GROUP BY room_id";
pub const CURRENT_STATE_EVENT: &str = concat!(
    "SELECT ",
    event_columns_e!(),
    " FROM room_current_state s JOIN events e ON e.event_id = s.event_id \
     WHERE s.room_id = $1 AND s.type = $2 AND s.state_key = $3"
);
pub const FORWARD_EXTREMITIES: &str = "SELECT f.event_id, e.depth FROM room_forward_extremities f \
    JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY e.depth, f.event_id";
pub const MEMBERSHIPS: &str = "SELECT room_id, membership, event_id, stream_ordering FROM room_current_state \
    WHERE type = 'm.room.member' AND state_key = $1 ORDER BY stream_ordering";
pub const ROOM_EVENTS_NEWEST: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
     ORDER BY stream_ordering DESC LIMIT CAST($4 AS BIGINT)"
);
pub const ROOM_EVENTS_OLDEST: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
     ORDER BY stream_ordering ASC LIMIT CAST($4 AS BIGINT)"
);
pub const EVENTS_BETWEEN: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2 AND ($4 IS NULL OR type = $4) \
     ORDER BY stream_ordering ASC LIMIT CAST($3 AS BIGINT)"
);
pub const MAX_STREAM: &str = "SELECT COALESCE(MAX(stream_ordering), 0) FROM events";

pub const ADD_ALIAS: &str = "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)";
pub const ALIAS: &str = "SELECT room_id FROM room_aliases WHERE alias = $1";
pub const DELETE_ALIAS: &str = "DELETE FROM room_aliases WHERE alias = $1";

pub const ADD_FILTER: &str = "INSERT INTO filters (localpart, json) VALUES ($1, $2) RETURNING filter_id";
pub const FILTER: &str = "SELECT json FROM filters WHERE localpart = $1 AND filter_id = $2";

pub const DELETE_ACCOUNT_DATA: &str = "DELETE FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3";
pub const INSERT_ACCOUNT_DATA: &str =
    "INSERT INTO account_data (localpart, room_id, type, content) VALUES ($1, $2, $3, $4) RETURNING stream_id";
pub const ACCOUNT_DATA: &str = "SELECT content FROM account_data WHERE localpart = $1 AND room_id = $2 AND type = $3";
pub const ACCOUNT_DATA_SINCE: &str = "SELECT stream_id, room_id, type, content FROM account_data \
    WHERE localpart = $1 AND stream_id > $2 ORDER BY stream_id";
pub const MAX_ACCOUNT_DATA: &str = "SELECT COALESCE(MAX(stream_id), 0) FROM account_data";

pub const DELETE_RECEIPT: &str =
    "DELETE FROM receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4";
pub const INSERT_RECEIPT: &str = "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts) \
    VALUES ($1, $2, $3, $4, $5, $6) RETURNING stream_id";
pub const RECEIPTS_SINCE: &str = "SELECT stream_id, room_id, user_id, receipt_type, thread_id, event_id, ts \
    FROM receipts WHERE room_id = $1 AND stream_id > $2 ORDER BY stream_id";
pub const RECEIPTS_AFTER: &str = "SELECT stream_id, room_id, user_id, receipt_type, thread_id, event_id, ts \
    FROM receipts WHERE stream_id > $1 ORDER BY stream_id LIMIT CAST($2 AS BIGINT)";
pub const MAX_RECEIPT: &str = "SELECT COALESCE(MAX(stream_id), 0) FROM receipts";
pub const UNREAD_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events e WHERE e.room_id = $1 AND e.sender <> $2 AND e.state_key IS NULL AND e.redacted_by IS NULL \
     AND e.stream_ordering > $3 ORDER BY e.stream_ordering DESC LIMIT CAST($4 AS BIGINT)"
);
pub const READ_UP_TO: &str = "SELECT COALESCE(MAX(ev.stream_ordering), 0) FROM receipts r \
     JOIN events ev ON ev.event_id = r.event_id WHERE r.room_id = $1 AND r.user_id = $2 \
     AND r.receipt_type IN ('m.read', 'm.read.private')";

pub const INSERT_RELATION: &str = "INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, sender, \
    stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING";
pub const DELETE_RELATION: &str = "DELETE FROM event_relations WHERE event_id = $1";
pub const RELATING_NEWEST: &str = concat!(
    "SELECT ",
    event_columns_e!(),
    " FROM event_relations r JOIN events e ON e.event_id = r.event_id WHERE r.relates_to = $1 \
     AND ($2 IS NULL OR r.rel_type = $2) AND ($3 IS NULL OR r.type = $3) \
     AND r.stream_ordering > $4 AND r.stream_ordering <= $5 ORDER BY r.stream_ordering DESC LIMIT CAST($6 AS BIGINT)"
);
pub const RELATING_OLDEST: &str = concat!(
    "SELECT ",
    event_columns_e!(),
    " FROM event_relations r JOIN events e ON e.event_id = r.event_id WHERE r.relates_to = $1 \
     AND ($2 IS NULL OR r.rel_type = $2) AND ($3 IS NULL OR r.type = $3) \
     AND r.stream_ordering > $4 AND r.stream_ordering <= $5 ORDER BY r.stream_ordering ASC LIMIT CAST($6 AS BIGINT)"
);
pub const THREAD_ROOTS: &str = "SELECT relates_to, MAX(stream_ordering) AS latest FROM event_relations \
    WHERE room_id = $1 AND rel_type = 'm.thread' GROUP BY relates_to HAVING MAX(stream_ordering) < $2 \
    ORDER BY latest DESC LIMIT CAST($3 AS BIGINT)";

/// Affects no row when the stored keys are identical: a re-upload is not a change.
pub const UPSERT_DEVICE_KEYS: &str = "INSERT INTO e2e_device_keys (localpart, device_id, key_json) VALUES ($1, $2, $3) \
    ON CONFLICT (localpart, device_id) DO UPDATE SET key_json = excluded.key_json \
    WHERE e2e_device_keys.key_json <> excluded.key_json";
pub const DEVICE_KEYS: &str = "SELECT device_id, key_json FROM e2e_device_keys WHERE localpart = $1 ORDER BY device_id";
pub const ADD_DEVICE_LIST_CHANGE: &str =
    "INSERT INTO e2e_device_list_changes (user_id) VALUES ($1) RETURNING stream_id";
pub const ADD_OTK: &str = "INSERT INTO e2e_one_time_keys (localpart, device_id, algorithm, key_id, key_json) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (localpart, device_id, algorithm, key_id) DO NOTHING";
pub const SET_FALLBACK: &str = "INSERT INTO e2e_fallback_keys (localpart, device_id, algorithm, key_id, key_json, used) \
    VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (localpart, device_id, algorithm) DO UPDATE SET \
    key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE";
pub const KEY_COUNTS: &str = "SELECT algorithm, COUNT(*), FALSE FROM e2e_one_time_keys \
    WHERE localpart = $1 AND device_id = $2 GROUP BY algorithm \
    UNION ALL SELECT algorithm, CAST(0 AS BIGINT), TRUE FROM e2e_fallback_keys \
    WHERE localpart = $1 AND device_id = $2 AND NOT used ORDER BY 3, 1";
pub const CLAIM_FALLBACK: &str = "UPDATE e2e_fallback_keys SET used = TRUE WHERE localpart = $1 AND device_id = $2 \
    AND algorithm = $3 RETURNING key_id, key_json";
pub const DELETE_DEVICE_KEYS: &str = "DELETE FROM e2e_device_keys WHERE localpart = $1 AND device_id = $2";
pub const DELETE_OTKS: &str = "DELETE FROM e2e_one_time_keys WHERE localpart = $1 AND device_id = $2";
pub const DELETE_FALLBACKS: &str = "DELETE FROM e2e_fallback_keys WHERE localpart = $1 AND device_id = $2";
pub const DELETE_ALL_TO_DEVICE: &str = "DELETE FROM to_device_messages WHERE localpart = $1 AND device_id = $2";
pub const DEVICE_LIST_CHANGES: &str = "SELECT DISTINCT user_id FROM e2e_device_list_changes \
    WHERE stream_id > $1 AND stream_id <= $2 ORDER BY user_id";
pub const MAX_DEVICE_LIST: &str = "SELECT COALESCE(MAX(stream_id), 0) FROM e2e_device_list_changes";
pub const ADD_TO_DEVICE_TXN: &str = "INSERT INTO to_device_txn_ids (localpart, device_id, txn_id) VALUES ($1, $2, $3) \
    ON CONFLICT (localpart, device_id, txn_id) DO NOTHING";
pub const ADD_TO_DEVICE: &str = "INSERT INTO to_device_messages (localpart, device_id, sender, type, content) \
    VALUES ($1, $2, $3, $4, $5) RETURNING stream_id";
pub const TO_DEVICE: &str = "SELECT stream_id, sender, type, content FROM to_device_messages WHERE localpart = $1 \
    AND device_id = $2 AND stream_id > $3 AND stream_id <= $4 ORDER BY stream_id LIMIT CAST($5 AS BIGINT)";
pub const DELETE_TO_DEVICE: &str =
    "DELETE FROM to_device_messages WHERE localpart = $1 AND device_id = $2 AND stream_id <= $3";
pub const MAX_TO_DEVICE: &str = "SELECT COALESCE(MAX(stream_id), 0) FROM to_device_messages";
pub const NEWEST_ROOM_EVENTS: &str = "SELECT room_id, MAX(stream_ordering) FROM events GROUP BY room_id";
pub const NEWEST_ROOM_STATE: &str = "SELECT room_id, MAX(stream_ordering) FROM events \
    WHERE state_key IS NOT NULL OR type = 'm.room.redaction' GROUP BY room_id";
pub const NEWEST_ROOM_RELATIONS: &str = "SELECT room_id, MAX(stream_ordering) FROM event_relations GROUP BY room_id";
pub const NEWEST_ROOM_RECEIPTS: &str = "SELECT room_id, MAX(stream_id) FROM receipts GROUP BY room_id";
pub const NEWEST_USER_ACCOUNT_DATA: &str = "SELECT localpart, MAX(stream_id) FROM account_data GROUP BY localpart";
pub const NEWEST_DEVICE_TO_DEVICE: &str =
    "SELECT localpart, device_id, MAX(stream_id) FROM to_device_messages GROUP BY localpart, device_id";

pub const CROSS_SIGNING_KEY: &str =
    "SELECT key_json FROM e2e_cross_signing_keys WHERE localpart = $1 AND key_type = $2";
pub const SET_CROSS_SIGNING_KEY: &str = "INSERT INTO e2e_cross_signing_keys (localpart, key_type, key_json) VALUES ($1, $2, $3) \
    ON CONFLICT (localpart, key_type) DO UPDATE SET key_json = excluded.key_json";

pub const CREATE_BACKUP_VERSION: &str = "INSERT INTO backup_versions (localpart, version, algorithm, auth_data, etag) \
    SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0 FROM backup_versions WHERE localpart = $1 RETURNING version";
pub const BACKUP_VERSION: &str = "SELECT version, algorithm, auth_data, etag FROM backup_versions \
    WHERE localpart = $1 AND version = $2 AND NOT deleted";
pub const LATEST_BACKUP_VERSION: &str = "SELECT version, algorithm, auth_data, etag FROM backup_versions \
    WHERE localpart = $1 AND NOT deleted ORDER BY version DESC LIMIT 1";
pub const UPDATE_BACKUP_VERSION: &str =
    "UPDATE backup_versions SET auth_data = $3 WHERE localpart = $1 AND version = $2 AND NOT deleted";
pub const DELETE_BACKUP_VERSION: &str =
    "UPDATE backup_versions SET deleted = TRUE WHERE localpart = $1 AND version = $2 AND NOT deleted";
pub const BUMP_BACKUP_ETAG: &str = "UPDATE backup_versions SET etag = etag + 1 WHERE localpart = $1 AND version = $2";
pub const PUT_BACKUP_KEY: &str = "INSERT INTO backup_keys (localpart, version, room_id, session_id, first_message_index, \
    forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
    ON CONFLICT (localpart, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index, \
    forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data";
pub const BACKUP_KEYS: &str = "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
    FROM backup_keys WHERE localpart = $1 AND version = $2 AND ($3 IS NULL OR room_id = $3) \
    AND ($4 IS NULL OR session_id = $4) ORDER BY room_id, session_id";
pub const DELETE_BACKUP_KEYS: &str = "DELETE FROM backup_keys WHERE localpart = $1 AND version = $2 \
    AND ($3 IS NULL OR room_id = $3) AND ($4 IS NULL OR session_id = $4)";
pub const BACKUP_KEY_COUNT: &str = "SELECT COUNT(*) FROM backup_keys WHERE localpart = $1 AND version = $2";

pub const SET_DEHYDRATED: &str = "INSERT INTO dehydrated_devices (localpart, device_id, device_data) VALUES ($1, $2, $3) \
    ON CONFLICT (localpart) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data";
pub const DEHYDRATED: &str = "SELECT device_id, device_data FROM dehydrated_devices WHERE localpart = $1";
pub const DELETE_DEHYDRATED: &str = "DELETE FROM dehydrated_devices WHERE localpart = $1";
pub const ALIAS_CREATOR: &str = "SELECT creator FROM room_aliases WHERE alias = $1";
pub const STATE_HISTORY: &str = "SELECT stream_ordering, pdu FROM events WHERE room_id = $1 AND type = $2 \
    AND state_key = $3 ORDER BY stream_ordering";

pub const ROSTER: &str = "SELECT contact, name, subscription, ask, pending_in, groups FROM roster_items \
    WHERE localpart = $1 ORDER BY contact";
pub const ROSTER_ITEM: &str = "SELECT contact, name, subscription, ask, pending_in, groups FROM roster_items \
    WHERE localpart = $1 AND contact = $2";
pub const PUT_ROSTER_ITEM: &str = "INSERT INTO roster_items (localpart, contact, name, subscription, ask, pending_in, groups) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (localpart, contact) DO UPDATE SET name = excluded.name, \
    subscription = excluded.subscription, ask = excluded.ask, pending_in = excluded.pending_in, groups = excluded.groups";
pub const REMOVE_ROSTER_ITEM: &str = "DELETE FROM roster_items WHERE localpart = $1 AND contact = $2";
pub const BUMP_ROSTER_VERSION: &str = "INSERT INTO roster_versions (localpart, version) VALUES ($1, 1) \
    ON CONFLICT (localpart) DO UPDATE SET version = roster_versions.version + 1 RETURNING version";
pub const ROSTER_VERSION: &str = "SELECT version FROM roster_versions WHERE localpart = $1";
/// One statement (no read-then-write transaction): the account's quota is checked as it inserts.
pub const OFFLINE_PUSH: &str = "INSERT INTO xmpp_offline (localpart, stanza) SELECT $1, $2 \
    WHERE (SELECT COUNT(*) FROM xmpp_offline WHERE localpart = $1) < $3 RETURNING id";
pub const OFFLINE_ADD: &str = "INSERT INTO xmpp_offline (localpart, stanza) VALUES ($1, $2) RETURNING id";
pub const OFFLINE_LIST: &str = "SELECT id, stanza FROM xmpp_offline WHERE localpart = $1 ORDER BY id";
pub const OFFLINE_DELETE: &str = "DELETE FROM xmpp_offline WHERE id = $1";
pub const OFFLINE_ERASE: &str = "DELETE FROM xmpp_offline WHERE localpart = $1";
pub const ADD_MEDIA: &str = "INSERT INTO media (media_id, uploader, content_type, filename, size, sha1, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub const MEDIA: &str = "SELECT media_id, uploader, content_type, filename, size, sha1, created_at FROM media \
    WHERE media_id = $1";
pub const PEP_NODE: &str = "SELECT owner, node, access_model, persist_items, max_items FROM pep_nodes \
    WHERE owner = $1 AND node = $2";
pub const PEP_NODES: &str = "SELECT owner, node, access_model, persist_items, max_items FROM pep_nodes \
    WHERE owner = $1 ORDER BY node";
pub const PUT_PEP_NODE: &str = "INSERT INTO pep_nodes (owner, node, access_model, persist_items, max_items) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner, node) DO UPDATE SET access_model = excluded.access_model, \
    persist_items = excluded.persist_items, max_items = excluded.max_items";
pub const DELETE_PEP_NODE: &str = "DELETE FROM pep_nodes WHERE owner = $1 AND node = $2";
pub const DELETE_PEP_NODE_ITEMS: &str = "DELETE FROM pep_items WHERE owner = $1 AND node = $2";
pub const PEP_PUBLISH: &str = "INSERT INTO pep_items (owner, node, item_id, seq, publisher, payload) \
    VALUES ($1, $2, $3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE owner = $1 AND node = $2), $4, $5) \
    ON CONFLICT (owner, node, item_id) DO UPDATE SET seq = excluded.seq, publisher = excluded.publisher, \
    payload = excluded.payload";
/// Keep the newest $3 items.
pub const PEP_TRIM: &str = "DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND seq <= \
    (SELECT seq FROM pep_items WHERE owner = $1 AND node = $2 ORDER BY seq DESC LIMIT 1 OFFSET CAST($3 AS BIGINT))";
pub const PEP_ITEMS: &str = "SELECT item_id, publisher, payload FROM pep_items WHERE owner = $1 AND node = $2 \
    ORDER BY seq DESC LIMIT CAST($3 AS BIGINT)";
pub const PEP_RETRACT: &str = "DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND item_id = $3";
pub const PEP_ERASE_NODES: &str = "DELETE FROM pep_nodes WHERE owner = $1";
pub const PEP_ERASE_ITEMS: &str = "DELETE FROM pep_items WHERE owner = $1";
pub const FORGET_ROOM: &str = "INSERT INTO forgotten_rooms (user_id, room_id, member_event) VALUES ($1, $2, $3) \
    ON CONFLICT (user_id, room_id) DO UPDATE SET member_event = excluded.member_event";
pub const FORGOTTEN_ROOMS: &str = "SELECT room_id, member_event FROM forgotten_rooms WHERE user_id = $1";
