//! Host → tenant lookup. Plain data built once per policy version.
//!
//! Host matching ignores case, the port and one trailing dot; anything that is not a
//! valid host name never matches (the caller answers 400 or 421).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Tenant, Tier};

/// A tenant together with its tier, as request handling needs both.
#[derive(Debug, Clone)]
pub struct TenantEntry {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// Its tier.
    pub tier: Arc<Tier>,
}

impl TenantEntry {
    /// The tenant's primary host: the first of its configured hosts (validation keeps
    /// them lowercase, without port or trailing dot, and refuses an empty list).
    pub fn primary_host(&self) -> &str {
        self.tenant.hosts.first().map_or("", String::as_str)
    }

    /// The tenant's canonical public origin, `scheme://primary-host[:port]`, for every
    /// absolute URL the gateway hands out (OIDC `redirect_uri`, post-logout redirect).
    /// It comes from configuration only, never from the request's `Host`: the scheme is
    /// the public listener's (`https` unless `listen.plaintext`), the port the one it is
    /// bound to (left out when it is the scheme's default). The policy has no separate
    /// public URL setting, so a gateway behind a balancer that changes scheme or port
    /// must listen on the scheme and port its users see.
    pub fn public_origin(&self, tls: bool, port: u16) -> String {
        public_origin(self.primary_host(), tls, port)
    }
}

/// `scheme://host[:port]`, the port left out when it is the scheme's default.
pub fn public_origin(host: &str, tls: bool, port: u16) -> String {
    let (scheme, default_port) = if tls { ("https", 443) } else { ("http", 80) };
    if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// Maps every configured host to its tenant.
#[derive(Debug, Default)]
pub struct HostMap {
    by_host: HashMap<String, TenantEntry, foldhash::fast::RandomState>,
}

impl HostMap {
    /// Builds the map; validation already refused duplicate hosts and unknown tiers.
    pub fn new(config: &Config) -> Self {
        let mut by_host = HashMap::default();
        for tenant in &config.tenants {
            let Some(tier) = config.tier_of(tenant) else { continue };
            for host in &tenant.hosts {
                by_host.insert(
                    host.clone(),
                    TenantEntry {
                        tenant: tenant.clone(),
                        tier: tier.clone(),
                    },
                );
            }
        }
        HostMap { by_host }
    }

    /// The tenant for a host (already normalised by [`normalise_request_host`]).
    pub fn get(&self, host: &str) -> Option<&TenantEntry> {
        self.by_host.get(host)
    }
}

/// Normalises a `Host`/`:authority` value: strips the port and one trailing dot, and
/// lowercases. None when the value is not a plain DNS host name (IP literals, spaces,
/// empty labels), which never name a tenant.
pub fn normalise_request_host(value: &str) -> Option<Cow<'_, str>> {
    let host = match value.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.len() <= 5 => h,
        Some(_) => return None,
        None => value,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // Browsers and clients send the canonical form; only other spellings are copied.
    if crate::config::is_canonical_host(host) {
        return Some(Cow::Borrowed(host));
    }
    crate::config::normalise_host(host).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::normalise_request_host as n;

    #[test]
    fn the_public_origin_leaves_out_only_the_schemes_default_port() {
        use super::public_origin as o;
        assert_eq!(o("initech.localhost", false, 8080), "http://initech.localhost:8080");
        assert_eq!(o("initech.localhost", false, 80), "http://initech.localhost");
        assert_eq!(o("initech.localhost", false, 443), "http://initech.localhost:443");
        assert_eq!(o("initech.localhost", true, 443), "https://initech.localhost");
        assert_eq!(o("initech.localhost", true, 8443), "https://initech.localhost:8443");
    }

    #[test]
    fn host_matching_ignores_case_port_and_one_trailing_dot() {
        assert_eq!(n("ACME.localhost:8080").as_deref(), Some("acme.localhost"));
        assert_eq!(n("acme.localhost.").as_deref(), Some("acme.localhost"));
        assert_eq!(n("acme.localhost.:443").as_deref(), Some("acme.localhost"));
    }

    #[test]
    fn odd_hosts_never_match() {
        for bad in [
            "acme.localhost ",
            "acme.localhost..",
            "",
            ":80",
            "acme.localhost:",
            "acme.localhost:x",
            "[::1]:80",
            "a b",
            "acme.localhost:123456",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }
}
