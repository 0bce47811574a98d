//! Turns the raw policy files into a typed [`Config`], collecting every problem.
//!
//! Owns all cross-file rules: unknown tiers, hosts claimed twice, upstreams outside the
//! tier's allowlist, key material shared between tiers, inline secrets in production.
//! Parses certificate and key files (PEM) once, into the typed values TLS is built from.
//!
//! # Layout
//! - this file: reading the files, the set-wide checks in [`load`], and the helpers every
//!   file kind uses (sizes, durations, secret references).
//! - [`gateway`] builds `gateway.toml`.
//! - [`tier`] builds `tiers/*.toml`.
//! - [`tenant`] builds `tenants/*.toml`.

mod gateway;
mod tenant;
mod tier;

pub(super) use gateway::admin_address;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::raw::{RawGateway, RawTenant, RawTier};
use super::{Config, ConfigError, EffectiveDigests, Limits, Overrides, Tier};
use crate::secret::{Env, SecretBytes, SecretRef};

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
        parse::<RawGateway>(src, &mut problems)
            .map(|raw| gateway::build_gateway(dir, src, raw, env, overrides, &mut problems))
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
        if let Some(tier) = tier::build_tier(
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
        let Some(tenant) = tenant::build_tenant(
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

#[cfg(test)]
pub(crate) fn parse_allow_entry_for_tests(text: &str) -> Option<super::AllowEntry> {
    tier::parse_allow_entry(text)
}
