//! The policy model: loads `gateway.toml`, `tiers/*.toml` and `tenants/*.toml`,
//! validates them as one set and builds the typed [`Config`] the gateway runs on.
//!
//! Every policy rule lives here. `portcullis run`, `check`, `reload` and `demo` all go
//! through [`load`], which reports every problem at once as `file:line: what is wrong`.
//! This module reads files and the environment (through [`Env`]) and nothing else; it
//! never logs secret values. Key and certificate files are parsed here, once, into typed
//! values ([`Certificate`], [`ClientAuth`]); the modules that build TLS from them never
//! see PEM.

mod guard;
mod raw;
mod validate;

#[cfg(test)]
pub(crate) use validate::parse_allow_entry_for_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::CertificateDer;

pub use guard::{GuardSettings, GuardSettingsError};

use crate::policy::RouteTable;
pub use crate::secret::{Env, ProcessEnv};
use crate::secret::{PrivateKey, SecretBytes};
use crate::tenancy::{ExternalEndpoint, HostMap};

/// One problem in the policy set, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File the problem is in (or the policy directory for set-wide problems).
    pub file: PathBuf,
    /// 1-based line, when the problem is tied to one.
    pub line: Option<usize>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Values given on the command line that replace policy values (for scripting and the
/// demo). They are validated like the policy values they replace.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: public listener address.
    pub listen: Option<String>,
    /// `--admin-listen`: admin listener address.
    pub admin_listen: Option<String>,
    /// `--data`: embedded store directory (relative to the working directory).
    pub data: Option<PathBuf>,
    /// `--store`: store URL (`sqlite:PATH` or `redis://...`).
    pub store: Option<String>,
    /// `--upstream`: one upstream URL for every tenant.
    pub upstream: Option<String>,
}

/// The whole validated policy set. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// Directory the policy set was loaded from (reloads read it again).
    pub dir: PathBuf,
    /// Listeners, TLS, store, proxies and limits.
    pub gateway: GatewayConfig,
    /// Tiers by name.
    pub tiers: BTreeMap<String, Arc<Tier>>,
    /// Tenants in file order (sorted by file name).
    pub tenants: Vec<Arc<Tenant>>,
    /// Hex SHA-256 over every policy file, to tell policy versions apart in logs.
    pub digest: String,
    /// What each part of the policy means, digested, to tell which tiers a reload changes.
    pub effective: EffectiveDigests,
}

/// Digests of the policy's effective content by scope: file texts plus the fingerprints
/// of the secrets their references resolve to. A reload through the admin API needs an
/// operator of every tier it changes; these say which tiers those are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveDigests {
    /// `gateway.toml`: listeners, TLS, store, proxies and limits serve every tier.
    pub gateway: [u8; 32],
    /// Per tier: its tier file and the files of its tenants.
    pub tiers: BTreeMap<String, [u8; 32]>,
}

impl EffectiveDigests {
    /// The tiers whose effective policy differs between `self` and `newer`: every tier
    /// of either when `gateway.toml` changed, else each tier added, removed or changed
    /// (a tenant moved between tiers changes both).
    pub fn changed_tiers(&self, newer: &EffectiveDigests) -> std::collections::BTreeSet<String> {
        let all = self.tiers.keys().chain(newer.tiers.keys()).cloned();
        if self.gateway != newer.gateway {
            return all.collect();
        }
        all.filter(|t| self.tiers.get(t) != newer.tiers.get(t)).collect()
    }
}

/// `gateway.toml`, validated.
#[derive(Debug)]
pub struct GatewayConfig {
    /// Listener addresses and whether plain HTTP is allowed.
    pub listen: Listen,
    /// Certificates picked by SNI; empty when the public listener is plaintext.
    pub tls: Vec<Certificate>,
    /// Where sessions and state live.
    pub store: StoreConfig,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Size and time limits on the request path.
    pub limits: Limits,
    /// Where security events go besides stdout (`[siem]`); applies at start.
    pub siem: SiemConfig,
    /// OpenTelemetry trace export; `None` (no `otlp_endpoint`) turns tracing off. Applies
    /// at start: a reload does not start or stop the exporter.
    pub tracing: Option<TracingConfig>,
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Public (tenant-facing) listener.
    pub public: SocketAddr,
    /// Admin listener (health, metrics, operator API).
    pub admin: SocketAddr,
    /// Plain HTTP on the public listener; only behind a TLS-terminating balancer or for the demo.
    pub plaintext: bool,
    /// The scheme and port users see (`external_scheme`, `external_port`) where a
    /// balancer in front changes them; the tenants' public origins are built from it.
    pub external: ExternalEndpoint,
    /// The admin listener's certificate (`[listen.admin_tls]`): with it the admin listener
    /// speaks HTTPS only. Applies at start: a reload does not change the listener.
    pub admin_tls: Option<Arc<AdminTls>>,
}

