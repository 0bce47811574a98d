//! What the upstream learns of a session: its signed identity assertion and the
//! convenience headers (`X-Portcullis-User`, `-Tenant`, `-Roles`), built together.
//!
//! Signing costs more than the rest of a request, so a built identity is reused while the
//! token has at least [`REUSE_MIN_SECS`] left and the tier's key is unchanged: first the
//! one the connection forwarded last (most connections carry one session, and this
//! needs no lookup), then the one cached for the session.

use std::sync::{Arc, Mutex, PoisonError};

use http::header::{HeaderName, HeaderValue};

use super::respond::Refusal;
use crate::assertion::Claims;
use crate::live::Site;
use crate::records::SessionRecord;

/// Header of the signed identity assertion sent upstream.
const ASSERTION_HEADER: HeaderName = HeaderName::from_static("portcullis-assertion");

/// Convenience headers naming the session's user, tenant and roles.
const X_PORTCULLIS_USER: HeaderName = HeaderName::from_static("x-portcullis-user");
const X_PORTCULLIS_TENANT: HeaderName = HeaderName::from_static("x-portcullis-tenant");
const X_PORTCULLIS_ROLES: HeaderName = HeaderName::from_static("x-portcullis-roles");

/// A built identity is reused only while at least this much of its token's life is left.
const REUSE_MIN_SECS: i64 = 30;

/// The headers forwarded for one session.
pub struct ForwardedIdentity {
    /// Store key of the session.
    id_hash: [u8; 32],
    kid: String,
    exp: i64,
    /// `(name, value)` of the assertion and of each convenience header whose value is
    /// a valid header value.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ForwardedIdentity {
    fn new(kid: &str, exp: i64, assertion: HeaderValue, s: &SessionRecord) -> Self {
        let mut headers = vec![(ASSERTION_HEADER, assertion)];
        for (name, value) in [
            (X_PORTCULLIS_USER, s.sub()),
            (X_PORTCULLIS_TENANT, s.tenant.as_str()),
            (X_PORTCULLIS_ROLES, &s.roles.join(",")),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.push((name, value));
            }
        }
        ForwardedIdentity {
            id_hash: s.id_hash,
            kid: kid.to_string(),
            exp,
            headers,
        }
    }

    /// Whether it may be forwarded for session `id_hash` now, signed with `kid`.
    fn reusable(&self, id_hash: &[u8; 32], kid: &str, now: i64) -> bool {
        self.id_hash == *id_hash && self.kid == kid && self.exp - now >= REUSE_MIN_SECS
    }

    /// Sets the headers, replacing any of the same name (the client's were removed).
    pub fn insert_into(&self, target: &mut http::HeaderMap) {
        for (name, value) in &self.headers {
            target.insert(name.clone(), value.clone());
        }
    }
}

/// The identity a connection forwarded last.
#[derive(Default)]
pub struct LastIdentity(Mutex<Option<Arc<ForwardedIdentity>>>);

impl std::fmt::Debug for LastIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LastIdentity(..)")
    }
}

/// Built identities by session, reused while fresh.
pub struct Identities {
    cache: moka::sync::Cache<[u8; 32], Arc<ForwardedIdentity>, foldhash::fast::RandomState>,
}

impl Default for Identities {
    fn default() -> Self {
        Identities::new()
    }
}

impl Identities {
    /// An empty cache.
    pub fn new() -> Self {
        Identities {
            cache: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(std::time::Duration::from_secs(
                    (crate::assertion::MAX_LIFETIME_SECS - REUSE_MIN_SECS).unsigned_abs(),
                ))
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The identity of session `s` for its tenant's upstream: reused (from `last`, the
    /// connection's, when given, else from the cache) or signed now.
    pub fn of(
        &self,
        site: &Site,
        s: &SessionRecord,
        last: Option<&LastIdentity>,
        now: i64,
    ) -> Result<Arc<ForwardedIdentity>, Refusal> {
        let unavailable = Refusal::Unavailable("The identity assertion could not be signed.");
        let signer = &site.signer.as_ref().ok_or_else(|| unavailable.clone())?.signer;
        let kid = signer.current().kid();
        let mut last = last.map(|l| l.0.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(known) = last.as_ref().and_then(|l| l.as_ref())
            && known.reusable(&s.id_hash, kid, now)
        {
            return Ok(known.clone());
        }
        let identity = match self.cache.get(&s.id_hash) {
            Some(cached) if cached.reusable(&s.id_hash, kid, now) => cached,
            _ => {
                let claims = Claims {
                    iss: site.entry.tier.assertion_issuer.clone(),
                    aud: s.tenant.clone(),
                    sub: s.sub().to_string(),
                    idp: s.idp.clone(),
                    tenant: s.tenant.clone(),
                    tier: s.tier.clone(),
                    sid: s.public_id(),
                    amr: s.amr.clone(),
                    roles: s.roles.clone(),
                    email: s.sub().contains('@').then(|| s.sub().to_string()),
                    iat: now,
                    exp: now + crate::assertion::MAX_LIFETIME_SECS,
                };
                let token = signer.sign(&claims).map_err(|e| {
                    tracing::error!(error = %e, tier = %s.tier, "cannot sign an identity assertion");
                    unavailable.clone()
                })?;
                let value = HeaderValue::from_str(&token).map_err(|_| unavailable)?;
                let identity = Arc::new(ForwardedIdentity::new(kid, claims.exp, value, s));
                self.cache.insert(s.id_hash, identity.clone());
                identity
            }
        };
        if let Some(last) = last.as_mut() {
            **last = Some(identity.clone());
        }
        Ok(identity)
    }
}
