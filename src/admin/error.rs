//! The admin API's one mapping from refusal to response, like the public listener's
//! (`proxy::respond`): every error of `/v1/...` is [`AdminError`], answered as
//! `{"error","message","request_id"}` (plus `errors`, `tiers` or a change's own fields
//! where the API documents them), the request id also in `x-request-id`. The caller sees
//! a status, a short message and the request id; a store's or a service's inner error is
//! logged with that id, never sent.
//!
//! The request id is made per request by [`with_request_id`], the router's middleware,
//! which also writes the response of every refusal a handler returned, and of every one
//! the router or an extractor made (unknown path, wrong method, a path or query that does
//! not decode), so no answer of the API is plain text without an id. Also here: the one
//! reading of a JSON body error ([`AdminError::json_body`]), which names fields but never
//! repeats a value. Owns no authentication and no rules; the handlers choose the refusal.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::scope_refused_event;
use crate::changes::{ChangeError, Operator};
use crate::killswitch::{ExpiryError, KillSwitchError};

/// Why the admin API refused a call.
#[derive(Debug, Clone)]
pub(super) enum AdminError {
    /// No valid operator or automation bearer token (401).
    NoToken,
    /// No valid operator bearer token, where only operators may call (401).
    NoOperatorToken,
    /// The caller's token may not do this (403).
    Forbidden(&'static str),
    /// No such tier, tenant or change, or one beyond the caller's reach (404).
    NotFound(String),
    /// A reset where no breaker is tripped (404).
    NotTripped,
    /// The request is malformed; the text says what (400).
    BadRequest(String),
    /// The body is larger than the API takes (413).
    PayloadTooLarge,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// The path exists but does not take this method (405; the router adds `Allow`).
    MethodNotAllowed,
    /// The router or an extractor refused the request before a handler chose a refusal
    /// (an unknown path, a path segment or query that does not decode). Only the status
    /// is kept: axum's own text may repeat the input.
    Rejected(StatusCode),
    /// The same `Idempotency-Key` was used for a different trip (409).
    IdempotencyConflict,
    /// The approver proposed or edited the change (403).
    SamePerson,
    /// The change is expired, decided, or its digest differs (409).
    Conflict(String),
    /// A policy set with errors was refused, nothing applied (422); `change` is the
    /// failed change request's view when a change caused it.
    InvalidPolicy {
        message: &'static str,
        errors: Vec<String>,
        change: Option<Value>,
    },
    /// A reload would change tiers the operator does not operate (403).
    ReloadRefused { tiers: Vec<String> },
    /// Applying an approved change failed; nothing changed (500).
    ApplyFailed(Cause),
    /// A store the call needs is unavailable (503).
    Unavailable {
        message: &'static str,
        cause: Option<Cause>,
    },
}

/// The body of every refusal, as the OpenAPI document describes it (written by
/// [`AdminError::into_response`]; some refusals add fields: `errors`, `tiers`, or a
/// change request's own).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(super) struct ErrorBody {
    /// A stable code (`unauthenticated`, `not_found`, `bad_request`, ...).
    pub error: String,
    /// What is wrong, for people.
    pub message: String,
    /// The id of this request in the gateway's log (also in `x-request-id`).
    pub request_id: String,
}

/// An inner error, for the log only.
#[derive(Debug, Clone)]
pub(super) struct Cause {
    /// What failed, as the log line says it.
    what: &'static str,
    /// The inner error's text.
    error: String,
}

impl Cause {
    pub(super) fn new(what: &'static str, error: impl std::fmt::Display) -> Self {
        Cause {
            what,
            error: error.to_string(),
        }
    }
}

impl AdminError {
    /// 503 for a failed store call, logged as `what`.
    pub(super) fn store(what: &'static str, error: impl std::fmt::Display) -> Self {
        AdminError::Unavailable {
            message: "The store is unavailable; try again.",
            cause: Some(Cause::new(what, error)),
        }
    }

    /// A JSON body serde refused: where the syntax broke, or which field is unknown,
    /// missing or of the wrong type, never the value (it may be a secret sent in the
    /// wrong field).
    pub(super) fn json_body(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let problem = match e.classify() {
            Category::Data => crate::changes::serde_problem(e),
            Category::Syntax | Category::Eof => format!("malformed JSON at line {} column {}", e.line(), e.column()),
            Category::Io => "unreadable body".to_string(),
        };
        AdminError::BadRequest(format!("Invalid JSON body: {problem}"))
    }