/// The admin listener's certificate chain and key, parsed from PEM once, at load.
#[derive(Debug)]
pub struct AdminTls {
    /// The certificate chain, leaf first, as the PEM file lists it; `portcullis reload`
    /// trusts exactly its leaf.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain's private key; secret.
    pub key: PrivateKey,
}

/// Where `portcullis reload` finds the admin listener, read from `gateway.toml` alone.
#[derive(Debug, Clone)]
pub struct AdminEndpoint {
    /// `[listen] admin`.
    pub addr: SocketAddr,
    /// The leaf certificate of `[listen.admin_tls]`, when the listener speaks HTTPS: the
    /// one certificate the client trusts.
    pub tls_certificate: Option<CertificateDer<'static>>,
}

/// A certificate and key for a set of hosts, parsed from PEM once, at load.
#[derive(Debug)]
pub struct Certificate {
    /// Hosts (lowercase) this certificate serves via SNI.
    pub hosts: Vec<String>,
    /// The certificate chain, leaf first, as the PEM file lists it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain's private key; secret.
    pub key: PrivateKey,
}

/// A client certificate chain and its key, for mutual TLS to a tier's `https` upstreams;
/// parsed from PEM once, at load.
#[derive(Debug)]
pub struct ClientAuth {
    /// The certificate chain, leaf first, as the PEM file lists it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain's private key; secret.
    pub key: PrivateKey,
}

/// Store location.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Embedded store directory; also where `demo.json` and runtime files go.
    pub data_dir: PathBuf,
    /// Store URL (`sqlite:PATH` or `redis://...`); defaults to SQLite in `data_dir`.
    pub url: String,
    /// Longest time a cached session is trusted without reading the store: the bound on
    /// how long a revocation that nobody pushed (the CLI's) can go unseen. Applies at start.
    pub max_staleness: std::time::Duration,
}

/// `[siem]`: the optional sinks security events are sent to besides stdout.
#[derive(Debug, Clone)]
pub struct SiemConfig {
    /// Events POSTed as JSON arrays, when set.
    pub webhook: Option<WebhookSink>,
    /// Events as RFC 5424 messages over TCP (TLS unless to a loopback address), when set.
    pub syslog: Option<SyslogSink>,
    /// Most events each sink holds while its receiver is slow or down; beyond it the
    /// oldest are dropped (and counted), so memory stays bounded.
    pub queue: usize,
}

impl SiemConfig {
    /// Events a sink holds by default: a few seconds of a login storm.
    pub const DEFAULT_QUEUE: usize = 10_000;
}

impl Default for SiemConfig {
    fn default() -> Self {
        SiemConfig {
            webhook: None,
            syslog: None,
            queue: Self::DEFAULT_QUEUE,
        }
    }
}

/// `[siem] webhook`: an HTTP(S) endpoint that takes batches of events.
#[derive(Clone)]
pub struct WebhookSink {
    /// `https://...` (or `http://` to a loopback address).
    pub url: http::Uri,
    /// Sent as `Authorization: Bearer <token>`, when set; secret.
    pub token: Option<Arc<SecretBytes>>,
}

/// Shows the webhook's scheme and host only: some receivers put a key in the path or
/// query.
impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field(
                "url",
                &format_args!(
                    "{}://{}/[redacted]",
                    self.url.scheme_str().unwrap_or("-"),
                    self.url.authority().map_or("-", |a| a.as_str())
                ),
            )
            .field("token", &self.token)
            .finish()
    }
}

/// `[siem] syslog`: a syslog receiver over TCP.
#[derive(Debug, Clone)]
pub struct SyslogSink {
    /// Host name or address, as written.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`tls://`, RFC 5425) or plain TCP (`tcp://`, loopback only).
    pub tls: bool,
    /// Extra CA certificates trusted for the receiver (`syslog_ca`), besides the web PKI roots.
    pub ca: Vec<CertificateDer<'static>>,
}

