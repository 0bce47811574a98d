//! `tenants/*.toml`: a tenant's hosts, upstream, SSO, session policy, routes, the
//! upstream circuit breaker's settings and auto-trip rules.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::super::raw::{RawAutoTrip, RawRoute, RawTenant, RawTenantLimits};
use super::super::{
    AutoTripKind, AutoTripRule, GuardSettings, GuardSettingsError, MfaPolicy, Overrides, SessionPolicy, SsoConfig,
    Tenant, Tier, Upstream,
};
use super::{Problems, Source, duration, resolve, size};
use crate::policy::{Access, RouteRule, RouteTable};
use crate::secret::Env;
use crate::tenancy::{self, normalise_host};

#[allow(clippy::too_many_arguments)]
pub(super) fn build_tenant(
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