    /// The refusal of a change request call by `op`. A change of another tier is
    /// answered like one that does not exist, and reported as a `cross_tier` event.
    pub(super) fn change(e: ChangeError, op: &Operator) -> Self {
        match e {
            ChangeError::Invalid(m) => AdminError::BadRequest(m),
            ChangeError::NotFound(what) => AdminError::NotFound(format!("Unknown {what}.")),
            ChangeError::CrossTier { owner, tenant, what } => {
                scope_refused_event(
                    "cross_tier",
                    &format!("operator:{}", op.name),
                    &op.tier,
                    &owner,
                    tenant.as_deref(),
                    &op.source_ip,
                );
                AdminError::NotFound(format!("Unknown {what}."))
            }
            ChangeError::SamePerson => AdminError::SamePerson,
            ChangeError::Conflict(m) => AdminError::Conflict(m),
            ChangeError::InvalidPolicy { change, errors } => AdminError::InvalidPolicy {
                message: "The resulting policy set is invalid; nothing was changed.",
                errors,
                change: Some(change.view(crate::clock::unix_now())),
            },
            ChangeError::Apply(m) => AdminError::ApplyFailed(Cause::new("applying a change request failed", m)),
            ChangeError::Store(e) => AdminError::store("change request store call failed", e),
        }
    }

    /// The status this refusal is answered with.
    pub(super) fn status(&self) -> StatusCode {
        self.answer().0
    }

    /// The message the caller is told (safe for the audit log: it never holds a cause).
    pub(super) fn public_message(&self) -> String {
        self.answer().2
    }

    /// A 4xx: the call itself was refused, not the gateway unable to answer it.
    pub(super) fn is_the_callers(&self) -> bool {
        self.status().is_client_error()
    }

    /// Status, code and message: the table every refusal is answered from.
    fn answer(&self) -> (StatusCode, &'static str, String) {
        match self {
            AdminError::NoToken => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "A valid operator or automation bearer token is required.".into(),
            ),
            AdminError::NoOperatorToken => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "A valid operator bearer token is required.".into(),
            ),
            AdminError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.to_string()),
            AdminError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            AdminError::NotTripped => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No breaker is tripped there.".into(),
            ),
            AdminError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            AdminError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large.".into(),
            ),
            AdminError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send a JSON body with Content-Type: application/json.".into(),
            ),
            AdminError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This path does not take this method; the Allow header lists those it takes.".into(),
            ),
            AdminError::Rejected(status) => {
                let (code, message) = match *status {
                    StatusCode::NOT_FOUND => ("not_found", "No such API."),
                    StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "Request body too large."),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                        "unsupported_media_type",
                        "Send a JSON body with Content-Type: application/json.",
                    ),
                    s if s.is_server_error() => ("internal_error", "The request failed; try again."),
                    _ => ("bad_request", "The request's path or query is malformed."),
                };
                (*status, code, message.into())
            }
            AdminError::IdempotencyConflict => (
                StatusCode::CONFLICT,
                "idempotency_conflict",
                KillSwitchError::IdempotencyConflict.to_string(),
            ),
            AdminError::SamePerson => (
                StatusCode::FORBIDDEN,
                "same_person",
                ChangeError::SamePerson.to_string(),
            ),
            AdminError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            AdminError::InvalidPolicy { message, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", message.to_string())
            }
            AdminError::ReloadRefused { tiers } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "The reload changes tiers you do not operate ({}); nothing was applied.",
                    tiers.join(", ")
                ),
            ),
            AdminError::ApplyFailed(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "apply_failed",
                "Applying the change failed and nothing was changed; the change is marked failed.".into(),
            ),
            AdminError::Unavailable { message, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", message.to_string())
            }
        }
    }

    /// The response, with the request id; logs the inner error with it.
    pub(super) fn into_response(self, request_id: &str) -> Response {
        let (status, code, message) = self.answer();
        let mut body = Map::new();
        match self {
            AdminError::InvalidPolicy { errors, change, .. } => {
                if let Some(Value::Object(view)) = change {
                    body = view;
                }
                body.insert("errors".into(), json!(errors));
            }
            AdminError::ReloadRefused { tiers } => {
                body.insert("tiers".into(), json!(tiers));
            }
            AdminError::ApplyFailed(cause) | AdminError::Unavailable { cause: Some(cause), .. } => {
                tracing::error!(request_id, error = %cause.error, "{}", cause.what);
            }
            _ => {}
        }
        let head = ErrorBody {
            error: code.into(),
            message,
            request_id: request_id.into(),
        };
        if let Ok(Value::Object(fields)) = serde_json::to_value(&head) {
            body.extend(fields);
        }
        let mut resp = (status, axum::Json(Value::Object(body))).into_response();
        if let Ok(v) = HeaderValue::from_str(request_id) {
            resp.headers_mut()
                .insert(HeaderName::from_static(crate::telemetry::REQUEST_ID_HEADER), v);
        }
        resp
    }
}