/// Request-path limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line plus headers) in bytes; beyond it 431.
    pub max_header_bytes: usize,
    /// Most header lines in a request; beyond it 431.
    pub max_headers: usize,
    /// Default largest request body in bytes; tenants and routes may lower or raise it.
    pub max_body_bytes: u64,
    /// Time allowed to receive the rest of an HTTP/1 request head once it began to
    /// arrive, and to finish the TLS handshake.
    pub header_read_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed to connect to an upstream.
    pub upstream_connect_timeout: Duration,
    /// Time allowed for an upstream to start its response.
    pub upstream_response_timeout: Duration,
    /// On SIGTERM, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// Open connections the admin listener holds at most, so a flood of connections
    /// cannot take the operator API and console away when they are needed.
    pub admin_max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            admin_max_connections: 256,
        }
    }
}

/// `[tracing]`: where request spans go and how many of them.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP (protobuf) traces URL: the configured collector endpoint with
    /// `/v1/traces` appended, as OpenTelemetry's base-endpoint convention has it.
    pub traces_url: String,
    /// Share of new traces recorded (0.0 to 1.0); a trace a trusted proxy started keeps
    /// its own sampling decision.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans; tells replicas' deployments apart.
    pub service_name: String,
}

/// An isolated environment with its own keys, store namespace and upstream allowlist.
#[derive(Debug)]
pub struct Tier {
    /// Tier name (`prod`, `staging`, ...); part of the session cookie name.
    pub name: String,
    /// `__Host-portcullis-<name>`: the session cookie's name, made once here so no request
    /// formats it again (see [`session_cookie_name`]).
    pub session_cookie: String,
    /// Production tiers refuse inline secrets.
    pub production: bool,
    /// Upstreams tenants of this tier may use.
    pub upstream_allowlist: Vec<AllowEntry>,
    /// `iss` of the tier's identity assertions.
    pub assertion_issuer: String,
    /// Redis ACL user and password for this tier's key prefix, when the store is Redis
    /// and the operator set one up (both or neither).
    pub redis_auth: Option<(String, SecretBytes)>,
    /// The tier's keys.
    pub keys: Keyring,
    /// Operators (people) and the hashes of their bearer tokens.
    pub operators: Vec<Operator>,
    /// Automation tokens (SIEM/SOAR systems), each scoped to actions on named tenants.
    pub automation: Vec<AutomationToken>,
}

/// A machine credential of a tier: may only do what its scopes say, on its tenants.
#[derive(Debug, Clone)]
pub struct AutomationToken {
    /// System name, for the audit log.
    pub name: String,
    /// SHA-256 of the bearer token.
    pub token_sha256: [u8; 32],
    /// Allowed actions; only `breaker:trip` exists.
    pub scopes: Vec<String>,
    /// Tenants of this tier it may act on.
    pub tenants: Vec<String>,
}

/// Scopes an automation token may hold.
pub const AUTOMATION_SCOPES: [&str; 1] = ["breaker:trip"];

/// A tier's key material, resolved from references.
#[derive(Debug)]
pub struct Keyring {
    /// Key for cookies and state the gateway seals or signs.
    pub cookie: SecretBytes,
    /// Assertion signing key (PKCS#8 PEM, Ed25519 or P-256), when configured; without
    /// one the gateway signs with a key it makes at start (lost on restart).
    pub assertion: Option<SecretBytes>,
    /// Bearer token the gateway presents to this tier's upstreams
    /// (`Portcullis-Upstream-Token`), when configured.
    pub upstream_token: Option<SecretBytes>,
    /// Client certificate chain and key for mutual TLS to this tier's `https` upstreams,
    /// when configured (both or neither).
    pub upstream_client_cert: Option<ClientAuth>,
    /// Extra CA certificates trusted for this tier's `https` upstreams, besides the public
    /// web roots (an internal CA); never empty.
    pub upstream_ca: Option<Vec<CertificateDer<'static>>>,
}

/// An operator of a tier.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Person's name; two tokens with one name are the same person.
    pub name: String,
    /// SHA-256 of the bearer token.
    pub token_sha256: [u8; 32],
}

