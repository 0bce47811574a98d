//! Turns the raw policy files into a typed [`Config`], collecting every problem.
//!
//! Owns all cross-file rules: unknown tiers, hosts claimed twice, upstreams outside the
//! tier's allowlist, key material shared between tiers, inline secrets in production.
//! Parses certificate and key files (PEM) once, into the typed values TLS is built from.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::raw::{RawAutoTrip, RawCertificate, RawGateway, RawLimits, RawRoute, RawTenant, RawTenantLimits, RawTier};
use super::{
    AUTOMATION_SCOPES, AllowEntry, AllowHost, AutoTripKind, AutoTripRule, AutomationToken, Certificate, ClientAuth,
    Config, ConfigError, EffectiveDigests, GatewayConfig, GuardSettings, GuardSettingsError, Keyring, Limits, Listen,
    MfaPolicy, Operator, Overrides, SessionPolicy, SsoConfig, StoreConfig, Tenant, Tier, Upstream,
};
use crate::policy::{Access, RouteRule, RouteTable};
use crate::secret::{Env, PrivateKey, SecretBytes, SecretRef};
use crate::tenancy::{self, normalise_host};

/// A policy file's text, kept to turn byte spans into line numbers.
struct Source {
    path: PathBuf,
    text: String,
    /// Fingerprints of the secrets this file's references resolved to, in order: part
    /// of what the file means (a rotated key file changes the tier without a byte of
    /// policy text changing), so they count in [`Source::effective_digest`].
    secrets: std::cell::RefCell<Vec<[u8; 32]>>,
}

impl Source {
    /// SHA-256 over the file's path, text and resolved secrets' fingerprints (never the
    /// secrets themselves). Call once every reference of the file is resolved.
    fn effective_digest(&self, dir: &Path) -> [u8; 32] {
        let mut d = Sha256::new();
        let rel = self.path.strip_prefix(dir).unwrap_or(&self.path);
        d.update(rel.to_string_lossy().as_bytes());
        d.update([0]);
        d.update(self.text.as_bytes());
        d.update([0]);
        for fp in self.secrets.borrow().iter() {
            d.update(fp);
        }
        d.finalize().into()
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes().iter().take(end).filter(|b| **b == b'\n').count() + 1
    }
}

/// A tenant named in a tier file, checked once every tenant is loaded.
struct PendingTenantRef {
    file: PathBuf,
    line: usize,
    tenant: String,
    tier: String,
}

/// Collects errors while validation goes on.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn at(&mut self, src: &Source, span: Range<usize>, message: impl Into<String>) {
        self.0.push(ConfigError {
            file: src.path.clone(),
            line: Some(src.line_of(span.start)),
            message: message.into(),
        });
    }

    fn file(&mut self, path: &Path, message: impl Into<String>) {
        self.0.push(ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: message.into(),
        });
    }
}