/// The admin API's one answer to each refusal of the kill switch service.
impl From<KillSwitchError> for AdminError {
    fn from(e: KillSwitchError) -> Self {
        match e {
            KillSwitchError::UnknownTier | KillSwitchError::UnknownTenant => AdminError::NotFound(e.to_string()),
            KillSwitchError::Invalid(m) => AdminError::BadRequest(m),
            // Only `expires_in` is a duration here: name the field.
            KillSwitchError::Expiry(ExpiryError::NotADuration) => AdminError::BadRequest(format!("expires_in: {e}.")),
            KillSwitchError::Expiry(ExpiryError::NotInFuture) => AdminError::BadRequest(e.to_string()),
            KillSwitchError::IdempotencyConflict => AdminError::IdempotencyConflict,
            KillSwitchError::Store(e) => AdminError::store("kill switch store call failed", e),
        }
    }
}

/// Axum's half of the mapping: the status now, the body once the request id is known.
/// [`with_request_id`] writes it; the router runs every request through it.
impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = self.answer().0;
        resp.extensions_mut().insert(self);
        resp
    }
}

/// Middleware of the admin router: gives each request an id (random, 16 hex digits),
/// writes the body of a refusal with it, also of one the router or an extractor made
/// (which would otherwise be plain text without the id), and names it in every answer's
/// `x-request-id` (the admin access log takes it from there).
pub(super) async fn with_request_id(req: Request, next: Next) -> Response {
    let request_id = format!("{:016x}", rand::random::<u64>());
    let mut resp = next.run(req).await;
    match resp.extensions_mut().remove::<AdminError>() {
        Some(refusal) => refusal.into_response(&request_id),
        None if resp.status().is_client_error() || resp.status().is_server_error() => {
            AdminError::Rejected(resp.status()).into_response(&request_id)
        }
        None => {
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut()
                    .insert(HeaderName::from_static(crate::telemetry::REQUEST_ID_HEADER), v);
            }
            resp
        }
    }
}

/// The router's answer to a path it does not know.
pub(super) async fn no_such_path() -> AdminError {
    AdminError::NotFound("No such API.".into())
}

