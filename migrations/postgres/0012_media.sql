-- The media repository (Matrix content repository; XMPP vCard photos): one row per upload,
-- the bytes in data_dir/media/<first two characters>/<media_id>.
CREATE TABLE media (
    media_id     TEXT PRIMARY KEY NOT NULL,
    uploader     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    filename     TEXT,
    size         BIGINT NOT NULL,
    -- lower-case hex SHA-1 of the bytes (XEP-0153 avatar hashes)
    sha1         TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
