-- The state of a room after each event, which state resolution needs where branches of a
-- room's history meet (federation). A group is named by the event that first had its state.
-- It holds its entries that differ from an earlier group (prev_group), or, with prev_group
-- NULL, the whole state: a full group comes every so many deltas, so reading one walks a
-- short chain.
CREATE TABLE state_groups (
    group_id   TEXT PRIMARY KEY NOT NULL,
    room_id    TEXT NOT NULL,
    prev_group TEXT,
    -- Deltas between this group and the full group its chain starts from.
    chain      BIGINT NOT NULL,
    -- JSON: [[type, state_key, event_id], ...]
    entries    TEXT NOT NULL
);

-- The group holding the room's state after this event. NULL for events stored before state
-- groups: history was one line then, so their state is the state at their stream position.
ALTER TABLE events ADD COLUMN state_group TEXT;
