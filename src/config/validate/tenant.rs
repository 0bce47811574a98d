//! `tenants/*.toml`: a tenant's hosts, upstream, SSO, session policy, routes, the
//! upstream circuit breaker's settings and auto-trip rules.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::super::raw::{RawAutoTrip, RawRoute, RawSession, RawTenant, RawTenantLimits};
use super::super::{
    AutoTripKind, AutoTripRule, GuardSettings, GuardSettingsError, MfaPolicy, Overrides, SessionPolicy, SsoConfig,
    Tenant, Tier, Upstream,
};
use super::outline::TenantOutline;
use super::{DurationRange, HostClaim, Problems, Source, days, duration, hours, mins, resolve, secs, size};
use crate::policy::{Access, RouteRule, RouteTable};
use crate::secret::Env;
use crate::tenancy::{self, normalise_host};

/// How long each duration setting of a tenant may be.
mod ranges {
    use super::*;

    /// A session without requests. At least a second (tests of expiry use seconds); at
    /// most 30 days, as long as a session may live at all.
    pub const SESSION_IDLE: DurationRange = DurationRange::new(secs(1), days(30));
    /// A session, from sign-in (NIST 800-63B: reauthenticate at least every 30 days).
    pub const SESSION_ABSOLUTE: DurationRange = DurationRange::new(secs(1), days(30));
    /// A request waiting for a slot of the upstream's bulkhead.
    pub const QUEUE_WAIT: DurationRange = DurationRange::new(std::time::Duration::from_millis(1), mins(1));
    /// An open upstream breaker before its probe.
    pub const COOL_DOWN: DurationRange = DurationRange::new(secs(1), hours(1));
    /// The window an auto-trip rule counts failures in.
    pub const AUTO_TRIP_WINDOW: DurationRange = DurationRange::new(secs(1), hours(24));
    /// An auto-trip's automatic reset.
    pub const AUTO_TRIP_EXPIRES: DurationRange = DurationRange::new(mins(1), days(30));
}

/// What tenants are checked against: the tiers that loaded, and what failed to.
pub(super) struct Known<'a> {
    /// Tiers that loaded.
    pub tiers: &'a BTreeMap<String, Arc<Tier>>,
    /// Tiers whose file has errors: a tenant naming one is not "of an unknown tier".
    pub broken_tiers: &'a BTreeMap<String, std::path::PathBuf>,
    /// Tiers whose allowlist lost an entry: an upstream outside it may follow from that.
    pub broken_allowlists: &'a BTreeMap<String, std::path::PathBuf>,
}

impl Known<'_> {
    /// Whether `name` is a tier of the policy, loaded or with errors in its file.
    pub(super) fn is_tier(&self, name: &str) -> bool {
        self.tiers.contains_key(name) || self.broken_tiers.contains_key(name)
    }

    /// The tier named `name`; reports an unknown one unless its file is broken.
    fn tier(&self, src: &Source, name: &Spanned<String>, problems: &mut Problems) -> Option<&Arc<Tier>> {
        let tier = self.tiers.get(name.get_ref());
        if tier.is_none() && !self.broken_tiers.contains_key(name.get_ref()) {
            let known: Vec<&str> = self.tiers.keys().map(String::as_str).collect();
            problems.at(
                src,
                name.span(),
                format!("unknown tier `{}` (known: {})", name.get_ref(), known.join(", ")),
            );
        }
        tier
    }
}

