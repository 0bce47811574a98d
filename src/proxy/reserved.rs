//! Fixed endpoints under `/.portcullis/` that need no session; sign-in and the session
//! center are in `ui`. Never forwarded.

use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::respond;
use crate::config::TenantEntry;
use crate::killswitch::KillSwitch;

/// Reserved endpoints that still answer while a kill switch covers the tenant: the
/// status, the tier's public keys, the stylesheet and icon, and the login page (which says why).
/// Every other one, sign-in attempts included, answers 423.
pub fn open_while_suspended(rest: &str, method: &http::Method) -> bool {
    matches!(rest, "status" | "jwks.json" | "style.css" | "favicon.svg")
        || (rest == "login" && matches!(*method, http::Method::GET | http::Method::HEAD))
}

/// The pages' stylesheet and icon: nothing of any user, served to everyone (a
/// suspended account's 423 page is styled with them).
pub fn is_page_asset(rest: &str) -> bool {
    matches!(rest, "style.css" | "favicon.svg")
}

/// `/.portcullis/status`: which tenant and tier this host is, and whether access is open
/// (with the users' message when a kill switch covers it).
pub fn status(entry: &TenantEntry, switch: Option<&KillSwitch>) -> Response<ProxyBody> {
    let body = match switch {
        None => serde_json::json!({ "tenant": entry.tenant.id, "tier": entry.tier.name, "status": "ok" }),
        Some(ks) => serde_json::json!({
            "tenant": entry.tenant.id,
            "tier": entry.tier.name,
            "status": "suspended",
            "message": ks.message,
            "expires_at": ks.expires_at,
        }),
    };
    respond::json(StatusCode::OK, &body)
}

/// `/.portcullis/jwks.json`: the tier's public assertion keys (current and recently
/// retired, this replica's and those the tier's store publishes for other replicas and
/// earlier runs), cacheable for a minute; verifiers refetch on an unknown `kid`.
pub fn jwks(
    signer: &crate::assertion::Signer,
    shared: &[crate::assertion::SharedKey],
    now: i64,
) -> Response<ProxyBody> {
    let mut resp = respond::json(StatusCode::OK, &signer.jwks_with(shared, now));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=60"),
    );
    resp
}
