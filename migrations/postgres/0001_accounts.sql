-- Accounts: one row per local user, shared by Matrix (@localpart:server_name) and XMPP
-- (localpart@domain). A deactivated account keeps its row so the name is never reused.
CREATE TABLE accounts (
    localpart               TEXT PRIMARY KEY NOT NULL,
    -- Argon2id PHC string; NULL when the account has no password (deactivated, or appservice).
    password_hash           TEXT,
    -- RFC 5802 salted credentials for XMPP SCRAM, derived when the password is set.
    scram_salt              BYTEA,
    scram_iterations        BIGINT,
    scram_sha1_stored_key   BYTEA,
    scram_sha1_server_key   BYTEA,
    scram_sha256_stored_key BYTEA,
    scram_sha256_server_key BYTEA,
    displayname             TEXT,
    avatar_url              TEXT,
    admin                   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at              BIGINT NOT NULL,
    deactivated_at          BIGINT
);