pub(super) fn load(dir: &Path, env: &dyn Env, overrides: &Overrides) -> Result<Config, Vec<ConfigError>> {
    let mut problems = Problems::default();
    let mut digest = Sha256::new();

    let gateway_path = dir.join("gateway.toml");
    let gateway_src = read_source(&gateway_path, &mut problems);
    let tier_srcs = read_dir_sources(&dir.join("tiers"), &mut problems);
    let tenant_srcs = read_dir_sources(&dir.join("tenants"), &mut problems);
    for src in gateway_src.iter().chain(&tier_srcs).chain(&tenant_srcs) {
        let rel = src.path.strip_prefix(dir).unwrap_or(&src.path);
        digest.update(rel.to_string_lossy().as_bytes());
        digest.update([0]);
        digest.update(src.text.as_bytes());
        digest.update([0]);
    }

    let gateway = gateway_src.as_ref().and_then(|src| {
        parse::<RawGateway>(src, &mut problems).map(|raw| build_gateway(dir, src, raw, env, overrides, &mut problems))
    });

    let mut tiers: BTreeMap<String, Arc<Tier>> = BTreeMap::new();
    let mut tier_files: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    let mut fingerprints: HashMap<[u8; 32], String> = HashMap::new();
    let mut automation_tenants = Vec::new();
    for src in &tier_srcs {
        let Some(raw) = parse::<RawTier>(src, &mut problems) else {
            continue;
        };
        let name_span = raw.name.span();
        if let Some(tier) = build_tier(
            dir,
            src,
            raw,
            env,
            &mut fingerprints,
            &mut automation_tenants,
            &mut problems,
        ) {
            if tiers.contains_key(&tier.name) {
                problems.at(src, name_span, format!("tier `{}` is defined twice", tier.name));
            } else {
                tier_files.insert(tier.name.clone(), src.effective_digest(dir));
                tiers.insert(tier.name.clone(), Arc::new(tier));
            }
        }
    }
    if tier_srcs.is_empty() && problems.0.is_empty() {
        problems.file(&dir.join("tiers"), "no tier defined (expected tiers/*.toml)");
    }

    let default_body = gateway
        .as_ref()
        .map_or(Limits::default().max_body_bytes, |g| g.limits.max_body_bytes);
    let mut tenants = Vec::new();
    let mut hosts_seen: HashMap<String, String> = HashMap::new();
    let mut ids_seen: HashMap<String, PathBuf> = HashMap::new();
    let mut tenant_files: BTreeMap<String, (String, [u8; 32])> = BTreeMap::new();
    for src in &tenant_srcs {
        let Some(raw) = parse::<RawTenant>(src, &mut problems) else {
            continue;
        };
        let Some(tenant) = build_tenant(
            dir,
            src,
            raw,
            env,
            overrides,
            &tiers,
            default_body,
            &mut hosts_seen,
            &mut problems,
        ) else {
            continue;
        };
        if let Some(first) = ids_seen.get(&tenant.id) {
            problems.file(
                &src.path,
                format!("tenant id `{}` is already used by {}", tenant.id, first.display()),
            );
            continue;
        }
        ids_seen.insert(tenant.id.clone(), src.path.clone());
        tenant_files.insert(tenant.id.clone(), (tenant.tier.clone(), src.effective_digest(dir)));
        tenants.push(Arc::new(tenant));
    }

    for r in automation_tenants {
        if !tenants.iter().any(|t| t.id == r.tenant && t.tier == r.tier) {
            problems.0.push(ConfigError {
                file: r.file,
                line: Some(r.line),
                message: format!(
                    "automation.tenants: `{}` is not a tenant of tier `{}`",
                    r.tenant, r.tier
                ),
            });
        }
    }

    if let Some(g) = &gateway
        && !g.listen.plaintext
    {
        for tenant in &tenants {
            for host in &tenant.hosts {
                if !g.tls.iter().any(|c| c.hosts.iter().any(|h| h == host)) {
                    problems.file(
                            &gateway_path,
                            format!("no TLS certificate for host `{host}` of tenant `{}` (add it to a [[tls.certificates]] or set listen.plaintext = true)", tenant.id),
                        );
                }
            }
        }
    }

    let effective = EffectiveDigests {
        gateway: gateway_src
            .as_ref()
            .map(|s| s.effective_digest(dir))
            .unwrap_or_default(),
        tiers: tier_files
            .into_iter()
            .map(|(name, file)| {
                // The tier file, then its tenants' files by tenant id (BTreeMap order).
                let mut d = Sha256::new();
                d.update(file);
                for (id, (_, digest)) in tenant_files.iter().filter(|(_, (tier, _))| *tier == name) {
                    d.update(id.as_bytes());
                    d.update([0]);
                    d.update(digest);
                }
                (name, d.finalize().into())
            })
            .collect(),
    };
    match gateway {
        Some(gateway) if problems.0.is_empty() => Ok(Config {
            dir: dir.to_path_buf(),
            gateway,
            tiers,
            tenants,
            digest: hex::encode(digest.finalize()),
            effective,
        }),
        _ => Err(problems.0),
    }
}

fn read_source(path: &Path, problems: &mut Problems) -> Option<Source> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(Source {
            path: path.to_path_buf(),
            text,
            secrets: std::cell::RefCell::new(Vec::new()),
        }),
        Err(e) => {
            problems.file(path, format!("cannot read: {e}"));
            None
        }
    }
}

/// Reads every `*.toml` in `dir`, sorted by name; other visible files are errors so a
/// misnamed policy file is never silently ignored (`*.md` is allowed for notes).
fn read_dir_sources(dir: &Path, problems: &mut Problems) -> Vec<Source> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.file(dir, format!("cannot read directory: {e}"));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut sources = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        if !name.ends_with(".toml") || !path.is_file() {
            problems.file(&path, "not a policy file (expected a .toml file)");
            continue;
        }
        if let Some(src) = read_source(&path, problems) {
            sources.push(src);
        }
    }
    sources
}

fn parse<T: DeserializeOwned>(src: &Source, problems: &mut Problems) -> Option<T> {
    match toml::from_str::<T>(&src.text) {
        Ok(value) => Some(value),
        Err(e) => {
            let message = e.message().trim().to_string();
            match e.span() {
                Some(span) => problems.at(src, span, message),
                None => problems.file(&src.path, message),
            }
            None
        }
    }
}

