//! Talking to a tenant's identity provider: discovery (cached for an hour), its JWKS
//! (refetched on an unknown `kid` at most once per 10 s per issuer) and the code exchange.
//!
//! URL rules before any connection: in a production tier the issuer and every URL its
//! discovery names must be `https` and must not resolve to a loopback, link-local or
//! private address; other tiers also allow `http` and loopback, for testing. Bodies are
//! capped and every call has a timeout. Token contents and secrets never reach errors.
//!
//! The address rule holds for the connection itself, not only for a look-up before it
//! (DNS rebinding: a name that answers a public address to the check and a private one
//! to the connect). Production calls go through a connector whose resolver
//! ([`PublicOnlyResolver`]) resolves once, refuses the whole answer if any address is
//! not public, and hands the connector exactly the addresses it checked. IP literals
//! never reach a resolver; they are checked by the URL check and cannot change.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use crate::auth::oidc::{OidcError, TokenSet};

/// How long discovery is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Least time between two JWKS fetches of one issuer.
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);
/// Timeout of every call to an IdP.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest IdP response accepted.
const BODY_MAX: usize = 512 * 1024;

/// The parts of the discovery document the gateway uses.
#[derive(Debug, Clone, Deserialize)]
struct DiscoveryDoc {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
    #[serde(default)]
    response_types_supported: Vec<String>,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// A discovered provider and its current keys.
#[derive(Debug)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
    /// `response_types_supported` as discovered (the SSO wizard requires `code`).
    pub response_types_supported: Vec<String>,
    /// `code_challenge_methods_supported` as discovered (the SSO wizard requires `S256`).
    pub code_challenge_methods_supported: Vec<String>,
    /// Whether the IdP puts `iss` in its authorization responses (RFC 9207): then a
    /// callback without it is refused.
    pub authorization_response_iss_parameter_supported: bool,
    production: bool,
    /// The keys and when they were fetched.
    jwks: Mutex<Option<(Arc<JwkSet>, Instant)>>,
}

/// Answers a host name with its addresses. The system resolver in service; tests
/// pass a fake one to play a rebinding DNS server.
pub trait Lookup: Send + Sync + 'static {
    /// The addresses of `host` (a DNS name, never an IP literal).
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver.
struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_string();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The resolver of production tiers' connections: one look-up per connection, refused
/// unless every address is public, and the connector gets exactly the checked
/// addresses, so a second, different DNS answer can never be the one connected to.
#[derive(Clone)]
pub struct PublicOnlyResolver {
    /// Where names are looked up.
    lookup: Arc<dyn Lookup>,
}

impl tower_service::Service<Name> for PublicOnlyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let ips = lookup.lookup(name.as_str()).await?;
            if ips.is_empty() || ips.iter().any(|ip| !is_public(*ip)) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the identity provider resolves to a loopback, link-local or private address",
                ));
            }
            // Port 0: the connector sets the URL's port.
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// Why discovery of an issuer failed; the text is what [`OidcClient::provider`] reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// A URL breaks the address rules (scheme, or a non-public address in production),
    /// or its host does not resolve (checked before connecting).
    #[error("{0}")]
    Address(String),
    /// The discovery document could not be fetched.
    #[error("{0}")]
    Unreachable(String),
    /// The answer is not a discovery document.
    #[error("the discovery document is not valid")]
    Invalid,
    /// The document names another issuer than the one asked for.
    #[error("the discovery document names another issuer")]
    IssuerMismatch,
}

/// The IdP client shared by every tenant.
pub struct OidcClient {
    /// Non-production tiers: any address (loopback IdPs for testing).
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Production tiers: connects only to checked public addresses.
    public_http: Client<HttpsConnector<HttpConnector<PublicOnlyResolver>>, Full<Bytes>>,
    /// The resolver of the URL checks (the same one the production connector uses).
    lookup: Arc<dyn Lookup>,
    providers: moka::sync::Cache<(String, bool), Arc<Provider>>,
}

impl Default for OidcClient {
    fn default() -> Self {
        OidcClient::new()
    }
}

impl OidcClient {
    /// A client with the public web roots and the system resolver.
    pub fn new() -> Self {
        OidcClient::with_lookup(Arc::new(SystemLookup))
    }

