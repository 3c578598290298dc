-- Account data (global when room_id = '', else per room): m.direct, m.push_rules, tags,
-- m.fully_read, client settings. stream_id grows with every change (sync position); a change
-- replaces the row, so each (user, room, type) appears once.
CREATE TABLE account_data (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    localpart TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL,
    UNIQUE (localpart, room_id, type)
) STRICT;
CREATE INDEX account_data_user_stream ON account_data (localpart, stream_id);

-- Read receipts: the latest per (room, user, receipt type, thread).
CREATE TABLE receipts (
    stream_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    UNIQUE (room_id, user_id, receipt_type, thread_id)
) STRICT;
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
