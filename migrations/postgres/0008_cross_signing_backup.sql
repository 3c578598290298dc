-- Cross-signing keys (master, self_signing, user_signing), as the client signed them, with
-- signatures other keys added later merged in.
CREATE TABLE e2e_cross_signing_keys (
    localpart TEXT NOT NULL,
    key_type  TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (localpart, key_type)
);

-- Server-side key backup (room_keys): versions, and the opaque encrypted session data.
CREATE TABLE backup_versions (
    localpart TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL,
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (localpart, version)
);

CREATE TABLE backup_keys (
    localpart           TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL DEFAULT FALSE,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (localpart, version, room_id, session_id)
);