    /// A client whose URL checks and production connections resolve names with `lookup`.
    pub fn with_lookup(lookup: Arc<dyn Lookup>) -> Self {
        fn https<R: Clone>(mut http: HttpConnector<R>) -> HttpsConnector<HttpConnector<R>> {
            http.enforce_http(false);
            http.set_connect_timeout(Some(CALL_TIMEOUT));
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        }
        let guarded = HttpConnector::new_with_resolver(PublicOnlyResolver { lookup: lookup.clone() });
        OidcClient {
            http: Client::builder(TokioExecutor::new()).build(https(HttpConnector::new())),
            public_http: Client::builder(TokioExecutor::new()).build(https(guarded)),
            lookup,
            providers: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(DISCOVERY_TTL)
                .build(),
        }
    }

    /// The provider of `issuer`, discovered (and checked) at most once an hour.
    pub async fn provider(&self, issuer: &str, production: bool) -> Result<Arc<Provider>, String> {
        let key = (issuer.to_string(), production);
        if let Some(p) = self.providers.get(&key) {
            return Ok(p);
        }
        self.discover(issuer, production).await.map_err(|e| e.to_string())
    }

    /// Discovers `issuer` now, whatever is cached (the SSO wizard checks what the IdP
    /// says today), with the same checks as [`Self::provider`], and caches the result.
    pub async fn discover(&self, issuer: &str, production: bool) -> Result<Arc<Provider>, DiscoveryError> {
        let key = (issuer.to_string(), production);
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        self.check_url(&url, production)
            .await
            .map_err(DiscoveryError::Address)?;
        let body = self.get(&url, production).await.map_err(DiscoveryError::Unreachable)?;
        let doc: DiscoveryDoc = serde_json::from_slice(&body).map_err(|_| DiscoveryError::Invalid)?;
        if doc.issuer != issuer {
            return Err(DiscoveryError::IssuerMismatch);
        }
        for u in [&doc.authorization_endpoint, &doc.token_endpoint, &doc.jwks_uri]
            .into_iter()
            .chain(doc.end_session_endpoint.as_ref())
        {
            self.check_url(u, production).await.map_err(DiscoveryError::Address)?;
        }
        let p = Arc::new(Provider {
            issuer: doc.issuer,
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint: doc.token_endpoint,
            jwks_uri: doc.jwks_uri,
            end_session_endpoint: doc.end_session_endpoint,
            response_types_supported: doc.response_types_supported,
            code_challenge_methods_supported: doc.code_challenge_methods_supported,
            authorization_response_iss_parameter_supported: doc.authorization_response_iss_parameter_supported,
            production,
            jwks: Mutex::new(None),
        });
        self.providers.insert(key, p.clone());
        Ok(p)
    }

    /// Checks a token against the provider's keys with `validate`. When the token names a
    /// key the cached set lacks, the set is refetched (rate-limited, see [`Self::jwks`])
    /// and the token checked once more.
    pub async fn validate_with_keys<T>(
        &self,
        p: &Provider,
        validate: impl Fn(&JwkSet) -> Result<T, OidcError>,
    ) -> Result<T, String> {
        match validate(&*self.jwks(p, false).await?) {
            Err(OidcError::UnknownKey) => validate(&*self.jwks(p, true).await?),
            other => other,
        }
        .map_err(|e| e.to_string())
    }

    /// The provider's keys; `refresh` asks for a new fetch (an unknown `kid`), which
    /// happens at most once per 10 s.
    pub async fn jwks(&self, p: &Provider, refresh: bool) -> Result<Arc<JwkSet>, String> {
        let cached = p.jwks.lock().ok().and_then(|g| g.clone());
        if let Some((set, at)) = &cached
            && (!refresh || at.elapsed() < JWKS_REFRESH_MIN)
        {
            return Ok(set.clone());
        }
        self.check_url(&p.jwks_uri, p.production).await?;
        let set: JwkSet = serde_json::from_slice(&self.get(&p.jwks_uri, p.production).await?)
            .map_err(|_| "the identity provider's key set is not valid".to_string())?;
        let set = Arc::new(set);
        if let Ok(mut g) = p.jwks.lock() {
            *g = Some((set.clone(), Instant::now()));
        }
        Ok(set)
    }

