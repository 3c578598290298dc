-- Changes of a room's current state other than an event taking its own place: where branches
-- meet, state resolution may bring back an older event for a key, remove a key (event_id
-- NULL), or leave out the very event being added. Recorded at the position of the event whose
-- arrival caused them, so the state at a position (sync, /context, what a departed user saw)
-- and incremental syncs see them.
CREATE TABLE state_resets (
    room_id         TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT
);
CREATE INDEX state_resets_room ON state_resets (room_id, stream_ordering);