/// One upstream allowlist entry of a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// Address range or host name.
    pub host: AllowHost,
    /// Port, when the entry names one; any port otherwise.
    pub port: Option<u16>,
}

/// Host part of an allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowHost {
    /// An address or CIDR range.
    Net(IpNet),
    /// A DNS name (lowercase).
    Name(String),
}

impl AllowEntry {
    /// True when `host:port` of an upstream is covered by this entry.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match (&self.host, bare.parse::<IpAddr>()) {
            (AllowHost::Net(net), Ok(ip)) => net.contains(&ip),
            (AllowHost::Name(name), Err(_)) => name.eq_ignore_ascii_case(bare),
            _ => false,
        }
    }
}

/// A customer of the SaaS, on one tier, with hosts and one upstream.
#[derive(Debug)]
pub struct Tenant {
    /// Tenant id (`acme`).
    pub id: String,
    /// Display name for pages.
    pub name: String,
    /// Name of the tier it belongs to.
    pub tier: String,
    /// Hosts (lowercase, no port) that route to this tenant.
    pub hosts: Vec<String>,
    /// The tenant's app.
    pub upstream: Upstream,
    /// Session timeouts.
    pub session: SessionPolicy,
    /// OIDC single sign-on, when the tenant uses it.
    pub sso: Option<SsoConfig>,
    /// Route rules (longest prefix wins).
    pub routes: RouteTable,
    /// Largest request body for routes that do not set their own.
    pub max_body_bytes: u64,
    /// Rules that trip a kill switch on their own (credential stuffing, MFA guessing).
    pub auto_trip: Vec<AutoTripRule>,
    /// The upstream's circuit breaker and bulkhead limits.
    pub upstream_guard: GuardSettings,
}

/// A rule that trips a kill switch when failures pile up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTripRule {
    /// Rule name, recorded as the actor (`rule:<name>`).
    pub name: String,
    /// What is counted and what trips.
    pub kind: AutoTripKind,
    /// Failures within `window` that trip.
    pub threshold: u32,
    /// Counting window.
    pub window: Duration,
    /// Automatic reset after this long, if set.
    pub expires: Option<Duration>,
}

/// What an auto-trip rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoTripKind {
    /// Wrong second-factor codes of one account → that account's switch.
    AccountMfaFailures,
    /// Failed logins across the tenant (credential stuffing) → the tenant's switch.
    TenantLoginFailures,
}

impl AutoTripKind {
    /// Policy spelling.
    pub const NAMES: [&str; 2] = ["account_mfa_failures", "tenant_login_failures"];
}

/// Where a tenant's app listens.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host:port` as written (port made explicit).
    pub authority: http::uri::Authority,
    /// Host part, for allowlist checks.
    pub host: String,
    /// Port (explicit or the scheme's default).
    pub port: u16,
}

/// Session timeouts of a tenant.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Session ends after this long without a request.
    pub idle_timeout: Duration,
    /// Session ends this long after login whatever the activity.
    pub absolute_timeout: Duration,
}

impl SessionPolicy {
    /// Idle timeout in whole seconds, as sessions store it.
    pub fn idle_secs(&self) -> i64 {
        i64::try_from(self.idle_timeout.as_secs()).unwrap_or(i64::MAX)
    }

    /// Absolute lifetime in whole seconds, as sessions store it.
    pub fn absolute_secs(&self) -> i64 {
        i64::try_from(self.absolute_timeout.as_secs()).unwrap_or(i64::MAX)
    }
}

/// MFA policy for SSO logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaPolicy {
    /// Accept the IdP's MFA, else step up with the gateway's TOTP.
    Required,
    /// Always TOTP at the gateway.
    Gateway,
    /// Only the IdP's MFA; refuse otherwise.
    Idp,
}

/// A tenant's OIDC settings from policy.
#[derive(Debug)]
pub struct SsoConfig {
    /// Issuer URL (exact string the ID token's `iss` must equal).
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: SecretBytes,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Claim whose values become roles.
    pub roles_claim: Option<String>,
    /// MFA policy for SSO users.
    pub mfa: MfaPolicy,
    /// SSO only: local passwords are refused except for the `break_glass` accounts.
    pub enforce: bool,
    /// Local accounts that may still sign in with a password when SSO is enforced.
    pub break_glass: Vec<String>,
}

