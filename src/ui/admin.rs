//! The tenant admin's kill switches on the tenant's own host: a user with the
//! `tenant-admin` role trips and resets account switches of their own tenant
//! (`PUT|DELETE /.portcullis/api/admin/accounts/{subject}/breaker`) and lists the
//! tenant's switches (`GET /.portcullis/api/admin/breakers`). Tenant and tier switches
//! stay with operators.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::web::{self, json_error};
use super::{Ctx, Portal, json_body, unauthenticated};
use crate::killswitch::service::Actor;
use crate::killswitch::{KillSwitchError, Scope, TripRequest};

/// The role that may act here.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// `PUT` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TripBody {
    reason: String,
    #[serde(default)]
    message: Option<String>,
    /// Relative expiry (`30m`, `2h`).
    #[serde(default)]
    expires_in: Option<String>,
}

impl Portal {
    /// `/.portcullis/api/admin/...`; `path` is below `admin/`.
    pub(super) async fn api_admin(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        method: Method,
        path: &str,
    ) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return unauthenticated();
        };
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Only tenant admins may manage breakers.",
            );
        }
        let actor = Actor {
            name: format!("user:{}", session.subject),
            source_ip: ctx.ip.clone(),
            system: "console".into(),
        };
        if method == Method::GET && path == "breakers" {
            return match self.switches.list(ctx.config).await {
                Ok(all) => {
                    let mine: Vec<_> = all
                        .into_iter()
                        .filter(|k| k.scope.tenant() == Some(ctx.entry.tenant.id.as_str()) && k.in_force(ctx.now))
                        .collect();
                    web::json(StatusCode::OK, &json!({ "breakers": mine }))
                }
                Err(e) => switch_error(&e),
            };
        }
        let Some(subject) = path
            .strip_prefix("accounts/")
            .and_then(|p| p.strip_suffix("/breaker"))
            .and_then(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok())
        else {
            return json_error(StatusCode::NOT_FOUND, "not_found", "No such API.");
        };
        let scope = Scope::Account {
            tier: ctx.entry.tier.name.clone(),
            tenant: ctx.entry.tenant.id.clone(),
            subject: subject.to_string(),
        };
        match method {
            Method::PUT => {
                if subject == session.subject {
                    return json_error(
                        StatusCode::CONFLICT,
                        "self_lockout",
                        "You cannot trip the breaker of your own account.",
                    );
                }
                let body: TripBody = match json_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let expires_at = match body.expires_in.as_deref().map(humantime::parse_duration) {
                    None => None,
                    Some(Ok(d)) => Some(ctx.now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
                    Some(Err(_)) => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "expires_in must be a duration such as 30m or 2h.",
                        );
                    }
                };
                let req = TripRequest {
                    scope,
                    reason: body.reason,
                    message: body.message,
                    expires_at,
                    idempotency_key: None,
                };
                match self.switches.trip(ctx.config, req, &actor, ctx.now).await {
                    Ok(result) => web::json(StatusCode::OK, &serde_json::to_value(&result).unwrap_or_default()),
                    Err(e) => switch_error(&e),
                }
            }
            Method::DELETE => match self.switches.reset(ctx.config, &scope, "", &actor, ctx.now).await {
                Ok(Some(_)) => web::json(StatusCode::OK, &json!({ "status": "reset" })),
                Ok(None) => json_error(StatusCode::NOT_FOUND, "not_found", "No breaker is tripped there."),
                Err(e) => switch_error(&e),
            },
            _ => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Use PUT or DELETE.",
            ),
        }
    }
}

fn switch_error(e: &KillSwitchError) -> Response<Bytes> {
    match e {
        KillSwitchError::UnknownTier | KillSwitchError::UnknownTenant => {
            json_error(StatusCode::NOT_FOUND, "not_found", &e.to_string())
        }
        KillSwitchError::Invalid(m) => json_error(StatusCode::BAD_REQUEST, "bad_request", m),
        KillSwitchError::IdempotencyConflict => {
            json_error(StatusCode::CONFLICT, "idempotency_conflict", &e.to_string())
        }
        KillSwitchError::Store(err) => {
            tracing::error!(error = %err, "kill switch store call failed");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Try again shortly.")
        }
    }
}
