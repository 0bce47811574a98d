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
//! - [`siem`] builds `gateway.toml`'s `[siem]` sinks.
//! - [`tier`] builds `tiers/*.toml`.
//! - [`tenant`] builds `tenants/*.toml`.
//! - [`traces`] checks `[tracing]` of `gateway.toml`.
//! - [`outline`] reads what it can of a file that does not parse, so its other problems
//!   are still found and nothing that refers to it is reported as a second problem.

mod gateway;
mod outline;
mod siem;
mod tenant;
mod tier;
mod traces;

pub(super) use gateway::admin_endpoint;

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// A host claimed by a tenant file, and where.
struct HostClaim {
    tenant: String,
    file: PathBuf,
    line: usize,
}

/// A tenant file with errors: what it is known as, so nothing that refers to it is
/// reported as a problem of its own.
struct BrokenTenant {
    /// Its `id`, or the file's name without `.toml` when the id is unreadable.
    id: String,
    /// What its `tier` says.
    tier: BrokenTenantTier,
    /// Its file.
    file: PathBuf,
}

/// What failed to load. A problem that only follows from one of these is not reported
/// (a tenant of a tier whose file is broken does not name an "unknown tier"; a broken
/// tenant file's tenant is still its tier's), or is marked as possibly following from it.
#[derive(Default)]
struct Broken {
    /// Tiers whose file has errors, by name (or file name when the name is unreadable).
    tiers: BTreeMap<String, PathBuf>,
    /// Tiers whose `upstream_allowlist` lost an entry to an error.
    allowlists: BTreeMap<String, PathBuf>,
    /// Tenant files with errors.
    tenants: Vec<BrokenTenant>,
    /// Hosts of TLS certificates that failed to load.
    cert_hosts: HashSet<String>,
}

/// The tier of a tenant file with errors, as far as it can be read.
enum BrokenTenantTier {
    /// A tier of the policy (loaded or with errors of its own).
    Of(String),
    /// A tier the policy does not have (reported in the tenant file).
    NotATier,
    /// Not readable (the file is not TOML, or `tier` is not a string).
    Unreadable,
}

impl BrokenTenantTier {
    fn new(tier: Option<String>, known: &tenant::Known<'_>) -> Self {
        match tier {
            Some(t) if known.is_tier(&t) => BrokenTenantTier::Of(t),
            Some(_) => BrokenTenantTier::NotATier,
            None => BrokenTenantTier::Unreadable,
        }
    }
}

/// How a reference to a tenant relates to the tenant files with errors.
enum TenantRef<'a> {
    /// No broken file is that tenant of that tier: the reference is wrong on its own.
    Unrelated,
    /// A broken file defines that tenant in that tier (or in a tier it does not let
    /// read): the reference is right as far as can be known.
    Broken,
    /// A broken file defines that tenant in a tier the policy does not have: the
    /// reference may be wrong only because of that mistake.
    Unsure(&'a Path),
}

impl Broken {
    /// Whether `tenant` of `tier` may be a tenant whose file has errors.
    fn tenant_ref(&self, tenant: &str, tier: &str) -> TenantRef<'_> {
        let mut found = TenantRef::Unrelated;
        for t in self.tenants.iter().filter(|t| t.id == tenant) {
            match &t.tier {
                BrokenTenantTier::Of(own) if own == tier => return TenantRef::Broken,
                BrokenTenantTier::Unreadable => return TenantRef::Broken,
                BrokenTenantTier::Of(_) => {}
                BrokenTenantTier::NotATier => found = TenantRef::Unsure(&t.file),
            }
        }
        found
    }
}

