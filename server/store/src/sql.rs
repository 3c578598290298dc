//! SQL shared by both backends, in the portable subset with `$N` placeholders.

macro_rules! account_columns {
    () => {
        "localpart, password_hash, scram_salt, scram_iterations, scram_sha1_stored_key, \
         scram_sha1_server_key, scram_sha256_stored_key, scram_sha256_server_key, displayname, \
         avatar_url, admin, created_at, deactivated_at"
    };
}

pub const INSERT_ACCOUNT: &str = "INSERT INTO accounts (localpart, password_hash, scram_salt, \
    scram_iterations, scram_sha1_stored_key, scram_sha1_server_key, scram_sha256_stored_key, \
    scram_sha256_server_key, admin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub const SET_PASSWORD: &str = "UPDATE accounts SET password_hash = $2, scram_salt = $3, \
    scram_iterations = $4, scram_sha1_stored_key = $5, scram_sha1_server_key = $6, \
    scram_sha256_stored_key = $7, scram_sha256_server_key = $8 \
    WHERE localpart = $1 AND deactivated_at IS NULL";

pub const DEACTIVATE_ACCOUNT: &str = "UPDATE accounts SET password_hash = NULL, \
    scram_salt = NULL, scram_iterations = NULL, scram_sha1_stored_key = NULL, \
    scram_sha1_server_key = NULL, scram_sha256_stored_key = NULL, \
    scram_sha256_server_key = NULL, displayname = NULL, avatar_url = NULL, \
    deactivated_at = $2 WHERE localpart = $1 AND deactivated_at IS NULL";

pub const SELECT_ACCOUNT: &str = concat!("SELECT ", account_columns!(), " FROM accounts WHERE localpart = $1");

pub const LIST_ACCOUNTS: &str = concat!("SELECT ", account_columns!(), " FROM accounts ORDER BY localpart");

pub const SET_DISPLAYNAME: &str =
    "UPDATE accounts SET displayname = $2 WHERE localpart = $1 AND deactivated_at IS NULL";
pub const SET_AVATAR_URL: &str = "UPDATE accounts SET avatar_url = $2 WHERE localpart = $1 AND deactivated_at IS NULL";

pub const INSERT_DEVICE_IF_NEW: &str = "INSERT INTO devices (localpart, device_id, display_name, created_at) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (localpart, device_id) DO NOTHING";
/// Logging in again on a device revokes the tokens it had (spec: POST /login, device_id).
pub const DELETE_DEVICE_TOKENS: &str = "DELETE FROM access_tokens WHERE localpart = $1 AND device_id = $2";
pub const INSERT_TOKEN: &str =
    "INSERT INTO access_tokens (token_sha256, localpart, device_id, created_at) VALUES ($1, $2, $3, $4)";
pub const SESSION_BY_TOKEN: &str = "SELECT t.localpart, t.device_id FROM access_tokens t \
    JOIN accounts a ON a.localpart = t.localpart \
    WHERE t.token_sha256 = $1 AND a.deactivated_at IS NULL";
pub const LIST_DEVICES: &str = "SELECT device_id, display_name, created_at FROM devices \
    WHERE localpart = $1 ORDER BY device_id";
pub const GET_DEVICE: &str = "SELECT device_id, display_name, created_at FROM devices \
    WHERE localpart = $1 AND device_id = $2";
pub const RENAME_DEVICE: &str = "UPDATE devices SET display_name = $3 WHERE localpart = $1 AND device_id = $2";
pub const DELETE_DEVICE: &str = "DELETE FROM devices WHERE localpart = $1 AND device_id = $2";
/// Deleting a device deletes its tokens (ON DELETE CASCADE).
pub const DELETE_OTHER_DEVICES: &str = "DELETE FROM devices WHERE localpart = $1 AND ($2 IS NULL OR device_id <> $2)";
