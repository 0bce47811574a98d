//! Four-eyes change requests for isolation controls (SPEC "Changes, audit, four eyes"):
//! tenant hosts, tier and upstream (`tenant.update`), tier credential references
//! (`tier.credentials`) and the reset of a tier or tenant kill switch
//! (`tier.breaker_reset`, `tenant.breaker_reset`).
//!
//! # Layout
//! - this file: the stored record ([`ChangeRequest`]), what a change may contain and how
//!   it is checked ([`validate_change`]), and its [`digest`]; plain data, no I/O.
//! - [`policy`]: applying a change to the policy files (`toml_edit`, comments kept), after
//!   validating the whole resulting policy set on a copy of the directory.
//! - [`service`]: the flow (propose, edit, approve and apply, reject) with its rules (who
//!   may do what, expiry, digests, one winner per decision) and its audit records.
//!
//! A change request lives in the store of the tier that owns its target (the tenant's
//! current tier, or the tier itself). It is pending until a second operator of that tier
//! approves the exact content they reviewed (by digest) within the time to live, then it
//! applies at once. Policy files stay the source of truth, so an applied change survives
//! restarts. The time to live is one hour ([`DEFAULT_TTL_SECS`]), or the number of seconds
//! in the environment variable `PORTCULLIS_CHANGE_TTL_SECS` ([`TTL_ENV`]) read at start.
//!
//! Must not know HTTP (the admin API maps [`ChangeError`] to statuses) and never takes a
//! raw secret: credentials are changed by reference (`env:NAME`, `file:PATH`) only.

pub mod policy;
pub mod service;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::service::{ChangeError, Changes, Operator, Proposal};
pub use crate::records::change::{ChangeKind, ChangeRequest, ChangeStatus, digest, is_change_id, new_change_id};
use crate::secret::SecretRef;

/// Time to live of a pending change when [`TTL_ENV`] does not say otherwise: one hour
/// from its creation or last edit.
pub const DEFAULT_TTL_SECS: i64 = 3600;

/// Environment variable read at start for the time to live of pending changes (seconds).
pub const TTL_ENV: &str = "PORTCULLIS_CHANGE_TTL_SECS";

/// Most hosts one tenant update may set.
pub const HOSTS_MAX: usize = 100;

/// Longest target name accepted (tenant ids and tier names are far shorter).
const TARGET_MAX_CHARS: usize = 128;

/// `change` of a `tenant.update`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TenantUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
}

/// `change` of a `tier.credentials`: secret references, never values.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TierCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assertion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream_token: Option<String>,
}

/// `change` of a `tier.breaker_reset`: nothing.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BreakerReset {}

/// Checks a change of `kind` and returns it normalised (absent and null fields dropped),
/// or a message saying what is wrong; the message never repeats a value.
pub fn validate_change(kind: ChangeKind, change: &Value) -> Result<Map<String, Value>, String> {
    if !change.is_object() {
        return Err("`change` must be a JSON object".into());
    }
    let typed = |e: serde_json::Error| format!("`change`: {}", serde_problem(&e));
    let normalised = match kind {
        ChangeKind::TenantUpdate => {
            let c: TenantUpdate = serde_json::from_value(change.clone()).map_err(typed)?;
            if c.hosts.is_none() && c.tier.is_none() && c.upstream.is_none() {
                return Err("`change` is empty: give any of `hosts`, `tier`, `upstream`".into());
            }
            if let Some(hosts) = &c.hosts {
                check_hosts(hosts)?;
            }
            if let Some(tier) = &c.tier {
                check_tier_name(tier)?;
            }
            if let Some(upstream) = &c.upstream {
                check_upstream(upstream)?;
            }
            serde_json::to_value(&c)
        }
        ChangeKind::TierCredentials => {
            let c: TierCredentials = serde_json::from_value(change.clone()).map_err(typed)?;
            let fields = [
                ("cookie", &c.cookie),
                ("assertion", &c.assertion),
                ("upstream_token", &c.upstream_token),
            ];
            if fields.iter().all(|(_, v)| v.is_none()) {
                return Err("`change` is empty: give any of `cookie`, `assertion`, `upstream_token`".into());
            }
            for (name, value) in fields {
                if let Some(v) = value {
                    check_reference(name, v)?;
                }
            }
            serde_json::to_value(&c)
        }
        ChangeKind::TierBreakerReset | ChangeKind::TenantBreakerReset => {
            let c: BreakerReset = serde_json::from_value(change.clone()).map_err(typed)?;
            serde_json::to_value(&c)
        }
    };
    match normalised {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("`change` could not be normalised".into()),
    }
}