/// A file's name without `.toml`: what it names by convention when its contents do not say.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
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

    let mut gateway_raw_hosts = None;
    let gateway = gateway_src.as_ref().and_then(|src| {
        parse::<RawGateway>(src, &mut problems).map(|raw| {
            gateway_raw_hosts = Some(gateway::certificate_hosts(&raw));
            gateway::build_gateway(dir, src, raw, env, overrides, &mut problems)
        })
    });

    let mut broken = Broken::default();
    if let (Some(g), Some(raw)) = (&gateway, &gateway_raw_hosts) {
        // Hosts of certificates that did not load: not reported again as uncovered.
        broken.cert_hosts = raw
            .iter()
            .filter(|h| !g.tls.iter().any(|c| c.hosts.contains(h)))
            .cloned()
            .collect();
    }
    let mut tiers: BTreeMap<String, Arc<Tier>> = BTreeMap::new();
    let mut tier_files: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    let mut fingerprints: HashMap<[u8; 32], String> = HashMap::new();
    let mut automation_tenants = Vec::new();
    for src in &tier_srcs {
        let Some(raw) = parse::<RawTier>(src, &mut problems) else {
            let name = outline::tier_name(&src.text).unwrap_or_else(|| stem(&src.path));
            broken.tiers.insert(name, src.path.clone());
            continue;
        };
        let name_span = raw.name.span();
        let name = raw.name.get_ref().clone();
        let built = tier::build_tier(
            dir,
            src,
            raw,
            env,
            &mut fingerprints,
            &mut automation_tenants,
            &mut broken,
            &mut problems,
        );
        match built {
            Some(tier) if tiers.contains_key(&tier.name) => {
                problems.at(src, name_span, format!("tier `{}` is defined twice", tier.name));
            }
            Some(tier) => {
                tier_files.insert(tier.name.clone(), src.effective_digest(dir));
                tiers.insert(tier.name.clone(), Arc::new(tier));
            }
            None => {
                broken.tiers.insert(name, src.path.clone());
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
    let mut hosts_seen: HashMap<String, HostClaim> = HashMap::new();
    let mut ids_seen: HashMap<String, PathBuf> = HashMap::new();
    let mut tenant_files: BTreeMap<String, (String, [u8; 32])> = BTreeMap::new();
    let context = tenant::Known {
        tiers: &tiers,
        broken_tiers: &broken.tiers,
        broken_allowlists: &broken.allowlists,
    };
    if let Some(upstream) = &overrides.upstream
        && let Err(msg) = tenant::parse_upstream(upstream)
    {
        problems.file(Path::new("--upstream"), msg);
    }
    let mut broken_tenants = Vec::new();
    for src in &tenant_srcs {
        let mut claim_id = |id: &Spanned<String>, problems: &mut Problems| match ids_seen.get(id.get_ref()) {
            Some(first) if *first != src.path => problems.at(
                src,
                id.span(),
                format!("tenant id `{}` is already used by {}", id.get_ref(), first.display()),
            ),
            _ => {
                ids_seen.insert(id.get_ref().clone(), src.path.clone());
            }
        };
        let Some(raw) = parse::<RawTenant>(src, &mut problems) else {
            // Check what is readable: its hosts against the others, its tier.
            let outline = outline::tenant(&src.text);
            tenant::check_outline(src, &outline, &context, overrides, &mut hosts_seen, &mut problems);
            if let Some(id) = &outline.id {
                claim_id(id, &mut problems);
            }
            broken_tenants.push(BrokenTenant {
                id: outline.id.map_or_else(|| stem(&src.path), Spanned::into_inner),
                tier: BrokenTenantTier::new(outline.tier.map(Spanned::into_inner), &context),
                file: src.path.clone(),
            });
            continue;
        };
        claim_id(&raw.id, &mut problems);
        let (id, tier_name) = (raw.id.get_ref().clone(), raw.tier.get_ref().clone());
        let built = tenant::build_tenant(
            dir,
            src,
            raw,
            env,
            overrides,
            &context,
            default_body,
            &mut hosts_seen,
            &mut problems,
        );
        match built {
            Some(tenant) if ids_seen.get(&tenant.id) == Some(&src.path) => {
                tenant_files.insert(tenant.id.clone(), (tenant.tier.clone(), src.effective_digest(dir)));
                tenants.push(Arc::new(tenant));
            }
            Some(_) => {}
            None => broken_tenants.push(BrokenTenant {
                id,
                tier: BrokenTenantTier::new(Some(tier_name), &context),
                file: src.path.clone(),
            }),
        }
    }
    broken.tenants = broken_tenants;

    for r in automation_tenants {
        if tenants.iter().any(|t| t.id == r.tenant && t.tier == r.tier) {
            continue;
        }
        let follows = match broken.tenant_ref(&r.tenant, &r.tier) {
            TenantRef::Broken => continue,
            TenantRef::Unsure(file) => format!(" (may follow from the error in {})", file.display()),
            TenantRef::Unrelated => String::new(),
        };
        problems.0.push(ConfigError {
            file: r.file,
            line: Some(r.line),
            message: format!(
                "automation.tenants: `{}` is not a tenant of tier `{}`{follows}",
                r.tenant, r.tier
            ),
        });
    }

    if let Some(g) = &gateway
        && !g.listen.plaintext
    {
        let mut uncovered: Vec<(&String, &HostClaim)> = hosts_seen
            .iter()
            .filter(|(host, _)| {
                !broken.cert_hosts.contains(*host) && !g.tls.iter().any(|c| c.hosts.iter().any(|h| h == *host))
            })
            .collect();
        uncovered.sort_by(|a, b| (&a.1.file, a.1.line, a.0).cmp(&(&b.1.file, b.1.line, b.0)));
        for (host, claim) in uncovered {
            problems.0.push(ConfigError {
                file: claim.file.clone(),
                line: Some(claim.line),
                message: format!(
                    "no TLS certificate for host `{host}` of tenant `{}` (add it to a [[tls.certificates]] in gateway.toml or set listen.plaintext = true)",
                    claim.tenant
                ),
            });
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

/// The range a duration setting may take. Each setting names its own (next to where it
/// is read), so an operator learns the bounds from the error that refuses a value.
#[derive(Debug, Clone, Copy)]
pub(super) struct DurationRange {
    pub(super) min: Duration,
    pub(super) max: Duration,
}

impl DurationRange {
    pub(super) const fn new(min: Duration, max: Duration) -> Self {
        DurationRange { min, max }
    }
}

/// Seconds, minutes, hours and days as [`Duration`]s, for the ranges of the settings.
pub(super) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
pub(super) const fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}
pub(super) const fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}
pub(super) const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// The units of the one duration syntax, with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// How an error states the duration syntax.
const DURATION_SYNTAX: &str =
    "write a whole number and one unit: ms, s, m, h or d (e.g. \"30s\", \"15m\", \"12h\", \"7d\")";

/// The one duration syntax of the policy files: a whole number directly followed by one
/// unit, `ms`, `s`, `m`, `h` or `d` (`250ms`, `30s`, `15m`, `12h`, `7d`). Nothing else
/// (`12 hours`, `1h30m`, `1000y`): one spelling per length keeps reviews of policy
/// changes easy to read.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let (_, unit_ms) = DURATION_UNITS.iter().find(|(u, _)| *u == unit)?;
    n.checked_mul(*unit_ms).map(Duration::from_millis)
}

/// A duration in the policy syntax, in the largest unit that states it exactly.
pub(super) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    DURATION_UNITS
        .iter()
        .find(|(_, unit_ms)| ms != 0 && ms.is_multiple_of(u128::from(*unit_ms)))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, unit_ms)| format!("{}{unit}", ms / u128::from(*unit_ms)),
        )
}

