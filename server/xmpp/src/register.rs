//! XEP-0077 In-Band Registration on the accounts Matrix uses: before authentication, a new
//! account (only when `registration.open`; the same rate limit as Matrix registration);
//! after it, the password change (§3.3) and account removal (§3.2, which deactivates the
//! account for both protocols).

use estuary_core::CoreError;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::ibr::LegacyQuery;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::FullJid;
use xmpp_parsers::ns;
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType};

use crate::c2s::{C2s, error_reply};

fn result(id: String, payload: Option<Element>) -> Iq {
    Iq::Result {
        from: None,
        to: None,
        id,
        payload,
    }
}

fn error(id: String, type_: ErrorType, condition: Condition) -> Iq {
    error_reply(id, None, None, type_, condition)
}

/// Whether an element is a registration IQ (what a client may send before authenticating).
pub fn is_request(el: &Element) -> bool {
    el.is("iq", ns::JABBER_CLIENT) && el.get_child("query", ns::REGISTER).is_some()
}

/// The answer to a registration IQ before authentication.
pub async fn before_auth(c2s: &C2s, el: Element) -> Option<Iq> {
    let iq = Iq::try_from(el).ok()?;
    let core = &c2s.core;
    match iq {
        Iq::Get { id, .. } if !core.config.registration.open => {
            Some(error(id, ErrorType::Cancel, Condition::ServiceUnavailable))
        }
        Iq::Get { id, .. } => {
            let fields = LegacyQuery {
                instructions: Some("Choose a user name and a password. No e-mail or phone number is needed.".into()),
                username: Some(String::new()),
                password: Some(String::new()),
                ..Default::default()
            };
            Some(result(id, Some(fields.into())))
        }
        Iq::Set { id, .. } if !core.config.registration.open => {
            Some(error(id, ErrorType::Cancel, Condition::NotAllowed))
        }
        Iq::Set { id, payload, .. } => {
            let Ok(query) = LegacyQuery::try_from(payload) else {
                return Some(error(id, ErrorType::Modify, Condition::BadRequest));
            };
            let (Some(user), Some(password)) = (
                query.username.filter(|u| !u.is_empty()),
                query.password.filter(|p| !p.is_empty()),
            ) else {
                return Some(error(id, ErrorType::Modify, Condition::NotAcceptable));
            };
            if core.limits.registration.check("xmpp:ibr").is_err() {
                return Some(error(id, ErrorType::Wait, Condition::ResourceConstraint));
            }
            let localpart = user.to_lowercase();
            Some(match core.accounts.create(&localpart, Some(&password), false).await {
                Ok(_) => {
                    tracing::info!(user = %localpart, "registered over XMPP (XEP-0077)");
                    result(id, None)
                }
                Err(CoreError::UserInUse(_)) => error(id, ErrorType::Cancel, Condition::Conflict),
                Err(CoreError::InvalidLocalpart(_) | CoreError::InvalidPassword(_)) => {
                    error(id, ErrorType::Modify, Condition::NotAcceptable)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "XEP-0077 registration failed");
                    error(id, ErrorType::Wait, Condition::InternalServerError)
                }
            })
        }
        Iq::Result { .. } | Iq::Error { .. } => None,
    }
}

/// What a registration IQ of a bound session asks for.
pub enum After {
    /// Answer it.
    Reply(Iq),
    /// The account was removed: answer, then end the stream.
    Removed(Iq),
}

/// Registration IQs on a bound stream: the account's registration, a new password, removal.
pub async fn after_auth(c2s: &C2s, iq: &Iq, full: &FullJid) -> Option<After> {
    let localpart = full.node()?.as_str();
    let for_server = |to: &Option<xmpp_parsers::jid::Jid>| to.as_ref().is_none_or(|t| t.as_str() == c2s.domain);
    match iq {
        Iq::Get { id, to, payload, .. } if payload.is("query", ns::REGISTER) && for_server(to) => {
            let registered = LegacyQuery {
                registered: true,
                username: Some(localpart.to_owned()),
                ..Default::default()
            };
            Some(After::Reply(result(id.clone(), Some(registered.into()))))
        }
        Iq::Set { id, to, payload, .. } if payload.is("query", ns::REGISTER) && for_server(to) => {
            let id = id.clone();
            if payload.get_child("remove", ns::REGISTER).is_some() {
                return Some(match c2s.core.deactivate(localpart).await {
                    Ok(()) => {
                        tracing::info!(user = %localpart, "account removed over XMPP (XEP-0077)");
                        After::Removed(result(id, None))
                    }
                    Err(_) => After::Reply(error(id, ErrorType::Wait, Condition::InternalServerError)),
                });
            }
            let Ok(query) = LegacyQuery::try_from(payload.clone()) else {
                return Some(After::Reply(error(id, ErrorType::Modify, Condition::BadRequest)));
            };
            // §3.3: a password change names the account's own user name. Required information
            // missing is not-acceptable (§3.1).
            let (Some(user), Some(password)) = (query.username, query.password.filter(|p| !p.is_empty())) else {
                return Some(After::Reply(error(id, ErrorType::Modify, Condition::NotAcceptable)));
            };
            if user.to_lowercase() != localpart {
                return Some(After::Reply(error(id, ErrorType::Auth, Condition::NotAuthorized)));
            }
            Some(After::Reply(
                match c2s.core.accounts.set_password(localpart, &password).await {
                    Ok(()) => result(id, None),
                    Err(CoreError::InvalidPassword(_)) => error(id, ErrorType::Modify, Condition::NotAcceptable),
                    Err(_) => error(id, ErrorType::Wait, Condition::InternalServerError),
                },
            ))
        }
        _ => None,
    }
}
