-- Personal eventing (XEP-0163 on XEP-0060): each account's nodes (OMEMO keys, bookmarks,
-- avatars...) with their configuration, and their items, newest by seq.
CREATE TABLE pep_nodes (
    owner         TEXT NOT NULL,
    node          TEXT NOT NULL,
    -- open | presence | whitelist
    access_model  TEXT NOT NULL,
    persist_items BOOLEAN NOT NULL,
    -- 0 = "max": as many as the server keeps
    max_items     BIGINT NOT NULL,
    PRIMARY KEY (owner, node)
);

CREATE TABLE pep_items (
    owner     TEXT NOT NULL,
    node      TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    publisher TEXT,
    payload   TEXT NOT NULL,
    PRIMARY KEY (owner, node, item_id)
);
CREATE INDEX pep_items_by_age ON pep_items (owner, node, seq);
