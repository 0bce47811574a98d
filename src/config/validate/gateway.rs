//! `gateway.toml`: listeners, TLS certificates, the store, trusted proxies and the
//! gateway-wide limits (`[siem]` is built by `super::siem`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::super::raw::{RawAdminTls, RawCertificate, RawGateway, RawLimits, RawListen};
use super::super::{
    AdminEndpoint, AdminTls, Certificate, ConfigError, GatewayConfig, Limits, Listen, Overrides, StoreConfig,
};
use super::{Problems, Source, duration, parse, read_source, resolve, size};
use crate::secret::{Env, PrivateKey};
use crate::tenancy::{ExternalEndpoint, Scheme, normalise_host};

pub(super) fn build_gateway(
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
    let external = build_external_endpoint(src, &raw.listen, plaintext, problems);
    let admin_tls = raw
        .listen
        .admin_tls
        .as_ref()
        .and_then(|t| build_admin_tls(dir, src, t, env, problems));
    check_admin_exposure(src, &raw.listen, admin, overrides, problems);

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
    let siem = super::siem::build_siem(dir, src, &raw.siem, env, problems);
    GatewayConfig {
        listen: Listen {
            public,
            admin,
            plaintext,
            external,
            admin_tls,
        },
        tls,
        store: StoreConfig {
            data_dir,
            url,
            max_staleness: duration(
                src,
                raw.store.max_staleness.as_ref(),
                "store.max_staleness",
                ranges::MAX_STALENESS,
                problems,
            )
            .unwrap_or(ranges::DEFAULT_STALENESS),
        },
        trusted_proxies,
        limits,
        siem,
        tracing: super::traces::build_tracing(src, &raw.tracing, problems),
    }
}

/// `[listen] external_scheme` and `external_port`: what users see when a balancer in
/// front of the public listener changes its scheme or port. A part that is wrong is
/// reported at its line and left to the listener's own; `http` in front of a TLS
/// listener is refused, since it would hand out plain-HTTP redirect URIs for a gateway
/// that only speaks TLS (a downgrade nobody means).
fn build_external_endpoint(
    src: &Source,
    raw: &RawListen,
    plaintext: bool,
    problems: &mut Problems,
) -> ExternalEndpoint {
    let scheme = raw.external_scheme.as_ref().and_then(|s| match s.get_ref().as_str() {
        "https" => Some(Scheme::Https),
        "http" if plaintext => Some(Scheme::Http),
        "http" => {
            problems.at(
                src,
                s.span(),
                "listen.external_scheme: `http` in front of a TLS listener would downgrade every redirect URI to plain HTTP (use `https`, or set listen.plaintext = true)",
            );
            None
        }
        other => {
            problems.at(
                src,
                s.span(),
                format!("listen.external_scheme: `{other}` is not a scheme (expected \"http\" or \"https\")"),
            );
            None
        }
    });
    let port = raw.external_port.as_ref().and_then(|p| {
        let port = u16::try_from(*p.get_ref()).ok().filter(|port| *port != 0);
        if port.is_none() {
            problems.at(
                src,
                p.span(),
                format!("listen.external_port: {} is not a port (1 to 65535)", p.get_ref()),
            );
        }
        port
    });
    ExternalEndpoint { scheme, port }
}

