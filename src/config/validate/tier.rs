//! `tiers/*.toml`: a tier's keys and credentials (resolved once; TLS files parsed into
//! typed values), operators, automation tokens and the upstream allowlist.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::super::raw::RawTier;
use super::super::{AUTOMATION_SCOPES, AllowEntry, AllowHost, AutomationToken, ClientAuth, Keyring, Operator, Tier};
use super::{Broken, PendingTenantRef, Problems, Source, resolve};
use crate::secret::{Env, PrivateKey, SecretBytes};
use crate::tenancy::{self, normalise_host};

#[allow(clippy::too_many_arguments)]
pub(super) fn build_tier(
    dir: &Path,
    src: &Source,
    raw: RawTier,
    env: &dyn Env,
    fingerprints: &mut HashMap<[u8; 32], String>,
    automation_tenants: &mut Vec<PendingTenantRef>,
    broken: &mut Broken,
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
            None => {
                problems.at(
                    src,
                    entry.span(),
                    format!(
                        "upstream_allowlist: `{}` is not a host, host:port, IP or CIDR range",
                        entry.get_ref()
                    ),
                );
                broken.allowlists.insert(name.clone(), src.path.clone());
            }
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
        session_cookie: crate::config::session_cookie_name(&name),
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

pub(super) fn parse_allow_entry(text: &str) -> Option<AllowEntry> {
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