/// The reason, trimmed: required (not blank), and free text as [`crate::audit::free_text`]
/// has it.
pub fn validate_reason(reason: &str) -> Result<String, String> {
    crate::audit::free_text("`reason`", reason)?.ok_or_else(|| "`reason` is required".to_string())
}

/// A target is a tenant id or tier name: short, printable, no path separators.
pub fn validate_target(target: &str) -> Result<(), String> {
    let ok = !target.is_empty()
        && target.chars().count() <= TARGET_MAX_CHARS
        && !target
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/' || c == '\\');
    if ok {
        Ok(())
    } else {
        Err("`target` must be a tenant id or tier name".into())
    }
}

/// The time to live of pending changes from the value of [`TTL_ENV`] (None: the default).
pub fn ttl_from(value: Option<&str>) -> Result<i64, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_TTL_SECS),
        Some(text) => match text.parse::<i64>() {
            Ok(secs) if secs > 0 => Ok(secs),
            _ => Err(format!("{TTL_ENV} must be a positive number of seconds")),
        },
    }
}

/// A copy of a change (or any audit value) fit for the audit log: secret-named fields
/// redacted by [`crate::audit::redact`], and any `inline:` value (a secret written into a
/// policy file) replaced too.
pub fn redacted(value: &Value) -> Value {
    fn inline_out(v: Value) -> Value {
        match v {
            Value::String(s) if s.starts_with("inline:") => Value::String("inline:[redacted]".into()),
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, inline_out(v))).collect()),
            Value::Array(items) => Value::Array(items.into_iter().map(inline_out).collect()),
            other => other,
        }
    }
    inline_out(crate::audit::redact(value))
}

fn check_hosts(hosts: &[String]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err("`change.hosts` must name at least one host".into());
    }
    if hosts.len() > HOSTS_MAX {
        return Err(format!("`change.hosts` may name at most {HOSTS_MAX} hosts"));
    }
    for h in hosts {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'*');
        if !ok {
            return Err("`change.hosts` entries must be host names (letters, digits, `.`, `-`)".into());
        }
    }
    Ok(())
}

fn check_tier_name(tier: &str) -> Result<(), String> {
    if crate::tenancy::is_name(tier) {
        Ok(())
    } else {
        Err("`change.tier` must be a tier name (a-z, 0-9 and `-`)".into())
    }
}

fn check_upstream(upstream: &str) -> Result<(), String> {
    let ok = (upstream.starts_with("http://") || upstream.starts_with("https://"))
        && upstream.len() <= 2048
        && !upstream.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err("`change.upstream` must be an http:// or https:// URL".into())
    }
}

fn check_reference(name: &str, value: &str) -> Result<(), String> {
    match SecretRef::parse(value) {
        Ok(r) if !r.is_inline() => Ok(()),
        _ => Err(format!(
            "`change.{name}` must be a secret reference (`env:NAME` or `file:PATH`); raw secret values and `inline:` are refused"
        )),
    }
}