/// A duration setting: the policy syntax ([`parse_duration`]) within `range`; `None`
/// (and the problem at the value's line) otherwise.
fn duration(
    src: &Source,
    value: Option<&Spanned<String>>,
    key: &str,
    range: DurationRange,
    problems: &mut Problems,
) -> Option<Duration> {
    let v = value?;
    let text = v.get_ref();
    match parse_duration(text) {
        Some(d) if (range.min..=range.max).contains(&d) => Some(d),
        Some(_) => {
            problems.at(
                src,
                v.span(),
                format!(
                    "{key}: `{text}` is out of range; it must be at least {} and at most {}",
                    show_duration(range.min),
                    show_duration(range.max)
                ),
            );
            None
        }
        None => {
            problems.at(
                src,
                v.span(),
                format!("{key}: `{text}` is not a duration; {DURATION_SYNTAX}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, a duration in another spelling (or an absurd length written as a
    /// number too big to hold) would be read as some other length than the operator meant.
    #[test]
    fn the_duration_syntax_is_a_whole_number_and_one_unit() {
        let ms = |text| parse_duration(text).map(|d| d.as_millis());
        assert_eq!(ms("250ms"), Some(250));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms("15m"), Some(900_000));
        assert_eq!(ms("12h"), Some(43_200_000));
        assert_eq!(ms("7d"), Some(604_800_000));
        for bad in [
            "12 hours",
            "1h30m",
            "1000y",
            "1.5h",
            "-1s",
            " 1s",
            "1s ",
            "1S",
            "s",
            "",
            "30",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration("18446744073709551615d"), None, "overflow");
    }

    #[test]
    fn durations_are_shown_in_the_largest_exact_unit() {
        let shown: Vec<String> = [
            days(30),
            hours(36),
            mins(90),
            secs(1),
            Duration::from_millis(1500),
            Duration::ZERO,
        ]
        .into_iter()
        .map(show_duration)
        .collect();
        assert_eq!(shown, ["30d", "36h", "90m", "1s", "1500ms", "0ms"]);
    }
}