fn build_gateway(
    dir: &Path,
    src: &Source,
    raw: RawGateway,
    env: &dyn Env,
    overrides: &Overrides,
    problems: &mut Problems,
) -> GatewayConfig {
    let public = addr(
        src,
        raw.listen.public.as_ref(),
        overrides.listen.as_deref(),
        "127.0.0.1:8443",
        "listen.public",
        problems,
    );
    let admin = addr(
        src,
        raw.listen.admin.as_ref(),
        overrides.admin_listen.as_deref(),
        "127.0.0.1:9090",
        "listen.admin",
        problems,
    );
    let plaintext = raw.listen.plaintext.unwrap_or(false);

    let mut tls = Vec::new();
    for cert in raw.tls.certificates {
        if let Some(c) = build_certificate(dir, src, cert, env, problems) {
            tls.push(c);
        }
    }

    let data_dir = match (&overrides.data, &raw.store.data) {
        (Some(cli), _) => cli.clone(),
        (None, Some(data)) => dir.join(data.get_ref()),
        (None, None) => PathBuf::from("portcullis-data"),
    };
    let url = match (&overrides.store, &raw.store.url) {
        (Some(cli), _) => match check_store_url(cli) {
            Ok(()) => cli.clone(),
            Err(msg) => {
                problems.file(Path::new("--store"), msg);
                String::new()
            }
        },
        (None, Some(url)) => {
            if let Err(msg) = check_store_url(url.get_ref()) {
                problems.at(src, url.span(), format!("store.url: {msg}"));
            }
            url.get_ref().clone()
        }
        (None, None) => format!("sqlite:{}", data_dir.display()),
    };

    let mut trusted_proxies = Vec::new();
    for entry in &raw.proxy.trusted_proxies {
        match parse_net(entry.get_ref()) {
            Some(net) => trusted_proxies.push(net),
            None => problems.at(
                src,
                entry.span(),
                format!(
                    "proxy.trusted_proxies: `{}` is not an IP address or CIDR range",
                    entry.get_ref()
                ),
            ),
        }
    }

    let limits = build_limits(src, &raw.limits, problems);
    GatewayConfig {
        listen: Listen {
            public,
            admin,
            plaintext,
        },
        tls,
        store: StoreConfig { data_dir, url },
        trusted_proxies,
        limits,
    }
}

fn addr(
    src: &Source,
    value: Option<&Spanned<String>>,
    cli: Option<&str>,
    default: &str,
    key: &str,
    problems: &mut Problems,
) -> SocketAddr {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
    if let Some(cli) = cli {
        return cli.parse().unwrap_or_else(|_| {
            problems.file(
                Path::new("command line"),
                format!("`{cli}` is not a socket address (expected IP:PORT) for {key}"),
            );
            fallback
        });
    }
    match value {
        Some(v) => v.get_ref().parse().unwrap_or_else(|_| {
            problems.at(
                src,
                v.span(),
                format!("{key}: `{}` is not a socket address (expected IP:PORT)", v.get_ref()),
            );
            fallback
        }),
        None => default.parse().unwrap_or(fallback),
    }
}

fn check_store_url(url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err("`sqlite:` needs a path".to_string());
        }
        return Ok(());
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        return url
            .parse::<http::Uri>()
            .map(|_| ())
            .map_err(|_| format!("`{}` is not a valid redis URL", redact_userinfo(url)));
    }
    Err(format!(
        "`{}` is not a store URL (expected sqlite:PATH or redis://HOST:PORT)",
        redact_userinfo(url)
    ))
}

/// Hides a password in `scheme://user:pass@host` before the URL goes into an error.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn build_limits(src: &Source, raw: &RawLimits, problems: &mut Problems) -> Limits {
    let d = Limits::default();
    Limits {
        max_header_bytes: size(
            src,
            raw.max_header_bytes.as_ref(),
            "limits.max_header_bytes",
            1024,
            problems,
        )
        .map_or(d.max_header_bytes, |v| v as usize),
        max_headers: size(src, raw.max_headers.as_ref(), "limits.max_headers", 1, problems)
            .map_or(d.max_headers, |v| v as usize),
        max_body_bytes: size(src, raw.max_body_bytes.as_ref(), "limits.max_body_bytes", 0, problems)
            .unwrap_or(d.max_body_bytes),
        header_read_timeout: duration(
            src,
            raw.header_read_timeout.as_ref(),
            "limits.header_read_timeout",
            problems,
        )
        .unwrap_or(d.header_read_timeout),
        idle_timeout: duration(src, raw.idle_timeout.as_ref(), "limits.idle_timeout", problems)
            .unwrap_or(d.idle_timeout),
        upstream_connect_timeout: duration(
            src,
            raw.upstream_connect_timeout.as_ref(),
            "limits.upstream_connect_timeout",
            problems,
        )
        .unwrap_or(d.upstream_connect_timeout),
        upstream_response_timeout: duration(
            src,
            raw.upstream_response_timeout.as_ref(),
            "limits.upstream_response_timeout",
            problems,
        )
        .unwrap_or(d.upstream_response_timeout),
        shutdown_grace: duration(src, raw.shutdown_grace.as_ref(), "limits.shutdown_grace", problems)
            .unwrap_or(d.shutdown_grace),
    }
}

fn size(src: &Source, value: Option<&Spanned<i64>>, key: &str, min: u64, problems: &mut Problems) -> Option<u64> {
    let v = value?;
    match u64::try_from(*v.get_ref()) {
        Ok(n) if n >= min => Some(n),
        _ => {
            problems.at(
                src,
                v.span(),
                format!("{key}: {} is out of range (at least {min})", v.get_ref()),
            );
            None
        }
    }
}

