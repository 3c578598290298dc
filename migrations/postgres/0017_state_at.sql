-- The state of a room at a stream position (what a departed user saw, /context, the state
-- before a sync timeline): the newest state event of each (type, state_key) up to it.
CREATE INDEX events_room_state ON events (room_id, type, state_key, stream_ordering)
    WHERE state_key IS NOT NULL;
