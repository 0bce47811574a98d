//! The gateway's own endpoints under `/.portcullis/` on tenant hosts. Never forwarded.
//!
//! Only `status` exists before sessions do; sign-in answers that it is not available
//! rather than pretending, and everything else is 404.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::respond::{self, Refusal};
use crate::tenancy::TenantEntry;

/// Serves a reserved path (`path` is canonical and starts with `/.portcullis/`).
pub fn handle(
    req: &Request<Incoming>,
    path: &str,
    entry: &TenantEntry,
    request_id: &str,
) -> Result<Response<ProxyBody>, Refusal> {
    let rest = path.strip_prefix(crate::policy::RESERVED_PREFIX).unwrap_or_default();
    match rest {
        "status" => Ok(respond::json(
            StatusCode::OK,
            &serde_json::json!({ "tenant": entry.tenant.id, "tier": entry.tier.name, "status": "ok" }),
        )),
        "login" | "login/sso" if matches!(*req.method(), http::Method::GET | http::Method::HEAD) => Ok(respond::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "Sign-in is not available on this gateway yet.",
            request_id,
        )),
        _ => Err(Refusal::NotFound),
    }
}