    /// Exchanges an authorization code (client_secret_basic, PKCE) for the ID token and
    /// the access token (kept only to check the ID token's `at_hash`).
    pub async fn exchange(
        &self,
        p: &Provider,
        client_id: &str,
        client_secret: &[u8],
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<TokenSet, ExchangeError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", code_verifier)
            .finish();
        let enc = |s: &[u8]| form_urlencoded::byte_serialize(s).collect::<String>();
        let basic = STANDARD.encode(format!("{}:{}", enc(client_id.as_bytes()), enc(client_secret)));
        let req = http::Request::post(&p.token_endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ExchangeError::Unavailable("bad token endpoint URL".to_string()))?;
        let (status, bytes) = self.call(req, p.production).await.map_err(ExchangeError::Unavailable)?;
        if status.is_server_error() {
            return Err(ExchangeError::Unavailable(format!(
                "the token endpoint answered {}",
                status.as_u16()
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            ExchangeError::Unavailable("the token endpoint answered with something that is not JSON".to_string())
        })?;
        if !status.is_success() {
            let error = json.get("error").and_then(|e| e.as_str()).unwrap_or("unknown");
            let safe: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            return Err(ExchangeError::Refused(format!(
                "the identity provider refused the code ({safe})"
            )));
        }
        let text = |name: &str| json.get(name).and_then(|t| t.as_str()).map(str::to_string);
        Ok(TokenSet {
            id_token: text("id_token")
                .ok_or_else(|| ExchangeError::Refused("the token response has no ID token".to_string()))?,
            access_token: text("access_token"),
        })
    }

    async fn get(&self, url: &str, production: bool) -> Result<Bytes, String> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| "bad URL".to_string())?;
        let (status, bytes) = self.call(req, production).await?;
        if !status.is_success() {
            return Err(format!("the identity provider answered {}", status.as_u16()));
        }
        Ok(bytes)
    }

    async fn call(
        &self,
        req: http::Request<Full<Bytes>>,
        production: bool,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let exchange = async {
            let sent = if production {
                self.public_http.request(req).await
            } else {
                self.http.request(req).await
            };
            let resp = sent.map_err(|_| "the identity provider cannot be reached".to_string())?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), BODY_MAX)
                .collect()
                .await
                .map_err(|_| "the identity provider's answer is unreadable or too large".to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| "the identity provider did not answer in time".to_string())?
    }
}

/// Why a code exchange failed; the text is safe to show and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The token endpoint could not be used: unreachable, too slow, a 5xx, or an
    /// answer that is not JSON or is larger than the cap (a 502 for the browser).
    Unavailable(String),
    /// The identity provider refused the code, or its answer holds no ID token.
    Refused(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Unavailable(why) | ExchangeError::Refused(why) => f.write_str(why),
        }
    }
}

impl OidcClient {
    /// The URL rules of the module doc, checked before connecting (for a clear error;
    /// the production connector checks the addresses it connects to again).
    async fn check_url(&self, url: &str, production: bool) -> Result<(), String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| "an identity provider URL is malformed".to_string())?;
        let host = uri.host().ok_or("an identity provider URL has no host")?;
        match (uri.scheme_str(), production) {
            (Some("https"), _) | (Some("http"), false) => {}
            _ => return Err("identity provider URLs must be https".into()),
        }
        if !production {
            return Ok(());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .lookup
                .lookup(bare)
                .await
                .map_err(|_| "the identity provider's host does not resolve".to_string())?,
        };
        if addrs.is_empty() || addrs.iter().any(|ip| !is_public(*ip)) {
            return Err("the identity provider resolves to a loopback, link-local or private address".into());
        }
        Ok(())
    }
}

/// Address blocks an IdP of a production tier must not resolve to: the IANA
/// special-purpose registries (private, shared, loopback, link-local, documentation,
/// benchmarking, multicast, reserved), plus the IPv6 blocks that embed or reach IPv4
/// (NAT64, 6to4, Teredo), which could lead back to a private IPv4 address.
const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// [`NOT_PUBLIC`] parsed, once rather than at every lookup (a test checks that every
/// block parses, so none is silently left out of the guard).
static NOT_PUBLIC_NETS: std::sync::LazyLock<Vec<ipnet::IpNet>> =
    std::sync::LazyLock::new(|| NOT_PUBLIC.iter().filter_map(|net| net.parse().ok()).collect());

