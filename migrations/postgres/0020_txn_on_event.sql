-- The device and transaction ID an event was sent under live on the event's own row: XMPP
-- clients know the messages they sent by their own ids, kept in the transaction ID (see
-- server/xmpp). This replaces the index of event_txn_ids by event, which every send had to
-- update at a random key; the table's primary key still answers "which event did this
-- transaction make".
ALTER TABLE events ADD COLUMN txn_device TEXT, ADD COLUMN txn_id TEXT;
UPDATE events SET txn_device = t.device_id, txn_id = t.txn_id
    FROM event_txn_ids t WHERE t.event_id = events.event_id;
DROP INDEX event_txn_ids_by_event;
