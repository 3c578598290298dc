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

pub const SELECT_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE localpart = $1"
);

pub const LIST_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts ORDER BY localpart"
);