/// The serde error's category without the offending input (unknown and missing fields are
/// named, values never: serde_json repeats a wrongly typed value, which may be a secret
/// sent in the wrong field). Every JSON body error of the admin API goes through here.
pub(crate) fn serde_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("unknown field") || text.starts_with("missing field") {
        return text.split(" at line").next().unwrap_or("invalid data").to_string();
    }
    if let Some(rest) = text.strip_prefix("invalid type: ") {
        // "invalid type: integer `1`, expected a string": keep only what was expected.
        if let Some((_, expected)) = rest.split_once(", expected ") {
            return format!(
                "wrong type, expected {}",
                expected.split(" at line").next().unwrap_or(expected)
            );
        }
    }
    "invalid data".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    #[test]
    fn kinds_round_trip_by_name() {
        for name in ChangeKind::NAMES {
            let kind = ChangeKind::parse(name).unwrap();
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
        }
        assert_eq!(ChangeKind::parse("tenant.delete"), None);
    }

    #[test]
    fn tenant_updates_take_hosts_tier_and_upstream_only() {
        let ok = validate_change(
            ChangeKind::TenantUpdate,
            &json!({"upstream": "http://127.0.0.1:8080", "hosts": ["a.test", "b.test"], "tier": null}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(ok),
            json!({"upstream": "http://127.0.0.1:8080", "hosts": ["a.test", "b.test"]}),
            "null fields are dropped"
        );
        let cases = [
            (json!({}), "empty"),
            (json!({"tier": null}), "empty"),
            (json!({"name": "x"}), "unknown field `name`"),
            (json!({"hosts": "a.test"}), "wrong type"),
            (json!({"hosts": []}), "at least one host"),
            (json!({"hosts": ["a test"]}), "host names"),
            (json!({"tier": "Prod"}), "tier name"),
            (json!({"upstream": "ftp://x"}), "http"),
            (json!({"upstream": 5}), "wrong type"),
            (json!(["hosts"]), "JSON object"),
        ];
        for (change, want) in cases {
            let err = validate_change(ChangeKind::TenantUpdate, &change).unwrap_err();
            assert!(err.contains(want), "{change}: {err}");
        }
    }

    #[test]
    fn credentials_are_references_never_values() {
        let ok = validate_change(
            ChangeKind::TierCredentials,
            &json!({"cookie": "env:PROD_COOKIE", "upstream_token": "file:secrets/up.token"}),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        for bad in ["hunter2-raw-secret", "inline:hunter2", "env:", "env:BAD-NAME"] {
            let err = validate_change(ChangeKind::TierCredentials, &json!({ "assertion": bad })).unwrap_err();
            assert!(err.contains("secret reference"), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "the value was echoed: {err}");
        }
        let err = validate_change(ChangeKind::TierCredentials, &json!({"password": "x"})).unwrap_err();
        assert!(err.contains("unknown field `password`"), "{err}");
        assert!(validate_change(ChangeKind::TierCredentials, &json!({})).is_err());
    }

    #[test]
    fn a_breaker_reset_carries_nothing() {
        assert!(
            validate_change(ChangeKind::TierBreakerReset, &json!({}))
                .unwrap()
                .is_empty()
        );
        assert!(validate_change(ChangeKind::TierBreakerReset, &json!({"force": true})).is_err());
        assert!(validate_change(ChangeKind::TierBreakerReset, &json!([])).is_err());
    }

    #[test]
    fn reasons_and_targets_are_checked() {
        assert_eq!(validate_reason("  ticket 42 ").unwrap(), "ticket 42");
        assert!(validate_reason(" ").is_err());
        assert!(validate_reason(&"x".repeat(crate::audit::FREE_TEXT_MAX_CHARS + 1)).is_err());
        assert!(validate_reason("a\nb").is_err());
        // Judged as sent: a control character at either end is refused, not trimmed away,
        // and so is a text over the bound that trimming would bring under it.
        for bad in ["ticket 42\n", "\tticket 42", "ticket 42\u{c}", "\u{85}ticket"] {
            assert!(validate_reason(bad).is_err(), "{bad:?}");
        }
        let padded = format!("{} ", "x".repeat(crate::audit::FREE_TEXT_MAX_CHARS));
        assert!(validate_reason(&padded).is_err());
        assert_eq!(validate_reason("\u{a0}ticket 42\u{3000}").unwrap(), "ticket 42");
        assert!(validate_target("acme").is_ok());
        for bad in ["", "../acme", "a b", "a/b"] {
            assert!(validate_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_digest_covers_every_part_and_ignores_key_order() {
        let change = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let base = digest(
            ChangeKind::TenantUpdate,
            "acme",
            &change(json!({"upstream": "http://a", "hosts": ["x.test"]})),
            "r",
        );
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        let reordered = digest(
            ChangeKind::TenantUpdate,
            "acme",
            &change(json!({"hosts": ["x.test"], "upstream": "http://a"})),
            "r",
        );
        assert_eq!(base, reordered);
        let others = [
            digest(
                ChangeKind::TierCredentials,
                "acme",
                &change(json!({"upstream": "http://a", "hosts": ["x.test"]})),
                "r",
            ),
            digest(
                ChangeKind::TenantUpdate,
                "globex",
                &change(json!({"upstream": "http://a", "hosts": ["x.test"]})),
                "r",
            ),
            digest(
                ChangeKind::TenantUpdate,
                "acme",
                &change(json!({"upstream": "http://b", "hosts": ["x.test"]})),
                "r",
            ),
            digest(
                ChangeKind::TenantUpdate,
                "acme",
                &change(json!({"upstream": "http://a", "hosts": ["x.test"]})),
                "r2",
            ),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_digest_is_sha256_of_sorted_compact_json() {
        let mut m = Map::new();
        m.insert("upstream".into(), json!("http://a"));
        let text = r#"{"change":{"upstream":"http://a"},"kind":"tenant.update","reason":"r","target":"acme"}"#;
        assert_eq!(
            digest(ChangeKind::TenantUpdate, "acme", &m, "r"),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
    }

    #[test]
    fn ttl_comes_from_the_environment_value_or_defaults_to_an_hour() {
        assert_eq!(ttl_from(None), Ok(3600));
        assert_eq!(ttl_from(Some("")), Ok(3600));
        assert_eq!(ttl_from(Some("2")), Ok(2));
        assert!(ttl_from(Some("0")).is_err());
        assert!(ttl_from(Some("-5")).is_err());
        assert!(ttl_from(Some("1h")).is_err());
    }

    #[test]
    fn ids_are_random_and_recognised() {
        let a = new_change_id();
        assert!(is_change_id(&a), "{a}");
        assert_ne!(a, new_change_id());
        for bad in [
            "chg-",
            "chg-XYZ",
            "x-0123456789abcdef0123456789abcdef",
            "chg-0123456789ABCDEF0123456789abcdef",
        ] {
            assert!(!is_change_id(bad), "{bad}");
        }
    }

    #[test]
    fn status_reports_expiry_and_authors_cannot_approve() {
        let mut c = ChangeRequest {
            id: new_change_id(),
            version: 1,
            tier: "prod".into(),
            kind: ChangeKind::TierBreakerReset,
            target: "prod".into(),
            change: Map::new(),
            reason: "r".into(),
            digest: String::new(),
            status: ChangeStatus::Pending,
            proposed_by: "olivia".into(),
            edited_by: vec!["oscar".into()],
            created_at: 100,
            updated_at: 100,
            expires_at: 200,
            decided_by: None,
            decided_at: None,
            errors: Vec::new(),
        };
        assert_eq!(c.status_at(199), "pending");
        assert!(c.is_open(199));
        assert_eq!(c.status_at(200), "expired");
        assert!(!c.is_open(200));
        assert!(c.authored_by("olivia") && c.authored_by("oscar") && !c.authored_by("paula"));
        c.status = ChangeStatus::Applied;
        assert_eq!(c.status_at(500), "applied");
        assert_eq!(c.view(500)["status"], "applied");
    }

    #[test]
    fn audit_copies_hide_inline_and_secret_named_values() {
        let v = redacted(&json!({"before": {"cookie": "inline:s3cr3t", "upstream_token": "env:X", "hosts": ["a"]}}));
        let text = v.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("env:X"), "{text}");
        assert_eq!(v["before"]["hosts"], json!(["a"]));
    }
}
