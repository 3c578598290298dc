-- Devices (Matrix sessions) and their access tokens. No IP address or user agent is kept.
CREATE TABLE devices (
    localpart    TEXT NOT NULL REFERENCES accounts (localpart),
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id)
);

-- Only the SHA-256 of a token is stored: a leaked database does not leak usable tokens.
CREATE TABLE access_tokens (
    token_sha256 TEXT PRIMARY KEY NOT NULL,
    localpart    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    FOREIGN KEY (localpart, device_id) REFERENCES devices (localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (localpart, device_id);