/// Claims `hosts` for tenant `id`: each one normalised, and not claimed by another.
fn claim_hosts(
    src: &Source,
    id: &str,
    hosts: &[Spanned<String>],
    hosts_seen: &mut HashMap<String, HostClaim>,
    problems: &mut Problems,
) -> Vec<String> {
    let mut claimed = Vec::new();
    for h in hosts {
        match normalise_host(h.get_ref()) {
            Ok(host) => match hosts_seen.get(&host) {
                Some(owner) => problems.at(
                    src,
                    h.span(),
                    format!("host `{host}` is already claimed by tenant `{}`", owner.tenant),
                ),
                None => {
                    let claim = HostClaim {
                        tenant: id.to_string(),
                        file: src.path.clone(),
                        line: src.line_of(h.span().start),
                    };
                    hosts_seen.insert(host.clone(), claim);
                    claimed.push(host);
                }
            },
            Err(msg) => problems.at(src, h.span(), format!("hosts: {msg}")),
        }
    }
    claimed
}

/// Checks what is readable of a tenant file that does not parse: its id, its tier, its
/// upstream against the tier's allowlist, and its hosts against every other tenant's.
pub(super) fn check_outline(
    src: &Source,
    outline: &TenantOutline,
    known: &Known<'_>,
    overrides: &Overrides,
    hosts_seen: &mut HashMap<String, HostClaim>,
    problems: &mut Problems,
) {
    if let Some(id) = &outline.id {
        check_id(src, id, problems);
    }
    let tier = outline.tier.as_ref().and_then(|t| known.tier(src, t, problems));
    if let Some(upstream) = &outline.upstream {
        check_upstream(src, upstream, tier, known, overrides, problems);
    }
    for (key, value) in &outline.durations {
        // Each on its own: compared with another only in a file that parses.
        let range = match *key {
            "session.idle_timeout" => ranges::SESSION_IDLE,
            "session.absolute_timeout" => ranges::SESSION_ABSOLUTE,
            "limits.queue_wait" => ranges::QUEUE_WAIT,
            "limits.breaker_cool_down" => ranges::COOL_DOWN,
            _ => continue,
        };
        duration(src, Some(value), key, range, problems);
    }
    let id = outline
        .id
        .as_ref()
        .map_or_else(|| super::stem(&src.path), |i| i.get_ref().clone());
    claim_hosts(src, &id, &outline.hosts, hosts_seen, problems);
}

fn check_id(src: &Source, id: &Spanned<String>, problems: &mut Problems) {
    if !tenancy::is_name(id.get_ref()) {
        problems.at(
            src,
            id.span(),
            format!(
                "tenant id `{}` must be 1-32 characters of a-z, 0-9 and '-'",
                id.get_ref()
            ),
        );
    }
}

