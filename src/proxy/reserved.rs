//! Fixed endpoints under `/.portcullis/` that need no session; sign-in and the session
//! center are in `ui`. Never forwarded.

use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::respond;
use crate::tenancy::TenantEntry;

/// `/.portcullis/status`: which tenant and tier this host is, and whether access is open.
pub fn status(entry: &TenantEntry) -> Response<ProxyBody> {
    respond::json(
        StatusCode::OK,
        &serde_json::json!({ "tenant": entry.tenant.id, "tier": entry.tier.name, "status": "ok" }),
    )
}
