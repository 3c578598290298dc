-- End-to-end encryption key material, stored and routed opaquely: the server never holds a
-- private key and never decrypts. JSON is kept exactly as the client signed it.

-- Device identity keys (keys/upload device_keys), one row per device.
CREATE TABLE e2e_device_keys (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id)
) STRICT;

-- One-time keys: each handed out once (keys/claim deletes the row it returns).
CREATE TABLE e2e_one_time_keys (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id, algorithm, key_id)
) STRICT;

-- Fallback keys: one per device and algorithm, given out when no one-time key is left, and
-- marked used (not deleted) when given out.
CREATE TABLE e2e_fallback_keys (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (localpart, device_id, algorithm)
) STRICT;

-- Users whose device list changed (new, changed or deleted device keys), for keys/changes
-- and sync's device_lists.changed.
CREATE TABLE e2e_device_list_changes (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL
) STRICT;
CREATE INDEX e2e_device_list_changes_user ON e2e_device_list_changes (user_id, stream_id);

-- To-device messages waiting for a device; deleted once the device's sync acknowledges them.
CREATE TABLE to_device_messages (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender    TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL
) STRICT;
CREATE INDEX to_device_messages_device ON to_device_messages (localpart, device_id, stream_id);

-- sendToDevice idempotency, per sending device.
CREATE TABLE to_device_txn_ids (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id, txn_id)
) STRICT;