/// Every host the `[[tls.certificates]]` list, as written (normalised), whether or not
/// their certificate loads: a host whose certificate failed is not reported again as
/// uncovered.
pub(super) fn certificate_hosts(raw: &RawGateway) -> Vec<String> {
    raw.tls
        .certificates
        .iter()
        .flat_map(|c| c.hosts.get_ref())
        .filter_map(|h| normalise_host(h.get_ref()).ok())
        .collect()
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
            // Named like `--store` and `--upstream`: the flag that set it.
            let flag = if key == "listen.admin" {
                "--admin-listen"
            } else {
                "--listen"
            };
            problems.file(
                Path::new(flag),
                format!("`{cli}` is not a socket address (expected IP:PORT)"),
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
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+")
        || url.starts_with("rediss+")
    {
        return crate::store::redis_connection::RedisTarget::parse(url)
            .map(|_| ())
            .map_err(|e| {
                let why = match e {
                    crate::store::StoreError::Invalid(why) => why.trim_start_matches("redis URL: ").to_string(),
                    other => other.to_string(),
                };
                format!("`{}` is not a valid redis URL ({why})", redact_userinfo(url))
            });
    }
    Err(format!(
        "`{}` is not a store URL (expected sqlite:PATH, redis://, rediss://, redis+sentinel:// or redis+cluster://)",
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

/// How long each gateway-wide timeout may be: long enough to serve, short enough that a
/// slow or silent peer cannot hold a connection (or a shutdown) for hours.
mod ranges {
    use super::super::{DurationRange, hours, mins, secs};
    use std::time::Duration;

    /// Receiving a request head or finishing a TLS handshake (slowloris defence).
    pub const HEADER_READ: DurationRange = DurationRange::new(secs(1), mins(5));
    /// A connection without traffic.
    pub const IDLE: DurationRange = DurationRange::new(secs(1), hours(1));
    /// Connecting to an upstream.
    pub const UPSTREAM_CONNECT: DurationRange = DurationRange::new(Duration::from_millis(100), mins(5));
    /// An upstream starting its response.
    pub const UPSTREAM_RESPONSE: DurationRange = DurationRange::new(secs(1), hours(1));
    /// In-flight requests finishing on SIGTERM.
    pub const SHUTDOWN_GRACE: DurationRange = DurationRange::new(secs(1), hours(1));
    /// A cached session trusted without the store: a revocation nobody pushed goes unseen
    /// this long, so it stays short.
    pub const MAX_STALENESS: DurationRange = DurationRange::new(Duration::from_millis(10), secs(10));
    /// SPEC "Distributed mode": a cached session is trusted at most 1 s by default.
    pub const DEFAULT_STALENESS: Duration = secs(1);
    /// Open admin connections: each costs a task and a socket, and operators need a
    /// handful, so a cap beyond this would not protect anything.
    pub const ADMIN_CONNECTIONS_MAX: usize = 65_536;
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
            ranges::HEADER_READ,
            problems,
        )
        .unwrap_or(d.header_read_timeout),
        idle_timeout: duration(
            src,
            raw.idle_timeout.as_ref(),
            "limits.idle_timeout",
            ranges::IDLE,
            problems,
        )
        .unwrap_or(d.idle_timeout),
        upstream_connect_timeout: duration(
            src,
            raw.upstream_connect_timeout.as_ref(),
            "limits.upstream_connect_timeout",
            ranges::UPSTREAM_CONNECT,
            problems,
        )
        .unwrap_or(d.upstream_connect_timeout),
        upstream_response_timeout: duration(
            src,
            raw.upstream_response_timeout.as_ref(),
            "limits.upstream_response_timeout",
            ranges::UPSTREAM_RESPONSE,
            problems,
        )
        .unwrap_or(d.upstream_response_timeout),
        shutdown_grace: duration(
            src,
            raw.shutdown_grace.as_ref(),
            "limits.shutdown_grace",
            ranges::SHUTDOWN_GRACE,
            problems,
        )
        .unwrap_or(d.shutdown_grace),
        admin_max_connections: admin_max_connections(src, raw, problems).unwrap_or(d.admin_max_connections),
    }
}

/// `limits.admin_max_connections`: at least one (the operators' own), at most
/// [`ranges::ADMIN_CONNECTIONS_MAX`].
fn admin_max_connections(src: &Source, raw: &RawLimits, problems: &mut Problems) -> Option<usize> {
    let key = "limits.admin_max_connections";
    let n = size(src, raw.admin_max_connections.as_ref(), key, 1, problems)?;
    match usize::try_from(n) {
        Ok(n) if n <= ranges::ADMIN_CONNECTIONS_MAX => Some(n),
        _ => {
            if let Some(v) = &raw.admin_max_connections {
                problems.at(
                    src,
                    v.span(),
                    format!("{key}: {n} is out of range (at most {})", ranges::ADMIN_CONNECTIONS_MAX),
                );
            }
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
    let (chain, key) = chain_and_key(dir, src, &raw.cert, &raw.key, env, "tls.certificates", problems)?;
    Some(Certificate {
        hosts,
        chain,
        key: PrivateKey::new(key),
    })
}

/// A certificate chain and its private key from their secret references (`table` names
/// the keys in errors: `tls.certificates`, `listen.admin_tls`).
fn chain_and_key(
    dir: &Path,
    src: &Source,
    cert: &Spanned<String>,
    key: &Spanned<String>,
    env: &dyn Env,
    table: &str,
    problems: &mut Problems,
) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    // The key is looked at once the certificate is usable: one problem per pair.
    let chain = certificate_chain(dir, src, cert, env, table, problems)?;
    let key_pem = resolve(dir, src, key, env, false, &format!("{table}.key"), problems)?;
    let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.expose_secret()) else {
        problems.at(src, key.span(), format!("{table}.key: not a PEM private key"));
        return None;
    };
    Some((chain, key))
}

/// A certificate chain (leaf first) from its reference; never empty.
fn certificate_chain(
    dir: &Path,
    src: &Source,
    cert: &Spanned<String>,
    env: &dyn Env,
    table: &str,
    problems: &mut Problems,
) -> Option<Vec<CertificateDer<'static>>> {
    let cert_pem = resolve(dir, src, cert, env, false, &format!("{table}.cert"), problems)?;
    match CertificateDer::pem_slice_iter(cert_pem.expose_secret()).collect::<Result<Vec<_>, _>>() {
        Ok(chain) if !chain.is_empty() => Some(chain),
        _ => {
            problems.at(src, cert.span(), format!("{table}.cert: not a PEM certificate chain"));
            None
        }
    }
}

/// `[listen.admin_tls]`: the admin listener's certificate and key.
fn build_admin_tls(
    dir: &Path,
    src: &Source,
    raw: &RawAdminTls,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<std::sync::Arc<AdminTls>> {
    let (chain, key) = chain_and_key(dir, src, &raw.cert, &raw.key, env, "listen.admin_tls", problems)?;
    Some(std::sync::Arc::new(AdminTls {
        chain,
        key: PrivateKey::new(key),
    }))
}

/// The admin listener carries the operator API and console: off loopback it must speak
/// TLS, unless the operator says in so many words that something else protects it
/// (`admin_plaintext = true`: a private network, a TLS-terminating sidecar). Both at once
/// contradict each other.
fn check_admin_exposure(
    src: &Source,
    listen: &RawListen,
    admin: SocketAddr,
    overrides: &Overrides,
    problems: &mut Problems,
) {
    let admin_plaintext = listen.admin_plaintext.as_ref();
    if let (Some(flag), Some(_)) = (admin_plaintext, &listen.admin_tls)
        && *flag.get_ref()
    {
        problems.at(
            src,
            flag.span(),
            "listen.admin_plaintext: cannot be true with [listen.admin_tls] (the admin listener speaks HTTPS only)",
        );
        return;
    }
    if admin.ip().is_loopback() || listen.admin_tls.is_some() || admin_plaintext.is_some_and(|f| *f.get_ref()) {
        return;
    }
    let message = format!(
        "the admin listener `{admin}` is not on a loopback address and has no TLS: add [listen.admin_tls] (cert, key), or set [listen] admin_plaintext = true if the network in front of it is trusted"
    );
    match (&overrides.admin_listen, &listen.admin) {
        (Some(_), _) => problems.file(Path::new("--admin-listen"), message),
        (None, Some(written)) => problems.at(src, written.span(), format!("listen.admin: {message}")),
        (None, None) => problems.file(&src.path, message),
    }
}

pub(in crate::config) fn admin_endpoint(dir: &Path, env: &dyn Env) -> Result<AdminEndpoint, ConfigError> {
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
    // The certificate only: the client trusts it and has no use for the key.
    let tls_certificate = raw.listen.admin_tls.as_ref().and_then(|t| {
        certificate_chain(dir, &src, &t.cert, env, "listen.admin_tls", &mut problems)
            .and_then(|chain| chain.into_iter().next())
    });
    if problems.0.is_empty() {
        Ok(AdminEndpoint { addr, tls_certificate })
    } else {
        Err(first(problems))
    }
}