impl SsoConfig {
    /// Whether the local account `username` may sign in with a password.
    pub fn allows_password(&self, username: &str) -> bool {
        !self.enforce || self.break_glass.iter().any(|b| b == username)
    }

    /// Whether the tenant signs anyone in with a password: not when SSO is enforced with
    /// no break-glass account (SSO only). Its password endpoints are then 404: there is
    /// nothing to try there.
    pub fn offers_passwords(&self) -> bool {
        !self.enforce || !self.break_glass.is_empty()
    }
}

impl Config {
    /// Every tier as the stores connect for it (name, and its Redis ACL user if any).
    pub fn tier_access(&self) -> Vec<crate::store::TierAccess<'_>> {
        self.tiers
            .values()
            .map(|t| crate::store::TierAccess {
                name: &t.name,
                redis_user: t.redis_auth.as_ref().map(|(user, password)| (user.as_str(), password)),
            })
            .collect()
    }
}

/// Loads and validates the policy set in `dir`, applying command-line overrides.
/// Returns every problem found, not just the first.
pub fn load(dir: &Path, env: &dyn Env, overrides: &Overrides) -> Result<Config, Vec<ConfigError>> {
    validate::load(dir, env, overrides)
}

/// The name of a tier's session cookie, `__Host-portcullis-<tier>`: the one place it is
/// spelt (the tier's other cookies add `-<purpose>`).
pub fn session_cookie_name(tier: &str) -> String {
    format!("__Host-portcullis-{tier}")
}

/// A tenant together with its tier, as request handling needs both.
#[derive(Debug, Clone)]
pub struct TenantEntry {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// Its tier.
    pub tier: Arc<Tier>,
    /// What users see of the public listener (`[listen] external_scheme`,
    /// `external_port`), for [`TenantEntry::public_origin`].
    pub external: ExternalEndpoint,
}

impl TenantEntry {
    /// The tenant's primary host: the first of its configured hosts (validation keeps
    /// them lowercase, without port or trailing dot, and refuses an empty list).
    pub fn primary_host(&self) -> &str {
        self.tenant.hosts.first().map_or("", String::as_str)
    }

    /// The tenant's canonical public origin, `scheme://primary-host[:port]`, for every
    /// absolute URL the gateway hands out (OIDC `redirect_uri`, back-channel logout URI,
    /// post-logout redirect). It comes from configuration only, never from the request's
    /// `Host` or `X-Forwarded-Proto`: the scheme is `[listen] external_scheme`, else the
    /// public listener's (`https` unless `listen.plaintext`, as `tls` says); the port is
    /// `[listen] external_port`, else the one the listener is bound to, and is left out
    /// when it is the scheme's default.
    pub fn public_origin(&self, tls: bool, port: u16) -> String {
        self.external.origin(self.primary_host(), tls, port)
    }
}

impl Config {
    /// Every configured host mapped to its tenant entry, built once per policy version.
    pub fn host_map(&self) -> HostMap<TenantEntry> {
        self.tenants
            .iter()
            .filter_map(|tenant| Some((tenant, self.tier_of(tenant)?)))
            .flat_map(|(tenant, tier)| {
                tenant.hosts.iter().map(move |host| {
                    let entry = TenantEntry {
                        tenant: tenant.clone(),
                        tier: tier.clone(),
                        external: self.gateway.listen.external,
                    };
                    (host.clone(), entry)
                })
            })
            .collect()
    }

    /// The tier a tenant belongs to (always present: validation guarantees it).
    pub fn tier_of(&self, tenant: &Tenant) -> Option<&Arc<Tier>> {
        self.tiers.get(&tenant.tier)
    }

    /// The issuer of a tenant's single sign-on, if it has one: what `idp=sso` names when
    /// an account is named (see `crate::account::named`).
    pub fn sso_issuer(&self, tenant: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|t| t.id == tenant)
            .and_then(|t| t.sso.as_ref())
            .map(|s| s.issuer.as_str())
    }
}

/// Reads only `[listen] admin` and the certificate of `[listen.admin_tls]` from
/// `gateway.toml`, for CLI commands that talk to a running gateway (never the key).
pub fn admin_endpoint(dir: &Path, env: &dyn Env) -> Result<AdminEndpoint, ConfigError> {
    validate::admin_endpoint(dir, env)
}

#[cfg(test)]
mod tests;
