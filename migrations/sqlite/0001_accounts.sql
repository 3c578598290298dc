-- Accounts: one row per local user, shared by Matrix (@localpart:server_name) and XMPP
-- (localpart@domain). A deactivated account keeps its row so the name is never reused.
CREATE TABLE accounts (
    localpart               TEXT PRIMARY KEY NOT NULL,
    -- Argon2id PHC string; NULL when the account has no password (deactivated, or appservice).
    password_hash           TEXT,
    -- RFC 5802 salted credentials for XMPP SCRAM, derived when the password is set.
    scram_salt              BLOB,
    scram_iterations        INTEGER,
    scram_sha1_stored_key   BLOB,
    scram_sha1_server_key   BLOB,
    scram_sha256_stored_key BLOB,
    scram_sha256_server_key BLOB,
    displayname             TEXT,
    avatar_url              TEXT,
    admin                   INTEGER NOT NULL DEFAULT 0,
    created_at              INTEGER NOT NULL,
    deactivated_at          INTEGER
) STRICT;