/// The tenant's upstream (or `--upstream`), parsed and checked against its tier's
/// allowlist when the tier is known.
fn check_upstream(
    src: &Source,
    raw: &Spanned<String>,
    tier: Option<&Arc<Tier>>,
    known: &Known<'_>,
    overrides: &Overrides,
    problems: &mut Problems,
) -> Option<Upstream> {
    let text = overrides.upstream.as_ref().unwrap_or(raw.get_ref());
    match parse_upstream(text) {
        Ok(u) => {
            if let Some(tier) = tier
                && !tier.upstream_allowlist.iter().any(|e| e.allows(&u.host, u.port))
            {
                let follows = match (&overrides.upstream, known.broken_allowlists.get(&tier.name)) {
                    (Some(_), _) => " (set by --upstream)".to_string(),
                    (None, Some(file)) => {
                        format!(" (may follow from the error in the allowlist in {})", file.display())
                    }
                    (None, None) => String::new(),
                };
                problems.at(
                    src,
                    raw.span(),
                    format!(
                        "upstream `{text}` is outside the allowlist of tier `{}`{follows}",
                        tier.name
                    ),
                );
            }
            Some(u)
        }
        Err(msg) => {
            // A wrong `--upstream` is one problem of the command line, reported by `load`.
            if overrides.upstream.is_none() {
                problems.at(src, raw.span(), format!("upstream: {msg}"));
            }
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_tenant(
    dir: &Path,
    src: &Source,
    raw: RawTenant,
    env: &dyn Env,
    overrides: &Overrides,
    known: &Known<'_>,
    default_body: u64,
    hosts_seen: &mut HashMap<String, HostClaim>,
    problems: &mut Problems,
) -> Option<Tenant> {
    let before = problems.0.len();
    let id = raw.id.get_ref().clone();
    check_id(src, &raw.id, problems);
    let tier = known.tier(src, &raw.tier, problems);

    if raw.hosts.get_ref().is_empty() {
        problems.at(src, raw.hosts.span(), "hosts: list at least one host");
    }
    let hosts = claim_hosts(src, &id, raw.hosts.get_ref(), hosts_seen, problems);

    let upstream = check_upstream(src, &raw.upstream, tier, known, overrides, problems);

    let session = build_session(src, &raw.session, problems);

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
        // Local account names, so the rule of `user add` and the login form.
        for name in &sso.break_glass {
            if let Err(e) = crate::account::check_local_name(name.get_ref()) {
                problems.at(src, name.span(), format!("sso.break_glass: {e}"));
            }
        }
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
            break_glass: sso.break_glass.into_iter().map(Spanned::into_inner).collect(),
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
    let auto_trip = build_auto_trip(src, &raw.auto_trip, problems);

    // A tenant of a tier that did not load is not built (and not reported: its tier's
    // file has the error).
    if problems.0.len() != before || tier.is_none() {
        return None;
    }
    let session = session?;
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

/// The session timeouts (`[session]`), defaults where unset; `None` when one is wrong.
fn build_session(src: &Source, raw: &RawSession, problems: &mut Problems) -> Option<SessionPolicy> {
    let read = |value: &Option<Spanned<String>>, key, range, default, problems: &mut Problems| match value {
        Some(_) => duration(src, value.as_ref(), key, range, problems),
        None => Some(default),
    };
    let idle = read(
        &raw.idle_timeout,
        "session.idle_timeout",
        ranges::SESSION_IDLE,
        Duration::from_secs(30 * 60),
        problems,
    );
    let absolute = read(
        &raw.absolute_timeout,
        "session.absolute_timeout",
        ranges::SESSION_ABSOLUTE,
        Duration::from_secs(12 * 3600),
        problems,
    );
    // Compared only when both are valid: a wrong one is its own problem.
    let (idle_timeout, absolute_timeout) = (idle?, absolute?);
    if idle_timeout > absolute_timeout {
        // At the line that set the idle timeout (or, when only the absolute one is set,
        // at that line).
        let span = raw
            .idle_timeout
            .as_ref()
            .or(raw.absolute_timeout.as_ref())
            .map_or(0..0, |v| v.span());
        problems.at(
            src,
            span,
            format!(
                "session.idle_timeout ({}) must not be longer than session.absolute_timeout ({})",
                super::show_duration(idle_timeout),
                super::show_duration(absolute_timeout)
            ),
        );
        return None;
    }
    Some(SessionPolicy {
        idle_timeout,
        absolute_timeout,
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
            ranges::COOL_DOWN,
            problems,
        )
        .unwrap_or(d.cool_down),
        max_in_flight: count(&raw.max_in_flight, "limits.max_in_flight", 1, problems).unwrap_or(d.max_in_flight),
        max_queued: count(&raw.max_queued, "limits.max_queued", 0, problems).unwrap_or(d.max_queued),
        max_queue_wait: duration(
            src,
            raw.queue_wait.as_ref(),
            "limits.queue_wait",
            ranges::QUEUE_WAIT,
            problems,
        )
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
        let window = duration(
            src,
            Some(&r.window),
            "auto_trip.window",
            ranges::AUTO_TRIP_WINDOW,
            problems,
        );
        let expires = match &r.expires {
            Some(e) => duration(src, Some(e), "auto_trip.expires", ranges::AUTO_TRIP_EXPIRES, problems).map(Some),
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

pub(super) fn parse_upstream(text: &str) -> Result<Upstream, String> {
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
