-- Personal eventing (XEP-0163 on XEP-0060): each account's nodes (OMEMO keys, bookmarks,
-- avatars...) with their configuration, and their items, newest by seq.
CREATE TABLE pep_nodes (
    owner         TEXT NOT NULL,
    node          TEXT NOT NULL,
    -- open | presence | whitelist
    access_model  TEXT NOT NULL,
    persist_items INTEGER NOT NULL,
    -- 0 = "max": as many as the server keeps
    max_items     INTEGER NOT NULL,
    PRIMARY KEY (owner, node)
) STRICT;

CREATE TABLE pep_items (
    owner     TEXT NOT NULL,
    node      TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    publisher TEXT,
    payload   TEXT NOT NULL,
    PRIMARY KEY (owner, node, item_id)
) STRICT;
CREATE INDEX pep_items_by_age ON pep_items (owner, node, seq);
