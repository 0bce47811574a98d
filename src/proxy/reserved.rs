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

/// What users read on the status endpoint while the tenant's upstream breaker is open.
pub const DEGRADED_MESSAGE: &str =
    "The application is failing to answer; requests are paused briefly while it recovers.";

/// `/.portcullis/status` (GET or HEAD, no session): which tenant and tier this host is,
/// and whether access is open, for status pages. `suspended` when a tier or tenant kill
/// switch covers it (with the operator's message for users, never the internal reason,
/// and since when), else `degraded` while its upstream breaker is open (`upstream_open_for`:
/// how long), else `ok`. An account switch never shows: the answer is public. Never cached.
pub fn status(
    entry: &TenantEntry,
    switch: Option<&KillSwitch>,
    upstream_open_for: Option<std::time::Duration>,
    now: i64,
) -> Response<ProxyBody> {
    let mut body = serde_json::json!({ "tenant": entry.tenant.id, "tier": entry.tier.name });
    let (status, message, since) = match (switch, upstream_open_for) {
        (Some(ks), _) => ("suspended", ks.message.as_str(), ks.tripped_at),
        (None, Some(open_for)) => {
            let secs = i64::try_from(open_for.as_secs()).unwrap_or(i64::MAX);
            ("degraded", DEGRADED_MESSAGE, now.saturating_sub(secs))
        }
        (None, None) => ("ok", "", 0),
    };
    body["status"] = status.into();
    if status != "ok" {
        body["message"] = message.into();
        body["since"] = crate::ui::web::time(since).into();
    }
    if let Some(expires_at) = switch.and_then(|ks| ks.expires_at) {
        body["expires_at"] = expires_at.into();
    }
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
