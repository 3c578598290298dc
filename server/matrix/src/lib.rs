//! The Matrix Client-Server HTTP API: one module per endpoint group, each a thin
//! translation onto `estuary-core`. Also the Matrix HTTP glue (errors, the ruma extractor)
//! that federation reuses.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use estuary_core::Core;
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};

pub mod account;
pub mod device;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod profile;
pub mod session;
pub mod uiaa;

pub use error::MatrixError;
pub use extract::{ApiResult, Caller, Ruma, RumaResponse};

use extract::RouterExt;

/// State shared by the Matrix handlers.
pub struct MatrixState {
    pub core: Arc<Core>,
    pub server_name: OwnedServerName,
    pub uiaa: uiaa::UiaaSessions,
}

impl MatrixState {
    pub fn new(core: Arc<Core>) -> Result<Self, String> {
        let server_name = ServerName::parse(&core.config.server_name).map_err(|e| {
            format!(
                "server_name {:?} is not a valid Matrix server name: {e}",
                core.config.server_name
            )
        })?;
        Ok(Self {
            core,
            server_name,
            uiaa: uiaa::UiaaSessions::default(),
        })
    }

    /// `@localpart:server_name`.
    pub fn user_id(&self, localpart: &str) -> Result<OwnedUserId, MatrixError> {
        UserId::parse(format!("@{localpart}:{}", self.server_name))
            .map_err(|e| MatrixError::internal(format!("stored localpart {localpart:?} is not a valid user ID: {e}")))
    }

    /// The local localpart named by a user ID or a bare localpart (`@alice:server` or
    /// `alice`); None for a user of another server. Lower-cased, as Synapse does at login.
    pub fn localpart_of(&self, user: &str) -> Option<String> {
        match user.strip_prefix('@') {
            Some(full) => {
                let (localpart, server) = full.split_once(':')?;
                (server == self.server_name.as_str()).then(|| localpart.to_lowercase())
            }
            None => Some(user.to_lowercase()),
        }
    }

    /// The localpart of a user ID if it is a local user.
    pub fn local(&self, user_id: &UserId) -> Option<String> {
        (user_id.server_name() == self.server_name).then(|| user_id.localpart().to_owned())
    }
}

/// Routes of the client listener (`matrix.client_listen`).
pub fn client_router(core: Arc<Core>) -> Result<Router, String> {
    use ruma::api::client::{account as acc, device as dev, discovery as disc, profile as prof, session as ses};
    let state = Arc::new(MatrixState::new(core)?);
    let router = Router::new()
        .route("/_matrix/client/versions", get(discovery::versions))
        .route("/.well-known/matrix/client", get(discovery::well_known_client))
        .route("/.well-known/matrix/server", get(discovery::well_known_server))
        .endpoint::<disc::get_capabilities::v3::Request, _, _>(discovery::capabilities)
        .endpoint::<ses::get_login_types::v3::Request, _, _>(session::login_types)
        .endpoint::<ses::login::v3::Request, _, _>(session::login)
        .endpoint::<ses::logout::v3::Request, _, _>(session::logout)
        .endpoint::<ses::logout_all::v3::Request, _, _>(session::logout_all)
        .endpoint::<acc::register::v3::Request, _, _>(account::register)
        .endpoint::<acc::get_username_availability::v3::Request, _, _>(account::available)
        .endpoint::<acc::check_registration_token_validity::v1::Request, _, _>(account::token_validity)
        .endpoint::<acc::whoami::v3::Request, _, _>(account::whoami)
        .endpoint::<acc::change_password::v3::Request, _, _>(account::change_password)
        .endpoint::<acc::deactivate::v3::Request, _, _>(account::deactivate)
        .endpoint::<dev::get_devices::v3::Request, _, _>(device::list)
        .endpoint::<dev::get_device::v3::Request, _, _>(device::get)
        .endpoint::<dev::update_device::v3::Request, _, _>(device::update)
        .endpoint::<dev::delete_device::v3::Request, _, _>(device::delete)
        .endpoint::<dev::delete_devices::v3::Request, _, _>(device::delete_many)
        .endpoint::<prof::get_profile::v3::Request, _, _>(profile::get_profile)
        .endpoint::<prof::get_display_name::v3::Request, _, _>(profile::get_displayname)
        .endpoint::<prof::set_display_name::v3::Request, _, _>(profile::set_displayname)
        .endpoint::<prof::get_avatar_url::v3::Request, _, _>(profile::get_avatar_url)
        .endpoint::<prof::set_avatar_url::v3::Request, _, _>(profile::set_avatar_url)
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state);
    Ok(router)
}
