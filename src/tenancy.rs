//! Names and hosts: the one place the spelling rules of tier names, tenant ids and host
//! names live, and the host → tenant lookup built from them. Plain data, no I/O; depends
//! on nothing, so config validation, the store and the request path share one rule each.
//!
//! Host matching ignores case, the port and one trailing dot; anything that is not a
//! valid host name never matches (the caller answers 400 or 421).

use std::borrow::Cow;
use std::collections::HashMap;

/// Longest tier name, tenant id or rule name.
pub const NAME_MAX_CHARS: usize = 32;

/// Whether `s` is spelled as a tier name, tenant id or auto-trip rule name: 1 to
/// [`NAME_MAX_CHARS`] of a-z, 0-9 and `-`, not starting with `-`. Such names become file
/// names, store key prefixes and URL path segments, so nothing else is allowed.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Lowercases a host name and checks its syntax (no port, no trailing dot).
pub fn normalise_host(text: &str) -> Result<String, String> {
    let host = text.to_ascii_lowercase();
    if !is_canonical_host(&host) {
        return Err(format!("`{text}` is not a valid host name (no port, no trailing dot)"));
    }
    Ok(host)
}

/// A DNS host name already in canonical form: lowercase LDH labels of 1 to 63 bytes,
/// none starting or ending with '-', 253 bytes at most, no port, no trailing dot.
pub fn is_canonical_host(host: &str) -> bool {
    let valid_label = |l: &[u8]| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with(b"-")
            && !l.ends_with(b"-")
            && l.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    };
    !host.is_empty() && host.len() <= 253 && host.as_bytes().split(|b| *b == b'.').all(valid_label)
}

/// A scheme users reach the public listener with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `https://`.
    Https,
}

/// What users see of the public listener when something in front of it changes its
/// scheme or port (a TLS-terminating load balancer: users on `https://host`, the gateway
/// on plaintext `:8080`). Set in configuration only (`[listen] external_scheme`,
/// `external_port`), never read from a request's `Host` or `X-Forwarded-Proto`, which
/// the client chooses. Each part left `None` is the listener's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExternalEndpoint {
    /// The scheme users see; `None`: the listener's (`https` over TLS, else `http`).
    pub scheme: Option<Scheme>,
    /// The port users see; `None`: the port the listener is bound to.
    pub port: Option<u16>,
}

impl ExternalEndpoint {
    /// Whether users reach the gateway over `https`, given whether the listener itself
    /// speaks TLS: what cookies and HSTS must assume.
    pub fn https(&self, listener_tls: bool) -> bool {
        match self.scheme {
            Some(scheme) => scheme == Scheme::Https,
            None => listener_tls,
        }
    }

    /// The origin users see for `host`, from the listener's own TLS and bound port with
    /// this endpoint's overrides applied (see [`public_origin`]).
    pub fn origin(&self, host: &str, listener_tls: bool, listener_port: u16) -> String {
        public_origin(host, self.https(listener_tls), self.port.unwrap_or(listener_port))
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

/// Maps every configured host (canonical, see [`is_canonical_host`]) to what it names:
/// the config's tenant entries; looked up with [`normalise_request_host`]'s output.
#[derive(Debug)]
pub struct HostMap<T> {
    by_host: HashMap<String, T, foldhash::fast::RandomState>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        HostMap {
            by_host: HashMap::default(),
        }
    }
}

impl<T> FromIterator<(String, T)> for HostMap<T> {
    /// Builds the map; validation already refused duplicate hosts.
    fn from_iter<I: IntoIterator<Item = (String, T)>>(hosts: I) -> Self {
        HostMap {
            by_host: hosts.into_iter().collect(),
        }
    }
}

impl<T> HostMap<T> {
    /// What a host names (the host already normalised by [`normalise_request_host`]).
    pub fn get(&self, host: &str) -> Option<&T> {
        self.by_host.get(host)
    }

    /// The same hosts, each naming `f(host, value)`.
    pub fn map<U>(self, mut f: impl FnMut(&str, T) -> U) -> HostMap<U> {
        HostMap {
            by_host: self
                .by_host
                .into_iter()
                .map(|(host, value)| {
                    let mapped = f(&host, value);
                    (host, mapped)
                })
                .collect(),
        }
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
    if is_canonical_host(host) {
        return Some(Cow::Borrowed(host));
    }
    normalise_host(host).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::normalise_request_host as n;

    #[test]
    fn names_are_safe_as_file_names_key_prefixes_and_path_segments() {
        use super::is_name;
        for good in ["prod", "staging-2", "a", &"x".repeat(32)] {
            assert!(is_name(good), "{good}");
        }
        for bad in [
            "",
            "-prod",
            "../etc",
            "a:b",
            "Prod",
            "a b",
            "a/b",
            "a.b",
            &"x".repeat(33),
        ] {
            assert!(!is_name(bad), "{bad}");
        }
    }

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
    fn an_external_endpoint_replaces_only_what_it_names() {
        use super::{ExternalEndpoint, Scheme};
        let listener = ExternalEndpoint::default();
        assert_eq!(listener.origin("acme.test", false, 8080), "http://acme.test:8080");
        assert_eq!(listener.origin("acme.test", true, 8443), "https://acme.test:8443");
        assert!(!listener.https(false));
        assert!(listener.https(true));

        // A TLS-terminating balancer on 443 in front of a plaintext listener on 8080.
        let balancer = ExternalEndpoint {
            scheme: Some(Scheme::Https),
            port: Some(443),
        };
        assert_eq!(balancer.origin("acme.test", false, 8080), "https://acme.test");
        assert!(balancer.https(false));

        let scheme_only = ExternalEndpoint {
            scheme: Some(Scheme::Https),
            port: None,
        };
        assert_eq!(scheme_only.origin("acme.test", false, 8080), "https://acme.test:8080");
        let port_only = ExternalEndpoint {
            scheme: None,
            port: Some(80),
        };
        assert_eq!(port_only.origin("acme.test", false, 8080), "http://acme.test");
        assert_eq!(port_only.origin("acme.test", true, 8443), "https://acme.test:80");
        let plain = ExternalEndpoint {
            scheme: Some(Scheme::Http),
            port: Some(8000),
        };
        assert_eq!(plain.origin("acme.test", false, 8080), "http://acme.test:8000");
        assert!(!plain.https(false));
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
