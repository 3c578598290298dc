-- XMPP rosters (RFC 6121 §2) and subscription states (§3). contact is a bare JID.
CREATE TABLE roster_items (
    localpart    TEXT NOT NULL,
    contact      TEXT NOT NULL,
    name         TEXT,
    -- none | to | from | both
    subscription TEXT NOT NULL,
    -- outbound request pending (RFC 6121 "ask='subscribe'")
    ask          INTEGER NOT NULL DEFAULT 0,
    -- inbound request from the contact awaiting an answer
    pending_in   INTEGER NOT NULL DEFAULT 0,
    -- JSON array of group names
    groups       TEXT NOT NULL,
    PRIMARY KEY (localpart, contact)
) STRICT;

-- Roster version per user: bumped by every change (RFC 6121 §2.6 versioning).
CREATE TABLE roster_versions (
    localpart TEXT PRIMARY KEY NOT NULL,
    version   INTEGER NOT NULL
) STRICT;
