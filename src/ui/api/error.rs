//! The tenant JSON API's one mapping from refusal to response, like the public
//! listener's (`proxy::respond`): every refusal under `/.portcullis/api/...` (and of the
//! IdP's back-channel logout) is an [`ApiError`], answered as
//! `{"error","message","request_id"}` with the request id also in `x-request-id`, and
//! `Retry-After` when trying again later helps. A store's inner error is never sent (it
//! is logged with the request id where it was logged before).
//!
//! The status and text of a refused sign-in step or password change are the pages'
//! (`ui::error`), so the twins say the same; the codes are this API's. Owns no rules:
//! the handlers choose the refusal.

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::auth::accounts::AccountError;
use crate::auth::login::LoginError;
use crate::auth::sso_admin::SsoAdminError;
use crate::killswitch::KillSwitchError;
use crate::ui::admin::TripRefusal;
use crate::ui::error::{login_refusal, password_refusal, retry_after};
use crate::ui::web;

/// Why the JSON API refused a call.
#[derive(Debug)]
pub(in crate::ui) enum ApiError {
    /// A state-changing call from another origin (403).
    CrossOrigin,
    /// No such endpoint, session or tripped breaker; the text says which (404).
    NotFound(&'static str),
    /// No session (401).
    Unauthenticated,
    /// The store cannot answer (503).
    Unavailable,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// The body is larger than the API takes (413).
    PayloadTooLarge,
    /// The body could not be read (400).
    UnreadableBody,
    /// The body is not JSON of the expected shape; the text says where or which field,
    /// never a value (400).
    InvalidJson(String),
    /// The call is malformed; the text says what (400).
    BadRequest(String),
    /// A second-factor call without a pending sign-in (401).
    NoPendingLogin,
    /// A sign-in step was refused.
    Login(LoginError),
    /// A password change was refused.
    Password(AccountError),
    /// A tenant admin call of someone who is not a tenant admin (403).
    NotTenantAdmin,
    /// A tenant admin's reset of their own second factor (403): with it, a session and
    /// the password would be enough to set up a new authenticator.
    SelfMfaReset,
    /// A method this endpoint does not take (405); `allow` lists those it takes.
    WrongMethod { allow: &'static str },
    /// A tenant admin's trip or reset was refused.
    Trip(TripRefusal),
    /// A back-channel logout request that is unreadable or does not validate (400).
    InvalidLogoutRequest(String),
    /// The store cannot end the sessions a back-channel logout names (503).
    LogoutUnavailable,
    /// A self-service SSO step was refused: 409 for the state, 400 for the input, 503
    /// for the store; each with its own code.
    Sso(SsoAdminError),
    /// Too many calls of this kind; try again in the seconds given (429).
    Throttled(i64),
}

impl ApiError {
    /// Status, code and message: the table every refusal is answered from.
    fn answer(&self) -> (StatusCode, &'static str, String) {
        let plain = |status, code, message: &str| (status, code, message.to_string());
        match self {
            ApiError::CrossOrigin => plain(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "Cross-origin requests are not allowed.",
            ),
            ApiError::NotFound(m) => plain(StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Unauthenticated => plain(StatusCode::UNAUTHORIZED, "unauthenticated", "Sign-in required."),
            ApiError::Unavailable => plain(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Try again shortly."),
            ApiError::UnsupportedMediaType => plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send Content-Type: application/json.",
            ),
            ApiError::PayloadTooLarge => plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large.",
            ),
            ApiError::UnreadableBody => plain(StatusCode::BAD_REQUEST, "bad_request", "Unreadable request body."),
            ApiError::InvalidJson(problem) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("Invalid JSON body: {problem}."),
            ),
            ApiError::BadRequest(m) => plain(StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::NoPendingLogin => plain(
                StatusCode::UNAUTHORIZED,
                "no_pending_login",
                "Sign in with your password first.",
            ),
            ApiError::Login(e) => {
                let (status, message) = login_refusal(e);
                let code = match e {
                    LoginError::BadCredentials => "invalid_credentials",
                    LoginError::BadCode => "invalid_code",
                    LoginError::Throttled(_) => "throttled",
                    LoginError::NoPendingLogin => "no_pending_login",
                    LoginError::Busy | LoginError::Store(_) => "unavailable",
                    LoginError::Suspended(_) => "suspended",
                    LoginError::SsoRequired => "sso_required",
                    LoginError::IdpMfaRequired => "idp_mfa_required",
                };
                (status, code, message)
            }
            ApiError::Password(e) => {
                let (status, message) = password_refusal(e);
                (status, "password_not_changed", message)
            }
            ApiError::NotTenantAdmin => plain(StatusCode::FORBIDDEN, "forbidden", "Only tenant admins may do this."),
            ApiError::SelfMfaReset => plain(
                StatusCode::FORBIDDEN,
                "self_mfa_reset",
                "You cannot reset your own MFA. Ask another tenant admin or an operator.",
            ),
            ApiError::WrongMethod { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("Use {}.", allow.replace(", ", " or ")),
            ),
            ApiError::Trip(TripRefusal::SelfLockout) => plain(
                StatusCode::CONFLICT,
                "self_lockout",
                "You cannot trip the breaker of your own account.",
            ),
            ApiError::Trip(TripRefusal::Switch(e)) => match e {
                KillSwitchError::UnknownTier | KillSwitchError::UnknownTenant => {
                    (StatusCode::NOT_FOUND, "not_found", e.to_string())
                }
                KillSwitchError::Invalid(_) | KillSwitchError::Expiry(_) => {
                    (StatusCode::BAD_REQUEST, "bad_request", e.to_string())
                }
                KillSwitchError::IdempotencyConflict => (StatusCode::CONFLICT, "idempotency_conflict", e.to_string()),
                KillSwitchError::Store(_) => {
                    plain(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Try again shortly.")
                }
            },
            ApiError::InvalidLogoutRequest(m) => plain(StatusCode::BAD_REQUEST, "invalid_request", m),
            ApiError::LogoutUnavailable => plain(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Try again."),
            ApiError::Sso(e) => sso_refusal(e),
            ApiError::Throttled(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("Too many attempts. Try again in {secs} s."),
            ),
        }
    }

    /// The response, with the request id (and `Retry-After` for a throttled or busy
    /// sign-in step); logs an inner error with the request id.
    pub(in crate::ui) fn into_response(self, request_id: &str) -> Response<Bytes> {
        if let ApiError::Trip(TripRefusal::Switch(KillSwitchError::Store(err))) = &self {
            tracing::error!(request_id, error = %err, "kill switch store call failed");
        }
        if let ApiError::Sso(e @ (SsoAdminError::Store(_) | SsoAdminError::Seal(_))) = &self {
            tracing::error!(request_id, error = %e, "single sign-on settings store call failed");
        }
        let (status, code, message) = self.answer();
        let body = serde_json::json!({ "error": code, "message": message, "request_id": request_id });
        let mut resp = web::json(status, &body);
        web::set_request_id(&mut resp, request_id);
        if let ApiError::Login(e) = &self {
            retry_after(&mut resp, e);
        }
        if let ApiError::Throttled(secs) = &self
            && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        let allow = match &self {
            ApiError::WrongMethod { allow } => Some(*allow),
            _ => None,
        };
        if let Some(allow) = allow {
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        resp
    }
}

/// Status, code and message of a refused self-service SSO step: the service's words (safe
/// to show, never the secret) under a code per problem; a store or sealing failure is
/// only "unavailable".
fn sso_refusal(e: &SsoAdminError) -> (StatusCode, &'static str, String) {
    let code = match e {
        SsoAdminError::Store(_) | SsoAdminError::Seal(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Try again shortly.".into(),
            );
        }
        SsoAdminError::ManagedByPolicy => "managed_by_policy",
        SsoAdminError::NoDraft => "no_draft",
        SsoAdminError::NotTested => "not_tested",
        SsoAdminError::StaleTest => "stale_test",
        SsoAdminError::NothingToRollBack => "nothing_to_roll_back",
        SsoAdminError::IssuerSyntax { .. } => "invalid_issuer",
        SsoAdminError::AddressNotAllowed(_) => "address_not_allowed",
        SsoAdminError::Unreachable(_) => "unreachable",
        SsoAdminError::InvalidDiscovery => "invalid_discovery",
        SsoAdminError::IssuerMismatch(_) => "issuer_mismatch",
        SsoAdminError::NoPkceS256 => "no_pkce_s256",
        SsoAdminError::NoCodeFlow => "no_code_flow",
        SsoAdminError::ClientId => "invalid_client_id",
        SsoAdminError::SecretRequired => "client_secret_required",
        SsoAdminError::SecretSyntax => "invalid_client_secret",
        SsoAdminError::Scopes => "invalid_scopes",
        SsoAdminError::RolesClaim => "invalid_roles_claim",
        SsoAdminError::AdminGroup => "invalid_admin_group",
        SsoAdminError::Mfa => "invalid_mfa",
        SsoAdminError::BreakGlass(_) => "invalid_break_glass",
    };
    let status = if e.is_conflict() {
        StatusCode::CONFLICT
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, code, format!("{}.", capitalised(&e.to_string())))
}

/// `text` with its first letter upper case, as the API's messages are written.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

impl From<web::BodyError> for ApiError {
    fn from(e: web::BodyError) -> Self {
        match e {
            web::BodyError::TooLarge => ApiError::PayloadTooLarge,
            web::BodyError::Invalid => ApiError::UnreadableBody,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn body(resp: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(resp.body()).unwrap()
    }

    /// If this broke, a script would get another status or code than the API documents,
    /// lose the request id, or read a store's inner error.
    #[test]
    fn each_refusal_has_its_status_code_and_request_id() {
        let store = || StoreError::Unavailable("sqlite: DatabaseBusy at /var/lib/portcullis".into());
        let cases = [
            (ApiError::CrossOrigin, 403, "cross_origin"),
            (ApiError::NotFound("No such API."), 404, "not_found"),
            (ApiError::Unauthenticated, 401, "unauthenticated"),
            (ApiError::Unavailable, 503, "unavailable"),
            (ApiError::UnsupportedMediaType, 415, "unsupported_media_type"),
            (ApiError::PayloadTooLarge, 413, "payload_too_large"),
            (ApiError::InvalidJson("missing field `code`".into()), 400, "bad_request"),
            (ApiError::WrongMethod { allow: "POST" }, 405, "method_not_allowed"),
            (ApiError::NoPendingLogin, 401, "no_pending_login"),
            (ApiError::Login(LoginError::BadCredentials), 401, "invalid_credentials"),
            (ApiError::Login(LoginError::Store(store())), 503, "unavailable"),
            (ApiError::Login(LoginError::Suspended("m".into())), 423, "suspended"),
            (
                ApiError::Password(AccountError::WrongFactors),
                403,
                "password_not_changed",
            ),
            (
                ApiError::Password(AccountError::Store(store())),
                503,
                "password_not_changed",
            ),
            (ApiError::NotTenantAdmin, 403, "forbidden"),
            (ApiError::SelfMfaReset, 403, "self_mfa_reset"),
            (ApiError::Trip(TripRefusal::SelfLockout), 409, "self_lockout"),
            (
                ApiError::Trip(TripRefusal::Switch(KillSwitchError::Store(store()))),
                503,
                "unavailable",
            ),
            (
                ApiError::Trip(TripRefusal::Switch(KillSwitchError::IdempotencyConflict)),
                409,
                "idempotency_conflict",
            ),
            (ApiError::InvalidLogoutRequest("x".into()), 400, "invalid_request"),
            (ApiError::LogoutUnavailable, 503, "unavailable"),
            (ApiError::Sso(SsoAdminError::ManagedByPolicy), 409, "managed_by_policy"),
            (ApiError::Sso(SsoAdminError::NotTested), 409, "not_tested"),
            (
                ApiError::Sso(SsoAdminError::NothingToRollBack),
                409,
                "nothing_to_roll_back",
            ),
            (ApiError::Sso(SsoAdminError::NoPkceS256), 400, "no_pkce_s256"),
            (
                ApiError::Sso(SsoAdminError::IssuerMismatch("https://i".into())),
                400,
                "issuer_mismatch",
            ),
            (
                ApiError::Sso(SsoAdminError::Unreachable("x".into())),
                400,
                "unreachable",
            ),
            (
                ApiError::Sso(SsoAdminError::AddressNotAllowed("x".into())),
                400,
                "address_not_allowed",
            ),
            (ApiError::Sso(SsoAdminError::Store(store())), 503, "unavailable"),
            (ApiError::Throttled(30), 429, "throttled"),
        ];
        for (e, status, code) in cases {
            let shown = format!("{e:?}");
            let resp = e.into_response("0123abcd");
            let json = body(&resp);
            assert_eq!(
                (resp.status().as_u16(), json["error"].as_str()),
                (status, Some(code)),
                "{shown}"
            );
            assert_eq!(resp.headers()["x-request-id"], "0123abcd", "{shown}");
            let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["error", "message", "request_id"], "{shown}");
            assert_eq!(json["request_id"], "0123abcd", "{shown}");
            assert!(!json.to_string().contains("sqlite"), "{json}");
        }
    }

    /// If this broke, a script calling an endpoint with the wrong method would not learn
    /// which methods it takes.
    #[test]
    fn a_wrong_method_names_the_allowed_ones() {
        let resp = ApiError::WrongMethod { allow: "GET, DELETE" }.into_response("id");
        assert_eq!(resp.headers()[http::header::ALLOW], "GET, DELETE");
        assert_eq!(body(&resp)["message"], "Use GET or DELETE.");
    }

    /// If this broke, a throttled script would not learn when to try again.
    #[test]
    fn a_throttled_sign_in_says_when_to_try_again() {
        let resp = ApiError::Login(LoginError::Throttled(42)).into_response("id");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "42");
        assert_eq!(body(&resp)["message"], "Too many attempts. Try again in 42 s.");
    }
}
