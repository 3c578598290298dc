-- The transaction ID an event was sent under, found from the event: XMPP clients know the
-- messages they sent by their own ids, kept in the transaction ID (see server/xmpp).
CREATE INDEX event_txn_ids_by_event ON event_txn_ids (event_id);
