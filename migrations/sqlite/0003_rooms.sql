-- The server's Ed25519 signing keys (federation signs every event with them).
CREATE TABLE server_signing_keys (
    key_id     TEXT PRIMARY KEY NOT NULL,
    pkcs8      BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE rooms (
    room_id      TEXT PRIMARY KEY NOT NULL,
    room_version TEXT NOT NULL,
    creator      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    -- Listed in the public room directory.
    published    INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Every accepted event: the signed PDU as canonical JSON, plus the columns queries need.
-- stream_ordering is the sync position; it only grows.
CREATE TABLE events (
    stream_ordering  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms (room_id),
    depth            INTEGER NOT NULL,
    sender           TEXT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,
    origin_server_ts INTEGER NOT NULL,
    pdu              TEXT NOT NULL,
    -- Set when a redaction of this event is accepted; the pdu column then holds the redacted form.
    redacted_by      TEXT
) STRICT;
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);

-- The current state of each room: (type, state_key) -> event. membership mirrors the
-- content of m.room.member events so "the rooms of a user" is one indexed query.
CREATE TABLE room_current_state (
    room_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    membership      TEXT,
    PRIMARY KEY (room_id, type, state_key)
) STRICT;
CREATE INDEX room_current_state_member ON room_current_state (type, state_key, membership);

-- The room's DAG tips: the prev_events of the next event.
CREATE TABLE room_forward_extremities (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) STRICT;

-- PUT /send/{type}/{txnId} idempotency, per device.
CREATE TABLE event_txn_ids (
    localpart TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id, txn_id)
) STRICT;

CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
) STRICT;

CREATE TABLE filters (
    filter_id INTEGER PRIMARY KEY AUTOINCREMENT,
    localpart TEXT NOT NULL,
    json      TEXT NOT NULL
) STRICT;
