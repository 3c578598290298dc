//! The Matrix Client-Server HTTP API: one module per endpoint group, each a thin
//! translation onto `estuary-core`. Also the Matrix HTTP glue (errors, the ruma extractor)
//! that federation reuses.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use estuary_core::Core;
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};

pub mod account;
pub mod alias;
pub mod backup;
pub mod dehydrated;
pub mod device;
pub mod directory;
pub mod discovery;
pub mod error;
pub mod events;
pub mod extract;
pub mod filter;
pub mod keys;
pub mod media;
pub mod profile;
pub mod push;
pub mod relations;
pub mod rooms;
pub mod session;
pub mod sync;
pub mod uiaa;
pub mod userdata;

pub use error::MatrixError;
pub use extract::{ApiResult, Caller, Ruma, RumaResponse};

use extract::RouterExt;

/// State shared by the Matrix handlers.
pub struct MatrixState {
    pub core: Arc<Core>,
    pub server_name: OwnedServerName,
    pub uiaa: uiaa::UiaaSessions,
    /// Unread counts evaluated so far (each event's push rules run once).
    pub unread: push::UnreadMemo,
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
            unread: push::UnreadMemo::default(),
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
    use ruma::api::client::push as pu;
    use ruma::api::client::{
        account as acc, alias as al, device as dev, discovery as disc, filter, membership as mem, message,
        profile as prof, redact, room, session as ses, state as st, sync as sy,
    };
    use ruma::api::client::{backup as bk, dehydrated_device as dd, keys as ks, to_device as td};
    use ruma::api::client::{config as cfg, presence as pres, read_marker as rm, receipt as rc, tag, typing as ty};
    use ruma::api::client::{context as ctx, relations as rel, threads as th};
    use ruma::api::client::{directory as dir, search as se, user_directory as ud};
    let state = Arc::new(MatrixState::new(core)?);
    let router = Router::new()
        .route("/_matrix/client/versions", get(discovery::versions))
        .route("/.well-known/matrix/client", get(discovery::well_known_client))
        .route("/.well-known/matrix/server", get(discovery::well_known_server))
        .route("/.well-known/matrix/support", get(discovery::well_known_support))
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
        .endpoint::<room::create_room::v3::Request, _, _>(rooms::create)
        .endpoint::<message::send_message_event::v3::Request, _, _>(rooms::send)
        .endpoint::<st::send_state_event::v3::Request, _, _>(rooms::put_state)
        .endpoint_without_last_param::<st::send_state_event::v3::Request, _, _>(rooms::put_state)
        .endpoint::<st::get_state_event_for_key::v3::Request, _, _>(rooms::get_state_event)
        .endpoint_without_last_param::<st::get_state_event_for_key::v3::Request, _, _>(rooms::get_state_event)
        .endpoint::<st::get_state_events::v3::Request, _, _>(rooms::get_all_state)
        .endpoint::<redact::redact_event::v3::Request, _, _>(rooms::redact_event)
        .endpoint::<room::get_room_event::v3::Request, _, _>(rooms::get_room_event)
        .endpoint::<mem::joined_rooms::v3::Request, _, _>(rooms::joined_rooms)
        .endpoint::<mem::get_member_events::v3::Request, _, _>(rooms::members)
        .endpoint::<mem::joined_members::v3::Request, _, _>(rooms::joined_members)
        .endpoint::<mem::join_room_by_id::v3::Request, _, _>(rooms::join_by_id)
        .endpoint::<mem::join_room_by_id_or_alias::v3::Request, _, _>(rooms::join_by_id_or_alias)
        .endpoint::<mem::invite_user::v3::Request, _, _>(rooms::invite)
        .endpoint::<mem::leave_room::v3::Request, _, _>(rooms::leave)
        .endpoint::<mem::kick_user::v3::Request, _, _>(rooms::kick)
        .endpoint::<mem::ban_user::v3::Request, _, _>(rooms::ban)
        .endpoint::<mem::unban_user::v3::Request, _, _>(rooms::unban)
        .endpoint::<mem::forget_room::v3::Request, _, _>(rooms::forget)
        .endpoint::<al::get_alias::v3::Request, _, _>(alias::get_alias)
        .endpoint::<al::create_alias::v3::Request, _, _>(alias::put_alias)
        .endpoint::<al::delete_alias::v3::Request, _, _>(alias::delete_alias)
        .endpoint::<sy::sync_events::v3::Request, _, _>(sync::sync_v3)
        .endpoint::<message::get_message_events::v3::Request, _, _>(sync::room_messages)
        .endpoint::<filter::create_filter::v3::Request, _, _>(sync::put_filter)
        .endpoint::<filter::get_filter::v3::Request, _, _>(sync::fetch_filter)
        .endpoint::<cfg::set_global_account_data::v3::Request, _, _>(userdata::put_global)
        .endpoint::<cfg::get_global_account_data::v3::Request, _, _>(userdata::get_global_data)
        .endpoint::<cfg::set_room_account_data::v3::Request, _, _>(userdata::put_room)
        .endpoint::<cfg::get_room_account_data::v3::Request, _, _>(userdata::get_room_data)
        .endpoint::<tag::get_tags::v3::Request, _, _>(userdata::list_tags)
        .endpoint::<tag::create_tag::v3::Request, _, _>(userdata::put_tag)
        .endpoint::<tag::delete_tag::v3::Request, _, _>(userdata::remove_tag)
        .endpoint::<rc::create_receipt::v3::Request, _, _>(userdata::put_receipt)
        .endpoint::<rm::set_read_marker::v3::Request, _, _>(userdata::put_read_markers)
        .endpoint::<ty::create_typing_event::v3::Request, _, _>(userdata::put_typing)
        .endpoint::<pres::set_presence::v3::Request, _, _>(userdata::put_presence)
        .endpoint::<pres::get_presence::v3::Request, _, _>(userdata::fetch_presence)
        .endpoint::<pu::get_pushrules_all::v3::Request, _, _>(push::all)
        .endpoint::<pu::get_pushrules_global_scope::v3::Request, _, _>(push::global)
        .endpoint::<pu::get_pushrule::v3::Request, _, _>(push::one)
        .endpoint::<pu::set_pushrule::v3::Request, _, _>(push::put)
        .endpoint::<pu::delete_pushrule::v3::Request, _, _>(push::remove)
        .endpoint::<pu::get_pushrule_enabled::v3::Request, _, _>(push::enabled)
        .endpoint::<pu::set_pushrule_enabled::v3::Request, _, _>(push::put_enabled)
        .endpoint::<pu::get_pushrule_actions::v3::Request, _, _>(push::actions)
        .endpoint::<pu::set_pushrule_actions::v3::Request, _, _>(push::put_actions)
        .endpoint::<rel::get_relating_events::v1::Request, _, _>(relations::relations)
        .endpoint::<rel::get_relating_events_with_rel_type::v1::Request, _, _>(relations::relations_by_type)
        .endpoint::<rel::get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
            relations::relations_by_type_and_kind,
        )
        .endpoint::<th::get_threads::v1::Request, _, _>(relations::list_threads)
        .endpoint::<ctx::get_context::v3::Request, _, _>(relations::get_context)
        .endpoint::<dir::get_public_rooms::v3::Request, _, _>(directory::get_public)
        .endpoint::<dir::get_public_rooms_filtered::v3::Request, _, _>(directory::post_public)
        .endpoint::<dir::get_room_visibility::v3::Request, _, _>(directory::visibility)
        .endpoint::<dir::set_room_visibility::v3::Request, _, _>(directory::put_visibility)
        .endpoint::<ud::search_users::v3::Request, _, _>(directory::search_users)
        .endpoint::<se::search_events::v3::Request, _, _>(directory::search_events)
        .endpoint::<ks::upload_keys::v3::Request, _, _>(keys::upload_keys)
        .endpoint::<ks::get_keys::v3::Request, _, _>(keys::query_keys)
        .endpoint::<ks::claim_keys::v3::Request, _, _>(keys::claim_keys)
        .endpoint::<ks::get_key_changes::v3::Request, _, _>(keys::key_changes)
        .endpoint::<td::send_event_to_device::v3::Request, _, _>(keys::send_to_device)
        .endpoint::<ks::upload_signing_keys::v3::Request, _, _>(keys::upload_signing_keys)
        .endpoint::<ks::upload_signatures::v3::Request, _, _>(keys::upload_signatures)
        .endpoint::<bk::create_backup_version::v3::Request, _, _>(backup::create_version)
        .endpoint::<bk::get_latest_backup_info::v3::Request, _, _>(backup::latest_version)
        .endpoint::<bk::get_backup_info::v3::Request, _, _>(backup::version)
        .endpoint::<bk::update_backup_version::v3::Request, _, _>(backup::update_version)
        .endpoint::<bk::delete_backup_version::v3::Request, _, _>(backup::remove_version)
        .endpoint::<bk::add_backup_keys::v3::Request, _, _>(backup::put_all)
        .endpoint::<bk::add_backup_keys_for_room::v3::Request, _, _>(backup::put_room)
        .endpoint::<bk::add_backup_keys_for_session::v3::Request, _, _>(backup::put_session)
        .endpoint::<bk::get_backup_keys::v3::Request, _, _>(backup::fetch_all)
        .endpoint::<bk::get_backup_keys_for_room::v3::Request, _, _>(backup::fetch_room)
        .endpoint::<bk::get_backup_keys_for_session::v3::Request, _, _>(backup::fetch_session)
        .endpoint::<bk::delete_backup_keys::v3::Request, _, _>(backup::remove_all)
        .endpoint::<bk::delete_backup_keys_for_room::v3::Request, _, _>(backup::remove_room)
        .endpoint::<bk::delete_backup_keys_for_session::v3::Request, _, _>(backup::remove_session)
        .endpoint::<dd::put_dehydrated_device::unstable::Request, _, _>(dehydrated::put_device)
        .endpoint::<dd::get_dehydrated_device::unstable::Request, _, _>(dehydrated::get_device)
        .endpoint::<dd::delete_dehydrated_device::unstable::Request, _, _>(dehydrated::delete_device)
        .endpoint::<dd::get_events::unstable::Request, _, _>(dehydrated::device_events)
        .merge(media::router())
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state);
    Ok(router)
}