fn duration(src: &Source, value: Option<&Spanned<String>>, key: &str, problems: &mut Problems) -> Option<Duration> {
    let v = value?;
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            problems.at(src, v.span(), format!("{key}: duration must be greater than zero"));
            None
        }
        Err(_) => {
            problems.at(
                src,
                v.span(),
                format!(
                    "{key}: `{}` is not a duration (e.g. \"30s\", \"15m\", \"12h\")",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn build_certificate(
    dir: &Path,
    src: &Source,
    raw: RawCertificate,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<Certificate> {
    let mut hosts = Vec::new();
    for h in raw.hosts.get_ref() {
        match normalise_host(h.get_ref()) {
            Ok(host) => hosts.push(host),
            Err(msg) => problems.at(src, h.span(), format!("tls.certificates.hosts: {msg}")),
        }
    }
    if raw.hosts.get_ref().is_empty() {
        problems.at(src, raw.hosts.span(), "tls.certificates.hosts: list at least one host");
    }
    let cert_pem = resolve(dir, src, &raw.cert, env, false, "tls.certificates.cert", problems)?;
    let key_pem = resolve(dir, src, &raw.key, env, false, "tls.certificates.key", problems)?;
    let chain = match CertificateDer::pem_slice_iter(cert_pem.expose_secret()).collect::<Result<Vec<_>, _>>() {
        Ok(chain) if !chain.is_empty() => chain,
        _ => {
            problems.at(
                src,
                raw.cert.span(),
                "tls.certificates.cert: not a PEM certificate chain",
            );
            return None;
        }
    };
    let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.expose_secret()) else {
        problems.at(src, raw.key.span(), "tls.certificates.key: not a PEM private key");
        return None;
    };
    Some(Certificate {
        hosts,
        chain,
        key: PrivateKey::new(key),
    })
}

/// The certificates of a tier's extra upstream CA bundle.
fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, &'static str> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| "the CA bundle is not valid PEM")?;
    if certs.is_empty() {
        return Err("no certificate in the CA bundle");
    }
    Ok(certs)
}

/// The certificate chain and key of a tier's mutual TLS client certificate.
fn client_auth(cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientAuth, &'static str> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| "the certificate is not valid PEM")?;
    if chain.is_empty() {
        return Err("no certificate in the PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| "the private key is not a valid PEM key")?;
    Ok(ClientAuth {
        chain,
        key: PrivateKey::new(key),
    })
}

/// Resolves a secret reference, enforcing the production rule.
fn resolve(
    dir: &Path,
    src: &Source,
    value: &Spanned<String>,
    env: &dyn Env,
    production: bool,
    key: &str,
    problems: &mut Problems,
) -> Option<SecretBytes> {
    let reference = match SecretRef::parse(value.get_ref()) {
        Ok(r) => r,
        Err(msg) => {
            problems.at(src, value.span(), format!("{key}: {msg}"));
            return None;
        }
    };
    if production && reference.is_inline() {
        problems.at(
            src,
            value.span(),
            format!("{key}: inline secrets are not allowed in a production tier (use env:NAME or file:PATH)"),
        );
        return None;
    }
    match reference.resolve(dir, env) {
        Ok(secret) => {
            src.secrets.borrow_mut().push(secret.fingerprint());
            Some(secret)
        }
        Err(msg) => {
            problems.at(src, value.span(), format!("{key}: {msg}"));
            None
        }
    }
}

fn build_tier(
    dir: &Path,
    src: &Source,
    raw: RawTier,
    env: &dyn Env,
    fingerprints: &mut HashMap<[u8; 32], String>,
    automation_tenants: &mut Vec<PendingTenantRef>,
    problems: &mut Problems,
) -> Option<Tier> {
    let name = raw.name.get_ref().clone();
    let name_ok = tenancy::is_name(&name);
    if !name_ok {
        problems.at(
            src,
            raw.name.span(),
            format!("tier name `{name}` must be 1-32 characters of a-z, 0-9 and '-'"),
        );
    }
    let mut allowlist = Vec::new();
    for entry in &raw.upstream_allowlist {
        match parse_allow_entry(entry.get_ref()) {
            Some(e) => allowlist.push(e),
            None => problems.at(
                src,
                entry.span(),
                format!(
                    "upstream_allowlist: `{}` is not a host, host:port, IP or CIDR range",
                    entry.get_ref()
                ),
            ),
        }
    }

    let mut shared = |secret: &SecretBytes, span: Range<usize>, what: &str, problems: &mut Problems| {
        let fp = secret.fingerprint();
        match fingerprints.get(&fp) {
            Some(other) if other != &name => {
                problems.at(
                    src,
                    span,
                    format!(
                        "{what}: the same secret material is already used by tier `{other}`; every tier needs its own"
                    ),
                );
            }
            _ => {
                fingerprints.insert(fp, name.clone());
            }
        }
    };

    let cookie = resolve(dir, src, &raw.keys.cookie, env, raw.production, "keys.cookie", problems);
    if let Some(c) = &cookie {
        if c.expose_secret().len() < 32 {
            problems.at(
                src,
                raw.keys.cookie.span(),
                "keys.cookie: key material must be at least 32 bytes",
            );
        }
        shared(c, raw.keys.cookie.span(), "keys.cookie", problems);
    }
    let mut optional = |value: &Option<Spanned<String>>, key: &str, problems: &mut Problems| {
        let v = value.as_ref()?;
        let secret = resolve(dir, src, v, env, raw.production, key, problems)?;
        shared(&secret, v.span(), key, problems);
        Some(secret)
    };
    let assertion = optional(&raw.keys.assertion, "keys.assertion", problems);
    if let (Some(key), Some(at)) = (&assertion, &raw.keys.assertion)
        && let Err(e) = crate::assertion::SigningKey::from_pkcs8_pem(key.expose_secret())
    {
        problems.at(
            src,
            at.span(),
            format!("keys.assertion: {e} (expected a PKCS#8 PEM Ed25519 or P-256 private key)"),
        );
    }
    // A CA certificate is public: tiers may share one, so it skips the shared-secret rule.
    let upstream_ca = raw.keys.upstream_ca.as_ref().and_then(|at| {
        let pem = resolve(dir, src, at, env, false, "keys.upstream_ca", problems)?;
        match ca_certificates(pem.expose_secret()) {
            Ok(certs) => Some(certs),
            Err(e) => {
                problems.at(src, at.span(), format!("keys.upstream_ca: {e}"));
                None
            }
        }
    });
    let redis_password = optional(&raw.redis_password, "redis_password", problems);
    let redis_auth = match (&raw.redis_user, redis_password, &raw.redis_password) {
        (Some(user), Some(password), _) if !user.get_ref().trim().is_empty() => {
            Some((user.get_ref().trim().to_string(), password))
        }
        (Some(user), _, _) if user.get_ref().trim().is_empty() => {
            problems.at(src, user.span(), "redis_user: must not be empty");
            None
        }
        (Some(user), None, None) => {
            problems.at(src, user.span(), "redis_user needs redis_password (a secret reference)");
            None
        }
        (None, _, Some(password)) => {
            problems.at(src, password.span(), "redis_password needs redis_user");
            None
        }
        _ => None,
    };
    let assertion_issuer = match &raw.assertion_issuer {
        Some(iss) if iss.get_ref().trim().is_empty() || iss.get_ref().chars().any(char::is_control) => {
            problems.at(src, iss.span(), "assertion_issuer: must be a non-empty URL or name");
            String::new()
        }
        Some(iss) => iss.get_ref().clone(),
        None => format!("urn:portcullis:tier:{name}"),
    };
    let upstream_token = optional(&raw.keys.upstream_token, "keys.upstream_token", problems);
    let client_cert = optional(&raw.keys.upstream_client_cert, "keys.upstream_client_cert", problems);
    let client_key = optional(&raw.keys.upstream_client_key, "keys.upstream_client_key", problems);
    let upstream_client_cert = match (
        client_cert,
        client_key,
        &raw.keys.upstream_client_cert,
        &raw.keys.upstream_client_key,
    ) {
        (Some(cert), Some(key), Some(at), _) => match client_auth(cert.expose_secret(), key.expose_secret()) {
            Ok(auth) => Some(auth),
            Err(e) => {
                problems.at(src, at.span(), format!("keys.upstream_client_cert: {e}"));
                None
            }
        },
        (_, _, Some(at), None) | (_, _, None, Some(at)) => {
            problems.at(
                src,
                at.span(),
                "keys.upstream_client_cert and keys.upstream_client_key go together",
            );
            None
        }
        _ => None,
    };

    let mut operators = Vec::new();
    for op in &raw.operators {
        let hash = op.token_sha256.get_ref();
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(hash, &mut bytes).is_err() {
            problems.at(
                src,
                op.token_sha256.span(),
                "operators.token_sha256: expected 64 hex characters (SHA-256 of the token)",
            );
            continue;
        }
        if op.name.get_ref().trim().is_empty() {
            problems.at(src, op.name.span(), "operators.name: must not be empty");
            continue;
        }
        match fingerprints.get(&bytes) {
            Some(other) if other != &name => problems.at(
                src,
                op.token_sha256.span(),
                format!("operators.token_sha256: this token is already an operator token of tier `{other}`; every tier needs its own"),
            ),
            _ => {
                fingerprints.insert(bytes, name.clone());
            }
        }
        if operators.iter().any(|o: &Operator| o.token_sha256 == bytes) {
            problems.at(
                src,
                op.token_sha256.span(),
                "operators.token_sha256: the same token is listed twice",
            );
        }
        operators.push(Operator {
            name: op.name.get_ref().clone(),
            token_sha256: bytes,
        });
    }
    let mut automation = Vec::new();
    for auto in &raw.automation {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(auto.token_sha256.get_ref(), &mut bytes).is_err() {
            problems.at(
                src,
                auto.token_sha256.span(),
                "automation.token_sha256: expected 64 hex characters (SHA-256 of the token)",
            );
            continue;
        }
        if auto.name.get_ref().trim().is_empty() {
            problems.at(src, auto.name.span(), "automation.name: must not be empty");
            continue;
        }
        if let Some(bad) = auto
            .scopes
            .get_ref()
            .iter()
            .find(|s| !AUTOMATION_SCOPES.contains(&s.as_str()))
        {
            problems.at(
                src,
                auto.scopes.span(),
                format!(
                    "automation.scopes: unknown scope `{bad}` (known: {})",
                    AUTOMATION_SCOPES.join(", ")
                ),
            );
            continue;
        }
        if fingerprints.insert(bytes, name.clone()).is_some()
            || operators.iter().any(|o: &Operator| o.token_sha256 == bytes)
        {
            problems.at(
                src,
                auto.token_sha256.span(),
                "automation.token_sha256: this token is already used by another operator or automation entry",
            );
            continue;
        }
        for t in &auto.tenants {
            automation_tenants.push(PendingTenantRef {
                file: src.path.clone(),
                line: src.line_of(t.span().start),
                tenant: t.get_ref().clone(),
                tier: name.clone(),
            });
        }
        automation.push(AutomationToken {
            name: auto.name.get_ref().clone(),
            token_sha256: bytes,
            scopes: auto.scopes.get_ref().clone(),
            tenants: auto.tenants.iter().map(|t| t.get_ref().clone()).collect(),
        });
    }
    let cookie = cookie?;
    name_ok.then_some(Tier {
        session_cookie: super::session_cookie_name(&name),
        name,
        production: raw.production,
        upstream_allowlist: allowlist,
        assertion_issuer,
        redis_auth,
        keys: Keyring {
            cookie,
            assertion,
            upstream_token,
            upstream_client_cert,
            upstream_ca,
        },
        operators,
        automation,
    })
}

fn parse_allow_entry(text: &str) -> Option<AllowEntry> {
    if text.contains('/') {
        return text.parse::<IpNet>().ok().map(|n| AllowEntry {
            host: AllowHost::Net(n),
            port: None,
        });
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(AllowEntry {
            host: AllowHost::Net(IpNet::from(sa.ip())),
            port: Some(sa.port()),
        });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(AllowEntry {
            host: AllowHost::Net(IpNet::from(ip)),
            port: None,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (text, None),
    };
    let host = normalise_host(host).ok()?;
    Some(AllowEntry {
        host: AllowHost::Name(host),
        port,
    })
}

#[allow(clippy::too_many_arguments)]
fn build_tenant(
    dir: &Path,
    src: &Source,
    raw: RawTenant,
    env: &dyn Env,
    overrides: &Overrides,
    tiers: &BTreeMap<String, Arc<Tier>>,
    default_body: u64,
    hosts_seen: &mut HashMap<String, String>,
    problems: &mut Problems,
) -> Option<Tenant> {
    let before = problems.0.len();
    let id = raw.id.get_ref().clone();
    if !tenancy::is_name(&id) {
        problems.at(
            src,
            raw.id.span(),
            format!("tenant id `{id}` must be 1-32 characters of a-z, 0-9 and '-'"),
        );
    }
    let tier = tiers.get(raw.tier.get_ref());
    if tier.is_none() {
        let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
        problems.at(
            src,
            raw.tier.span(),
            format!("unknown tier `{}` (known: {})", raw.tier.get_ref(), known.join(", ")),
        );
    }

    let mut hosts = Vec::new();
    if raw.hosts.get_ref().is_empty() {
        problems.at(src, raw.hosts.span(), "hosts: list at least one host");
    }
    for h in raw.hosts.get_ref() {
        match normalise_host(h.get_ref()) {
            Ok(host) => match hosts_seen.get(&host) {
                Some(owner) => problems.at(
                    src,
                    h.span(),
                    format!("host `{host}` is already claimed by tenant `{owner}`"),
                ),
                None => {
                    hosts_seen.insert(host.clone(), id.clone());
                    hosts.push(host);
                }
            },
            Err(msg) => problems.at(src, h.span(), format!("hosts: {msg}")),
        }
    }

    let upstream_text = overrides
        .upstream
        .clone()
        .unwrap_or_else(|| raw.upstream.get_ref().clone());
    let upstream = match parse_upstream(&upstream_text) {
        Ok(u) => {
            if let Some(tier) = tier
                && !tier.upstream_allowlist.iter().any(|e| e.allows(&u.host, u.port))
            {
                problems.at(
                    src,
                    raw.upstream.span(),
                    format!(
                        "upstream `{upstream_text}` is outside the allowlist of tier `{}`",
                        tier.name
                    ),
                );
            }
            Some(u)
        }
        Err(msg) => {
            problems.at(src, raw.upstream.span(), format!("upstream: {msg}"));
            None
        }
    };

    let session = SessionPolicy {
        idle_timeout: duration(src, raw.session.idle_timeout.as_ref(), "session.idle_timeout", problems)
            .unwrap_or(Duration::from_secs(30 * 60)),
        absolute_timeout: duration(
            src,
            raw.session.absolute_timeout.as_ref(),
            "session.absolute_timeout",
            problems,
        )
        .unwrap_or(Duration::from_secs(12 * 3600)),
    };
    if session.idle_timeout > session.absolute_timeout {
        problems.file(
            &src.path,
            "session.idle_timeout must not be longer than session.absolute_timeout",
        );
    }

    let sso = raw.sso.and_then(|sso| {
        let production = tier.is_some_and(|t| t.production);
        let issuer = sso.issuer.get_ref().clone();
        match issuer.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") || (!production && uri.scheme_str() == Some("http")) => {}
            _ => problems.at(
                src,
                sso.issuer.span(),
                format!(
                    "sso.issuer: `{issuer}` must be an https URL{}",
                    if production {
                        ""
                    } else {
                        " (http allowed outside production)"
                    }
                ),
            ),
        }
        let mfa = match sso.mfa.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("required") => MfaPolicy::Required,
            Some("gateway") => MfaPolicy::Gateway,
            Some("idp") => MfaPolicy::Idp,
            Some(other) => {
                let span = sso.mfa.as_ref().map_or(0..0, |m| m.span());
                problems.at(
                    src,
                    span,
                    format!("sso.mfa: `{other}` is not one of required, gateway, idp"),
                );
                MfaPolicy::Required
            }
        };
        let secret = resolve(
            dir,
            src,
            &sso.client_secret,
            env,
            production,
            "sso.client_secret",
            problems,
        )?;
        Some(SsoConfig {
            issuer,
            client_id: sso.client_id.get_ref().clone(),
            client_secret: secret,
            scopes: sso
                .scopes
                .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]),
            roles_claim: sso.roles_claim,
            mfa,
            enforce: sso.enforce,
            break_glass: sso.break_glass,
        })
    });

    let max_body_bytes = size(
        src,
        raw.limits.max_body_bytes.as_ref(),
        "limits.max_body_bytes",
        0,
        problems,
    )
    .unwrap_or(default_body);
    let routes = build_routes(src, &raw.routes, problems);
    let upstream_guard = build_guard(src, &raw.limits, problems);

    if problems.0.len() != before {
        return None;
    }
    let auto_trip = build_auto_trip(src, &raw.auto_trip, problems);
    Some(Tenant {
        auto_trip: auto_trip?,
        name: raw.name.unwrap_or_else(|| id.clone()),
        id,
        tier: raw.tier.into_inner(),
        hosts,
        upstream: upstream?,
        session,
        sso,
        routes: routes?,
        max_body_bytes,
        upstream_guard,
    })
}

/// The tenant's upstream circuit breaker and bulkhead (`[limits]`), defaults where unset.
fn build_guard(src: &Source, raw: &RawTenantLimits, problems: &mut Problems) -> GuardSettings {
    let d = GuardSettings::default();
    let count = |v: &Option<Spanned<i64>>, key: &str, min: u64, problems: &mut Problems| {
        size(src, v.as_ref(), key, min, problems).and_then(|n| usize::try_from(n).ok())
    };
    let settings = GuardSettings {
        failure_threshold: count(&raw.breaker_failures, "limits.breaker_failures", 1, problems)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.failure_threshold),
        cool_down: duration(
            src,
            raw.breaker_cool_down.as_ref(),
            "limits.breaker_cool_down",
            problems,
        )
        .unwrap_or(d.cool_down),
        max_in_flight: count(&raw.max_in_flight, "limits.max_in_flight", 1, problems).unwrap_or(d.max_in_flight),
        max_queued: count(&raw.max_queued, "limits.max_queued", 0, problems).unwrap_or(d.max_queued),
        max_queue_wait: duration(src, raw.queue_wait.as_ref(), "limits.queue_wait", problems)
            .unwrap_or(d.max_queue_wait),
    };
    if let Err(errors) = settings.validate() {
        for e in errors {
            let (key, span) = match e {
                GuardSettingsError::CoolDown(_) => {
                    ("breaker_cool_down", raw.breaker_cool_down.as_ref().map(|v| v.span()))
                }
                GuardSettingsError::MaxInFlight { .. } => {
                    ("max_in_flight", raw.max_in_flight.as_ref().map(|v| v.span()))
                }
                GuardSettingsError::FailureThreshold => {
                    ("breaker_failures", raw.breaker_failures.as_ref().map(|v| v.span()))
                }
            };
            problems.at(src, span.unwrap_or(0..0), format!("limits.{key}: {e}"));
        }
    }
    settings
}

fn build_auto_trip(src: &Source, raw: &[RawAutoTrip], problems: &mut Problems) -> Option<Vec<AutoTripRule>> {
    let mut rules: Vec<AutoTripRule> = Vec::new();
    let mut ok = true;
    for r in raw {
        let name = r.name.get_ref().trim().to_string();
        if !tenancy::is_name(&name) {
            problems.at(
                src,
                r.name.span(),
                "auto_trip.name: use lowercase letters, digits and '-'",
            );
            ok = false;
        } else if rules.iter().any(|x| x.name == name) {
            problems.at(src, r.name.span(), format!("auto_trip.name: `{name}` is used twice"));
            ok = false;
        }
        let kind = match r.kind.get_ref().as_str() {
            "account_mfa_failures" => Some(AutoTripKind::AccountMfaFailures),
            "tenant_login_failures" => Some(AutoTripKind::TenantLoginFailures),
            other => {
                problems.at(
                    src,
                    r.kind.span(),
                    format!(
                        "auto_trip.kind: unknown kind `{other}` (known: {})",
                        AutoTripKind::NAMES.join(", ")
                    ),
                );
                None
            }
        };
        let threshold = match u32::try_from(*r.threshold.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                problems.at(
                    src,
                    r.threshold.span(),
                    "auto_trip.threshold: must be a whole number from 1",
                );
                None
            }
        };
        let window = duration(src, Some(&r.window), "auto_trip.window", problems).filter(|d| !d.is_zero());
        let expires = match &r.expires {
            Some(e) => duration(src, Some(e), "auto_trip.expires", problems).map(Some),
            None => Some(None),
        };
        match (kind, threshold, window, expires) {
            (Some(kind), Some(threshold), Some(window), Some(expires)) => rules.push(AutoTripRule {
                name,
                kind,
                threshold,
                window,
                expires,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(rules)
}

fn build_routes(src: &Source, raw: &[RawRoute], problems: &mut Problems) -> Option<RouteTable> {
    let mut rules = Vec::new();
    let before = problems.0.len();
    for r in raw {
        let access = match (&r.access, &r.roles) {
            (Some(a), None) => match a.get_ref().as_str() {
                "public" => Access::Public,
                "authenticated" => Access::Authenticated,
                other => {
                    problems.at(src, a.span(), format!("routes.access: `{other}` is not one of public, authenticated (use roles = [...] for role checks)"));
                    continue;
                }
            },
            (None, Some(roles)) if !roles.get_ref().is_empty() => Access::Roles(roles.get_ref().clone()),
            (None, Some(roles)) => {
                problems.at(src, roles.span(), "routes.roles: list at least one role");
                continue;
            }
            (Some(a), Some(_)) => {
                problems.at(src, a.span(), "routes: set either access or roles, not both");
                continue;
            }
            (None, None) => {
                problems.at(
                    src,
                    r.prefix.span(),
                    "routes: set access = \"public\" | \"authenticated\" or roles = [...]",
                );
                continue;
            }
        };
        let max_body_bytes = size(src, r.max_body_bytes.as_ref(), "routes.max_body_bytes", 0, problems);
        if crate::path::normalise(r.prefix.get_ref())
            .map(|n| n.canonical != *r.prefix.get_ref() || !n.alternates.is_empty())
            .unwrap_or(true)
        {
            problems.at(
                src,
                r.prefix.span(),
                format!(
                    "routes.prefix: `{}` must be a normalised path starting with '/'",
                    r.prefix.get_ref()
                ),
            );
            continue;
        }
        rules.push(RouteRule {
            prefix: r.prefix.get_ref().clone(),
            access,
            max_body_bytes,
        });
    }
    if problems.0.len() != before {
        return None;
    }
    match RouteTable::new(rules) {
        Ok(table) => Some(table),
        Err(e) => {
            // Point at the rule the error names (for a duplicate, its later spelling).
            let span = raw
                .iter()
                .rfind(|r| r.prefix.get_ref() == e.prefix())
                .or(raw.first())
                .map_or(0..0, |r| r.prefix.span());
            problems.at(src, span, format!("routes: {e}"));
            None
        }
    }
}

fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: http::Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("`{text}` needs a scheme (http:// or https://)"))?;
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        other => return Err(format!("scheme `{other}` is not supported (http or https)")),
    };
    let authority = uri.authority().ok_or_else(|| format!("`{text}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the upstream URL are not allowed (use the tier's keys.upstream_token)".to_string());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{text}` must not have a path or query (the request path is forwarded as is)"
        ));
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(default_port);
    let authority: http::uri::Authority = if authority.port().is_some() {
        authority.clone()
    } else {
        format!("{}:{port}", authority.host())
            .parse()
            .map_err(|_| format!("`{text}` has an invalid host"))?
    };
    Ok(Upstream {
        scheme,
        authority,
        host,
        port,
    })
}

pub(super) fn admin_address(dir: &Path) -> Result<SocketAddr, ConfigError> {
    let mut problems = Problems::default();
    let path = dir.join("gateway.toml");
    let first = |p: Problems| {
        p.0.into_iter().next().unwrap_or_else(|| ConfigError {
            file: path.clone(),
            line: None,
            message: "invalid".into(),
        })
    };
    let Some(src) = read_source(&path, &mut problems) else {
        return Err(first(problems));
    };
    let Some(raw) = parse::<RawGateway>(&src, &mut problems) else {
        return Err(first(problems));
    };
    let addr = addr(
        &src,
        raw.listen.admin.as_ref(),
        None,
        "127.0.0.1:9090",
        "listen.admin",
        &mut problems,
    );
    if problems.0.is_empty() {
        Ok(addr)
    } else {
        Err(first(problems))
    }
}

#[cfg(test)]
pub(crate) fn parse_allow_entry_for_tests(text: &str) -> Option<AllowEntry> {
    parse_allow_entry(text)
}