fn is_public(ip: IpAddr) -> bool {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return is_public(IpAddr::V4(v4));
    }
    !NOT_PUBLIC_NETS.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake DNS server playing rebinding: the first answer is a public address, every
    /// later one `127.0.0.1`. `first` may also answer a mix at once.
    struct RebindingLookup {
        first: Vec<IpAddr>,
        calls: AtomicUsize,
    }

    impl RebindingLookup {
        fn new(first: &[&str]) -> Arc<Self> {
            Arc::new(RebindingLookup {
                first: first.iter().map(|a| a.parse().unwrap()).collect(),
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Lookup for RebindingLookup {
        fn lookup(&self, _host: &str) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let answer = if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                self.first.clone()
            } else {
                vec![IpAddr::from([127, 0, 0, 1])]
            };
            Box::pin(async move { Ok(answer) })
        }
    }

    /// A loopback server that counts the connections it accepts (and answers none).
    async fn counting_server() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((_tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn production_tiers_need_https_and_public_addresses() {
        let client = OidcClient::with_lookup(RebindingLookup::new(&["10.0.0.7"]));
        assert!(client.check_url("http://idp.example/x", true).await.is_err());
        assert!(client.check_url("https://127.0.0.1/x", true).await.is_err());
        assert!(client.check_url("https://10.1.2.3/x", true).await.is_err());
        assert!(client.check_url("https://[::1]/x", true).await.is_err());
        assert!(
            client.check_url("https://idp.example/x", true).await.is_err(),
            "private by DNS"
        );
        assert!(client.check_url("http://127.0.0.1:8080/x", false).await.is_ok());
        assert!(client.check_url("ftp://idp.example/x", false).await.is_err());
        assert!(is_public("93.184.216.34".parse().unwrap()));
        assert!(!is_public("169.254.169.254".parse().unwrap()));
        assert!(!is_public("100.64.0.1".parse().unwrap()));
    }

    /// If this broke, a production IdP name could resolve to an address that is not on
    /// the public internet (or leads back to a private one) and be connected to.
    #[test]
    fn special_purpose_addresses_are_not_public() {
        for ip in [
            "0.1.2.3",
            "10.1.1.1",
            "100.127.255.255",
            "127.0.0.2",
            "169.254.169.254",
            "172.31.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "100.128.0.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    /// If this broke, a mistyped block would be dropped from the guard without a word,
    /// and an IdP could resolve into it.
    #[test]
    fn every_not_public_block_parses() {
        assert_eq!(NOT_PUBLIC_NETS.len(), NOT_PUBLIC.len());
    }

    /// If this broke, a name that answers a public address to the check and 127.0.0.1
    /// to the connect would reach the gateway's own loopback services from a production
    /// tier (DNS rebinding).
    #[tokio::test]
    async fn a_rebinding_name_is_never_connected_to_a_private_address() {
        let (port, accepted) = counting_server().await;
        let lookup = RebindingLookup::new(&["93.184.216.34"]);
        let client = OidcClient::with_lookup(lookup.clone());
        let issuer = format!("https://rebind.test:{port}");
        let err = client.provider(&issuer, true).await.unwrap_err();
        assert_eq!(err, "the identity provider cannot be reached");
        // The check saw the public answer, the connection asked again and was refused.
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected to 127.0.0.1");
    }

    /// The resolver refuses an answer with any private address in it, and otherwise
    /// hands over exactly the addresses it checked.
    #[tokio::test]
    async fn the_connector_gets_only_checked_public_addresses() {
        use tower_service::Service;
        let name = |h: &str| h.parse::<Name>().unwrap();
        let mut mixed = PublicOnlyResolver {
            lookup: RebindingLookup::new(&["93.184.216.34", "127.0.0.1"]),
        };
        let err = mixed.call(name("mixed.test")).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        let mut public = PublicOnlyResolver {
            lookup: RebindingLookup::new(&["93.184.216.34", "2606:2800:220:1::1"]),
        };
        let addrs: Vec<SocketAddr> = public.call(name("idp.test")).await.unwrap().collect();
        assert_eq!(
            addrs,
            vec![
                "93.184.216.34:0".parse::<SocketAddr>().unwrap(),
                "[2606:2800:220:1::1]:0".parse().unwrap()
            ]
        );
        // A second call is a new look-up and gets checked again (here: 127.0.0.1).
        assert!(public.call(name("idp.test")).await.is_err());
    }
}
