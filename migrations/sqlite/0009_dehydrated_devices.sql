-- MSC3814 dehydrated devices: at most one per user. The device itself is a row in devices
-- (with keys like any device, but no access token); device_data is opaque to the server.
CREATE TABLE dehydrated_devices (
    localpart   TEXT PRIMARY KEY NOT NULL,
    device_id   TEXT NOT NULL,
    device_data TEXT NOT NULL
) STRICT;