/// The router's answer to a method a known path does not take.
pub(super) async fn wrong_method() -> AdminError {
    AdminError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;
    use crate::store::StoreError;

    /// Status and body, once the request id header is checked.
    async fn body(resp: Response) -> (u16, Value) {
        assert!(resp.headers().contains_key("x-request-id"), "{:?}", resp.headers());
        let status = resp.status().as_u16();
        let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// If this broke, a refusal would get another status or code than the API documents,
    /// lose its request id, or show an operator a store's inner error.
    #[tokio::test]
    async fn each_refusal_has_its_status_code_and_request_id() {
        let store = || StoreError::Unavailable("sqlite: DatabaseBusy at /var/lib/x".into());
        let cases = [
            (AdminError::NoToken, 401, "unauthenticated"),
            (AdminError::NoOperatorToken, 401, "unauthenticated"),
            (AdminError::Forbidden("no"), 403, "forbidden"),
            (AdminError::NotFound("Unknown tier.".into()), 404, "not_found"),
            (AdminError::NotTripped, 404, "not_found"),
            (AdminError::BadRequest("x".into()), 400, "bad_request"),
            (AdminError::PayloadTooLarge, 413, "payload_too_large"),
            (AdminError::UnsupportedMediaType, 415, "unsupported_media_type"),
            (AdminError::MethodNotAllowed, 405, "method_not_allowed"),
            (AdminError::Rejected(StatusCode::BAD_REQUEST), 400, "bad_request"),
            (AdminError::Rejected(StatusCode::NOT_FOUND), 404, "not_found"),
            (AdminError::IdempotencyConflict, 409, "idempotency_conflict"),
            (AdminError::SamePerson, 403, "same_person"),
            (AdminError::Conflict("expired".into()), 409, "conflict"),
            (
                AdminError::ReloadRefused {
                    tiers: vec!["staging".into()],
                },
                403,
                "forbidden",
            ),
            (
                AdminError::ApplyFailed(Cause::new("apply", "disk full at /etc")),
                500,
                "apply_failed",
            ),
            (AdminError::store("store", store()), 503, "unavailable"),
            (AdminError::from(KillSwitchError::Store(store())), 503, "unavailable"),
            (AdminError::from(KillSwitchError::UnknownTenant), 404, "not_found"),
        ];
        for (e, status, code) in cases {
            let shown = format!("{e:?}");
            let resp = e.into_response("0123abcd");
            assert_eq!(resp.headers()["x-request-id"], "0123abcd", "{shown}");
            let (got, json) = body(resp).await;
            assert_eq!((got, json["error"].as_str()), (status, Some(code)), "{shown}");
            assert_eq!(json["request_id"], "0123abcd", "{shown}");
            let text = json.to_string();
            assert!(!text.contains("sqlite") && !text.contains("/etc"), "{text}");
        }
    }

    /// If this broke, the kill switch refusals would read differently on the API than
    /// before (operators' scripts match them).
    #[tokio::test]
    async fn kill_switch_refusals_keep_their_texts() {
        let cases = [
            (KillSwitchError::UnknownTenant, "unknown tenant"),
            (
                KillSwitchError::Invalid("reason is required".into()),
                "reason is required",
            ),
            (
                KillSwitchError::Expiry(ExpiryError::NotADuration),
                "expires_in: expiry must be a duration such as 90s, 2h or 1d, at least 1s.",
            ),
            (
                KillSwitchError::Expiry(ExpiryError::NotInFuture),
                "expiry must be in the future",
            ),
            (
                KillSwitchError::IdempotencyConflict,
                "Idempotency-Key was already used for a different request",
            ),
            (
                KillSwitchError::Store(StoreError::Unavailable("x".into())),
                "The store is unavailable; try again.",
            ),
        ];
        for (e, message) in cases {
            let (_, json) = body(AdminError::from(e).into_response("id")).await;
            assert_eq!(json["message"], message);
        }
    }

    /// If this broke, a secret pasted into the wrong field of a body would come back in
    /// the error, and so reach logs and terminals.
    #[test]
    fn a_wrongly_typed_value_is_never_repeated() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            reason: String,
            expires_at: Option<i64>,
        }
        let shown = |text: &str| match serde_json::from_str::<Body>(text) {
            Ok(b) => panic!("accepted: {b:?}"),
            Err(e) => match AdminError::json_body(&e) {
                AdminError::BadRequest(m) => m,
                other => panic!("{other:?}"),
            },
        };
        let m = shown(r#"{"reason": "x", "expires_at": "hunter2-secret"}"#);
        assert!(!m.contains("hunter2") && m.contains("expected i64"), "{m}");
        let m = shown(r#"{"reason": "hunter2-secret", "expires_at": 1, "expires_at": 2}"#);
        assert!(!m.contains("hunter2"), "{m}");
        let m = shown(r#"{"reason": "x", "surprise": 1}"#);
        assert!(m.contains("unknown field `surprise`"), "{m}");
        let m = shown(r#"{"reason": "hunter2-secret"#);
        assert!(!m.contains("hunter2") && m.contains("malformed JSON"), "{m}");
    }

    /// If this broke, a failed change would no longer show its state and the policy
    /// errors together with the refusal.
    #[tokio::test]
    async fn an_invalid_policy_keeps_its_errors_and_the_change() {
        let e = AdminError::InvalidPolicy {
            message: "The resulting policy set is invalid; nothing was changed.",
            errors: vec!["tenants/acme.toml:3: bad".into()],
            change: Some(json!({"id": "chg-1", "status": "failed"})),
        };
        let (status, json) = body(e.into_response("id")).await;
        assert_eq!(status, 422);
        assert_eq!(json["id"], "chg-1");
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"], "invalid_policy");
        assert_eq!(json["errors"][0], "tenants/acme.toml:3: bad");
    }
}
