//! Policy files as written: serde structs that mirror the TOML exactly.
//!
//! Every table denies unknown keys, and values that later checks report on keep their
//! byte span so errors can name the line. Nothing here validates meaning; that is
//! `config::validate`'s job.

use serde::Deserialize;
use toml::Spanned;

/// `gateway.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub siem: RawSiem,
    #[serde(default)]
    pub tracing: RawTracing,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub public: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    pub plaintext: Option<bool>,
    /// The scheme users see (`http` | `https`), when a balancer in front changes it.
    pub external_scheme: Option<Spanned<String>>,
    /// The port users see, when a balancer in front changes it.
    pub external_port: Option<Spanned<i64>>,
    pub admin_plaintext: Option<Spanned<bool>>,
    pub admin_tls: Option<RawAdminTls>,
}

/// `[listen.admin_tls]`: the admin listener's certificate and key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub hosts: Spanned<Vec<Spanned<String>>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub data: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub max_staleness: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub upstream_connect_timeout: Option<Spanned<String>>,
    pub upstream_response_timeout: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub admin_max_connections: Option<Spanned<i64>>,
}

/// `tiers/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub name: Spanned<String>,
    #[serde(default)]
    pub production: bool,
    #[serde(default)]
    pub upstream_allowlist: Vec<Spanned<String>>,
    pub assertion_issuer: Option<Spanned<String>>,
    pub redis_user: Option<Spanned<String>>,
    pub redis_password: Option<Spanned<String>>,
    pub keys: RawKeys,
    #[serde(default)]
    pub operators: Vec<RawOperator>,
    #[serde(default)]
    pub automation: Vec<RawAutomation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutomation {
    pub name: Spanned<String>,
    pub token_sha256: Spanned<String>,
    pub scopes: Spanned<Vec<String>>,
    pub tenants: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub cookie: Spanned<String>,
    pub assertion: Option<Spanned<String>>,
    pub upstream_token: Option<Spanned<String>>,
    pub upstream_client_cert: Option<Spanned<String>>,
    pub upstream_client_key: Option<Spanned<String>>,
    pub upstream_ca: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperator {
    pub name: Spanned<String>,
    pub token_sha256: Spanned<String>,
}

/// `tenants/<id>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: Spanned<String>,
    pub name: Option<String>,
    pub tier: Spanned<String>,
    pub hosts: Spanned<Vec<Spanned<String>>>,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub session: RawSession,
    pub sso: Option<RawSso>,
    #[serde(default)]
    pub limits: RawTenantLimits,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub auto_trip: Vec<RawAutoTrip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoTrip {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    pub threshold: Spanned<i64>,
    pub window: Spanned<String>,
    pub expires: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub idle_timeout: Option<Spanned<String>>,
    pub absolute_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTenantLimits {
    pub max_body_bytes: Option<Spanned<i64>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub max_queued: Option<Spanned<i64>>,
    pub queue_wait: Option<Spanned<String>>,
    pub breaker_failures: Option<Spanned<i64>>,
    pub breaker_cool_down: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSso {
    pub issuer: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret: Spanned<String>,
    pub scopes: Option<Vec<String>>,
    pub roles_claim: Option<String>,
    pub mfa: Option<Spanned<String>>,
    #[serde(default)]
    pub enforce: bool,
    #[serde(default)]
    pub break_glass: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Spanned<String>,
    pub access: Option<Spanned<String>>,
    pub roles: Option<Spanned<Vec<String>>>,
    pub max_body_bytes: Option<Spanned<i64>>,
}

/// `gateway.toml` `[siem]`: where security events go besides stdout.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSiem {
    pub webhook: Option<Spanned<String>>,
    pub webhook_token: Option<Spanned<String>>,
    pub syslog: Option<Spanned<String>>,
    pub syslog_ca: Option<Spanned<String>>,
    pub queue: Option<Spanned<i64>>,
}

/// `[tracing]` of `gateway.toml`: OpenTelemetry trace export.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<Spanned<String>>,
    pub sample_ratio: Option<Spanned<f64>>,
    pub service_name: Option<Spanned<String>>,
}
