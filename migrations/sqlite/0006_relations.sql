-- Event relationships (m.relates_to: edits, reactions, threads, references, replies are not
-- relations). Filled when an event is accepted; removed when it is redacted.
CREATE TABLE event_relations (
    event_id        TEXT PRIMARY KEY NOT NULL,
    room_id         TEXT NOT NULL,
    relates_to      TEXT NOT NULL,
    rel_type        TEXT NOT NULL,
    type            TEXT NOT NULL,
    sender          TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL
) STRICT;
CREATE INDEX event_relations_target ON event_relations (relates_to, rel_type, stream_ordering);
CREATE INDEX event_relations_room_rel ON event_relations (room_id, rel_type, stream_ordering);
