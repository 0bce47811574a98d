//! Unit tests of the policy model: each rule with the message and line it reports.
//! (The `check` command is tested end to end in tests/blackbox.)
// Test-only module: its parent declares it under #[cfg(test)], so unwrap/expect are fine here.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::*;

const GATEWAY: &str = "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nplaintext = true\n";
const PROD: &str = "name = \"prod\"\nproduction = true\nupstream_allowlist = [\"127.0.0.1\", \"10.0.0.0/8\", \"app.internal:8080\"]\n\n[keys]\ncookie = \"env:PROD_COOKIE\"\n";
const STAGING: &str = "name = \"staging\"\nupstream_allowlist = [\"127.0.0.1\"]\n\n[keys]\ncookie = \"inline:staging-cookie-key-0123456789abcdef-xyz\"\n";
const ACME: &str = "id = \"acme\"\ntier = \"prod\"\nhosts = [\"acme.test\"]\nupstream = \"http://127.0.0.1:3000\"\n\n[[routes]]\nprefix = \"/\"\naccess = \"authenticated\"\n";

fn env() -> HashMap<String, String> {
    HashMap::from([(
        "PROD_COOKIE".to_string(),
        "prod-cookie-key-0123456789abcdef-0123456789".to_string(),
    )])
}

fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<(&str, &str)> = vec![
        ("gateway.toml", GATEWAY),
        ("tiers/prod.toml", PROD),
        ("tiers/staging.toml", STAGING),
        ("tenants/acme.toml", ACME),
    ];
    for (name, text) in files {
        all.retain(|(n, _)| n != name);
        all.push((name, text));
    }
    for (name, text) in all {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn errors(dir: &Path) -> Vec<String> {
    match load(dir, &env(), &Overrides::default()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| {
                format!(
                    "{}:{}: {}",
                    e.file.file_name().unwrap().to_string_lossy(),
                    e.line.unwrap_or(0),
                    e.message
                )
            })
            .collect(),
    }
}

fn assert_error(files: &[(&str, &str)], expected: &str) {
    let dir = fixture(files);
    let errs = errors(dir.path());
    assert!(
        errs.iter().any(|e| e.contains(expected)),
        "expected {expected:?} in {errs:#?}"
    );
}

#[test]
fn the_base_fixture_is_valid() {
    let dir = fixture(&[]);
    assert_eq!(errors(dir.path()), Vec::<String>::new());
}

#[test]
fn unknown_keys_are_reported_with_their_line() {
    assert_error(
        &[("tenants/acme.toml", &format!("{ACME}\n[session]\nidle = \"5m\"\n"))],
        "acme.toml:11: unknown field `idle`",
    );
}

#[test]
fn a_host_claimed_twice_names_the_first_owner() {
    let globex = ACME.replace("\"acme\"", "\"globex\"");
    assert_error(
        &[("tenants/globex.toml", &globex)],
        "globex.toml:3: host `acme.test` is already claimed by tenant `acme`",
    );
}

#[test]
fn unknown_tier_lists_the_known_ones() {
    assert_error(
        &[("tenants/acme.toml", &ACME.replace("\"prod\"", "\"qa\""))],
        "acme.toml:2: unknown tier `qa` (known: prod, staging)",
    );
}

#[test]
fn upstream_must_be_in_the_tier_allowlist() {
    let bad = ACME.replace("http://127.0.0.1:3000", "http://192.168.1.5:3000");
    assert_error(
        &[("tenants/acme.toml", &bad)],
        "acme.toml:4: upstream `http://192.168.1.5:3000` is outside the allowlist of tier `prod`",
    );
    let ok_cidr = ACME.replace("http://127.0.0.1:3000", "http://10.1.2.3");
    assert_eq!(
        errors(fixture(&[("tenants/acme.toml", &ok_cidr)]).path()),
        Vec::<String>::new()
    );
    let wrong_port = ACME.replace("http://127.0.0.1:3000", "http://app.internal:9999");
    assert_error(&[("tenants/acme.toml", &wrong_port)], "outside the allowlist");
}

#[test]
fn the_same_secret_in_two_tiers_is_refused() {
    let staging = STAGING.replace("inline:staging-cookie-key-0123456789abcdef-xyz", "env:PROD_COOKIE");
    assert_error(
        &[("tiers/staging.toml", &staging)],
        "staging.toml:5: keys.cookie: the same secret material is already used by tier `prod`",
    );
}

#[test]
fn the_same_operator_token_in_two_tiers_is_refused() {
    let op = "\n[[operators]]\nname = \"o\"\ntoken_sha256 = \"8e6a5ee73e2e5b8a4d6f6c16bd1cde8e0e8f2e07a33a6e3a0d1f4f9f3b6a1c01\"\n";
    assert_error(
        &[
            ("tiers/prod.toml", &format!("{PROD}{op}")),
            ("tiers/staging.toml", &format!("{STAGING}{op}")),
        ],
        "already an operator token of tier `prod`",
    );
}

#[test]
fn inline_secrets_are_refused_in_production() {
    let prod = PROD.replace("env:PROD_COOKIE", "inline:prod-cookie-key-0123456789abcdef-0123456789");
    assert_error(
        &[("tiers/prod.toml", &prod)],
        "prod.toml:6: keys.cookie: inline secrets are not allowed in a production tier",
    );
}

#[test]
fn bare_secret_values_are_not_references() {
    let staging = STAGING.replace("inline:", "");
    assert_error(&[("tiers/staging.toml", &staging)], "a secret must be a reference");
}

#[test]
fn unset_environment_secret_is_named() {
    let prod = PROD.replace("env:PROD_COOKIE", "env:NOT_SET_ANYWHERE");
    assert_error(
        &[("tiers/prod.toml", &prod)],
        "environment variable NOT_SET_ANYWHERE is not set",
    );
}

#[test]
fn bad_durations_urls_and_addresses_are_reported() {
    assert_error(
        &[(
            "tenants/acme.toml",
            &format!("{ACME}\n[session]\nidle_timeout = \"soon\"\n"),
        )],
        "acme.toml:11: session.idle_timeout: `soon` is not a duration",
    );
    assert_error(
        &[(
            "tenants/acme.toml",
            &ACME.replace("http://127.0.0.1:3000", "ftp://127.0.0.1"),
        )],
        "scheme `ftp` is not supported",
    );
    assert_error(
        &[(
            "tenants/acme.toml",
            &ACME.replace("http://127.0.0.1:3000", "http://127.0.0.1:3000/app"),
        )],
        "must not have a path",
    );
    assert_error(
        &[(
            "gateway.toml",
            &GATEWAY.replace("127.0.0.1:0\"\nadmin", "localhost\"\nadmin"),
        )],
        "gateway.toml:2: listen.public: `localhost` is not a socket address",
    );
    assert_error(
        &[("gateway.toml", &format!("{GATEWAY}[limits]\nidle_timeout = \"0s\"\n"))],
        "gateway.toml:6: limits.idle_timeout: `0s` is out of range; it must be at least 1s and at most 1h",
    );
}

#[test]
fn max_staleness_defaults_to_a_second_and_stays_short() {
    let dir = fixture(&[]);
    let config = load(dir.path(), &env(), &Overrides::default()).unwrap();
    assert_eq!(config.gateway.store.max_staleness, std::time::Duration::from_secs(1));
    let with = |value: &str| format!("{GATEWAY}[store]\nmax_staleness = \"{value}\"\n");
    let dir = fixture(&[("gateway.toml", &with("250ms"))]);
    let config = load(dir.path(), &env(), &Overrides::default()).unwrap();
    assert_eq!(
        config.gateway.store.max_staleness,
        std::time::Duration::from_millis(250)
    );
    for (bad, problem) in [
        ("1m", "`1m` is out of range; it must be at least 10ms and at most 10s"),
        ("0s", "`0s` is out of range"),
        ("soon", "`soon`"),
    ] {
        assert_error(
            &[("gateway.toml", &with(bad))],
            &format!("gateway.toml:6: store.max_staleness: {problem}"),
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = fixture(&[
        ("tenants/acme.toml", &ACME.replace("\"prod\"", "\"qa\"")),
        ("tiers/staging.toml", &STAGING.replace("inline:", "")),
        ("gateway.toml", &format!("{GATEWAY}bogus = 1\n")),
    ]);
    let errs = errors(dir.path());
    assert!(errs.len() >= 3, "{errs:#?}");
}

#[test]
fn route_rules_need_exactly_one_kind_of_access() {
    let both = ACME.replace("access = \"authenticated\"", "access = \"public\"\nroles = [\"a\"]");
    assert_error(&[("tenants/acme.toml", &both)], "set either access or roles");
    let unknown = ACME.replace("\"authenticated\"", "\"everyone\"");
    assert_error(
        &[("tenants/acme.toml", &unknown)],
        "`everyone` is not one of public, authenticated",
    );
    let unnormalised = ACME.replace("prefix = \"/\"", "prefix = \"/a/../b\"");
    assert_error(&[("tenants/acme.toml", &unnormalised)], "must be a normalised path");
}

/// A case-insensitive backend serves `/Reports/` and `/reports/` alike, so two rules
/// for them leave the winner undefined; the error names the second rule's line, not the
/// first rule of the file.
#[test]
fn prefixes_equal_ignoring_case_are_reported_at_the_second_rule() {
    let twice = format!(
        "{ACME}\n[[routes]]\nprefix = \"/Reports/\"\naccess = \"public\"\n\n[[routes]]\nprefix = \"/reports\"\nroles = [\"admin\"]\n"
    );
    assert_error(
        &[("tenants/acme.toml", &twice)],
        "acme.toml:15: routes: prefix `/reports` is listed twice (prefixes compare ignoring case)",
    );
}

#[test]
fn plaintext_off_needs_a_certificate_for_every_host() {
    assert_error(
        &[(
            "gateway.toml",
            &GATEWAY.replace("plaintext = true", "plaintext = false"),
        )],
        "no TLS certificate for host `acme.test`",
    );
}

#[test]
fn stray_files_in_policy_dirs_are_reported() {
    assert_error(&[("tenants/globex.tml", "id = 1")], "globex.tml:0: not a policy file");
}

#[test]
fn overrides_are_validated_like_policy_values() {
    let dir = fixture(&[]);
    let bad = Overrides {
        listen: Some("nope".into()),
        ..Overrides::default()
    };
    let errs: Vec<String> = load(dir.path(), &env(), &bad)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs, ["--listen: `nope` is not a socket address (expected IP:PORT)"]);
    let outside = Overrides {
        upstream: Some("http://203.0.113.9".into()),
        ..Overrides::default()
    };
    assert!(load(dir.path(), &env(), &outside).is_err());
    let ok = Overrides {
        listen: Some("127.0.0.1:1".into()),
        store: Some("redis://127.0.0.1:6379".into()),
        ..Overrides::default()
    };
    let cfg = load(dir.path(), &env(), &ok).unwrap();
    assert_eq!(cfg.gateway.listen.public.port(), 1);
    assert_eq!(cfg.gateway.store.url, "redis://127.0.0.1:6379");
}

#[test]
fn debug_output_of_the_whole_config_holds_no_secret() {
    let dir = fixture(&[]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let text = format!("{cfg:?}");
    assert!(!text.contains("prod-cookie-key"), "secret leaked in Debug");
    assert!(!text.contains("staging-cookie-key"), "secret leaked in Debug");
}

#[test]
fn tls_keys_are_parsed_once_and_stay_out_of_debug() {
    let listener = rcgen::generate_simple_self_signed(vec!["acme.test".to_string()]).unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).unwrap();
    let gateway = GATEWAY.replace("plaintext = true", "plaintext = false")
        + "\n[[tls.certificates]]\nhosts = [\"acme.test\"]\ncert = \"file:tls/cert.pem\"\nkey = \"file:tls/key.pem\"\n";
    let staging = format!(
        "{STAGING}upstream_ca = \"file:secrets/ca.pem\"\nupstream_client_cert = \"file:secrets/client.pem\"\nupstream_client_key = \"file:secrets/client.key\"\n"
    );
    let dir = fixture(&[
        ("gateway.toml", &gateway),
        ("tiers/staging.toml", &staging),
        ("tls/cert.pem", &listener.cert.pem()),
        ("tls/key.pem", &listener.key_pair.serialize_pem()),
        ("secrets/ca.pem", &listener.cert.pem()),
        ("secrets/client.pem", &client.cert.pem()),
        ("secrets/client.key", &client.key_pair.serialize_pem()),
    ]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let tls = &cfg.gateway.tls[0];
    assert_eq!(tls.chain, [listener.cert.der().clone()]);
    assert_eq!(tls.key.expose_secret().secret_der(), listener.key_pair.serialize_der());
    let keys = &cfg.tiers["staging"].keys;
    assert_eq!(keys.upstream_ca.as_deref(), Some(&[listener.cert.der().clone()][..]));
    let auth = keys.upstream_client_cert.as_ref().unwrap();
    assert_eq!(auth.chain, [client.cert.der().clone()]);
    assert_eq!(auth.key.expose_secret().secret_der(), client.key_pair.serialize_der());
    let text = format!("{cfg:?}");
    for key in [&listener.key_pair, &client.key_pair] {
        assert!(
            !text.contains(&hex::encode(key.serialize_der())),
            "private key leaked in Debug"
        );
        assert!(
            !text.contains(&format!("{:?}", key.serialize_der())),
            "private key leaked in Debug"
        );
    }
}

#[test]
fn unusable_tls_files_are_reported_at_the_line_that_names_them() {
    let client = rcgen::generate_simple_self_signed(vec!["client.test".to_string()]).unwrap();
    let gateway = GATEWAY.replace("plaintext = true", "plaintext = false")
        + "\n[[tls.certificates]]\nhosts = [\"acme.test\"]\ncert = \"file:tls/cert.pem\"\nkey = \"file:tls/key.pem\"\n";
    let staging = format!(
        "{STAGING}upstream_ca = \"file:secrets/ca.pem\"\nupstream_client_cert = \"file:secrets/client.pem\"\nupstream_client_key = \"file:secrets/client.key\"\n"
    );
    let dir = fixture(&[
        ("gateway.toml", &gateway),
        ("tiers/staging.toml", &staging),
        ("tls/cert.pem", "not a certificate"),
        ("tls/key.pem", &client.key_pair.serialize_pem()),
        ("secrets/ca.pem", "not a certificate"),
        ("secrets/client.pem", &client.cert.pem()),
        ("secrets/client.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n"),
    ]);
    let errs = errors(dir.path());
    for expected in [
        "gateway.toml:8: tls.certificates.cert: not a PEM certificate chain",
        "staging.toml:6: keys.upstream_ca: no certificate in the CA bundle",
        "staging.toml:7: keys.upstream_client_cert: the private key is not a valid PEM key",
    ] {
        assert!(errs.iter().any(|e| e == expected), "expected {expected:?} in {errs:#?}");
    }
}

#[test]
fn the_digest_changes_with_any_policy_byte() {
    let a = load(fixture(&[]).path(), &env(), &Overrides::default()).unwrap().digest;
    let b = load(
        fixture(&[("tenants/acme.toml", &format!("{ACME}# comment\n"))]).path(),
        &env(),
        &Overrides::default(),
    )
    .unwrap()
    .digest;
    assert_ne!(a, b);
}

#[test]
fn changed_tiers_are_the_tiers_whose_effective_policy_differs() {
    let load_with = |files: &[(&str, &str)], env: &HashMap<String, String>| {
        load(fixture(files).path(), env, &Overrides::default())
            .unwrap()
            .effective
    };
    let base = load_with(&[], &env());
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| n.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(base.changed_tiers(&load_with(&[], &env())), set(&[]));
    // A tenant file belongs to its tier.
    let acme_edit = format!("{ACME}# comment\n");
    assert_eq!(
        base.changed_tiers(&load_with(&[("tenants/acme.toml", &acme_edit)], &env())),
        set(&["prod"])
    );
    // A tenant moved between tiers changes both.
    let moved = ACME.replace("tier = \"prod\"", "tier = \"staging\"");
    assert_eq!(
        base.changed_tiers(&load_with(&[("tenants/acme.toml", &moved)], &env())),
        set(&["prod", "staging"])
    );
    // A secret behind an unchanged reference is part of the tier.
    let mut rotated = env();
    rotated.insert(
        "PROD_COOKIE".into(),
        "prod-cookie-key-rotated-0123456789abcdef-01".into(),
    );
    assert_eq!(base.changed_tiers(&load_with(&[], &rotated)), set(&["prod"]));
    // gateway.toml serves every tier.
    let gateway = format!("{GATEWAY}# comment\n");
    assert_eq!(
        base.changed_tiers(&load_with(&[("gateway.toml", &gateway)], &env())),
        set(&["prod", "staging"])
    );
}

#[test]
fn allowlist_entries_match_hosts_ports_and_ranges() {
    let e = |s: &str| validate::parse_allow_entry_for_tests(s).unwrap();
    assert!(e("10.0.0.0/8").allows("10.9.9.9", 1));
    assert!(!e("10.0.0.0/8").allows("11.0.0.1", 1));
    assert!(e("127.0.0.1:80").allows("127.0.0.1", 80));
    assert!(!e("127.0.0.1:80").allows("127.0.0.1", 81));
    assert!(e("app.internal").allows("APP.internal", 5));
    assert!(!e("app.internal").allows("app.internal.evil", 5));
    assert!(e("::1").allows("[::1]", 5));
    assert!(!e("app.internal").allows("127.0.0.1", 5));
}

#[test]
fn automation_tokens_name_scopes_and_tenants_of_their_tier() {
    let hash = "8e6a5ee73e2e5b8a4d6f6c16bd1cde8e0e8f2e07a33a6e3a0d1f4f9f3b6a1c01";
    let ok = format!(
        "{PROD}\n[[automation]]\nname = \"siem\"\ntoken_sha256 = \"{hash}\"\nscopes = [\"breaker:trip\"]\ntenants = [\"acme\"]\n"
    );
    let dir = fixture(&[("tiers/prod.toml", &ok)]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let auto = &cfg.tiers["prod"].automation[0];
    assert_eq!(
        (auto.name.as_str(), auto.tenants.as_slice()),
        ("siem", &["acme".to_string()][..])
    );

    let bad_scope = ok.replace("breaker:trip", "breaker:reset");
    assert_error(
        &[("tiers/prod.toml", &bad_scope)],
        "prod.toml:11: automation.scopes: unknown scope `breaker:reset` (known: breaker:trip)",
    );
    let other_tier_tenant = ok.replace("[\"acme\"]", "[\"initech\"]");
    assert_error(
        &[("tiers/prod.toml", &other_tier_tenant)],
        "prod.toml:12: automation.tenants: `initech` is not a tenant of tier `prod`",
    );
}

#[test]
fn auto_trip_rules_are_validated() {
    let rule = "\n[[auto_trip]]\nname = \"mfa-guessing\"\nkind = \"account_mfa_failures\"\nthreshold = 5\nwindow = \"10m\"\nexpires = \"1h\"\n";
    let good = format!("{ACME}{rule}");
    let dir = fixture(&[("tenants/acme.toml", &good)]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let r = &cfg.tenants[0].auto_trip[0];
    assert_eq!(r.kind, AutoTripKind::AccountMfaFailures);
    assert_eq!(
        (r.threshold, r.window.as_secs(), r.expires.map(|d| d.as_secs())),
        (5, 600, Some(3600))
    );

    let bad_kind = good.replace("account_mfa_failures", "mfa");
    assert_error(
        &[("tenants/acme.toml", &bad_kind)],
        "acme.toml:12: auto_trip.kind: unknown kind `mfa` (known: account_mfa_failures, tenant_login_failures)",
    );
    let zero = good.replace("threshold = 5", "threshold = 0");
    assert_error(
        &[("tenants/acme.toml", &zero)],
        "acme.toml:13: auto_trip.threshold: must be a whole number from 1",
    );
}

#[test]
fn a_redis_acl_user_needs_a_password_reference() {
    let no_password = STAGING.replacen("\n[keys]", "redis_user = \"staging-gw\"\n\n[keys]", 1);
    assert_error(
        &[("tiers/staging.toml", &no_password)],
        "staging.toml:3: redis_user needs redis_password (a secret reference)",
    );
    let both = STAGING.replacen(
        "\n[keys]",
        "redis_user = \"staging-gw\"\nredis_password = \"inline:staging-redis-password\"\n\n[keys]",
        1,
    );
    let dir = fixture(&[("tiers/staging.toml", &both)]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let (user, password) = cfg.tiers["staging"].redis_auth.as_ref().unwrap();
    assert_eq!(
        (user.as_str(), password.expose_secret()),
        ("staging-gw", &b"staging-redis-password"[..])
    );
}

/// If this broke, a session could be set to last for centuries, or in a spelling (`12
/// hours`, `1h30m`) that reads differently from every other policy file.
#[test]
fn durations_have_one_syntax_and_a_range_per_setting() {
    let session = |idle: &str, absolute: &str| {
        format!("{ACME}\n[session]\nidle_timeout = \"{idle}\"\nabsolute_timeout = \"{absolute}\"\n")
    };
    for bad in ["12 hours", "1000y", "1h30m", "1.5h", "-1s", "h", ""] {
        assert_error(
            &[("tenants/acme.toml", &session("30m", bad))],
            &format!(
                "acme.toml:12: session.absolute_timeout: `{bad}` is not a duration; write a whole number and one unit: ms, s, m, h or d (e.g. \"30s\", \"15m\", \"12h\", \"7d\")"
            ),
        );
    }
    assert_error(
        &[("tenants/acme.toml", &session("30m", "31d"))],
        "acme.toml:12: session.absolute_timeout: `31d` is out of range; it must be at least 1s and at most 30d",
    );
    assert_error(
        &[(
            "gateway.toml",
            &format!("{GATEWAY}[limits]\nheader_read_timeout = \"1h\"\n"),
        )],
        "limits.header_read_timeout: `1h` is out of range; it must be at least 1s and at most 5m",
    );
    let dir = fixture(&[("tenants/acme.toml", &session("90s", "7d"))]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let s = &cfg.tenants[0].session;
    assert_eq!(
        (s.idle_timeout.as_secs(), s.absolute_timeout.as_secs()),
        (90, 7 * 86_400)
    );
}

/// If this broke, a typo could leave the admin listener without a connection cap (or
/// with none it could ever serve), and the operator would learn it only in an incident.
#[test]
fn the_admin_connection_cap_is_bounded_and_defaults_to_256() {
    let limits = |value: &str| format!("{GATEWAY}[limits]\nadmin_max_connections = {value}\n");
    for (value, expected) in [
        (
            "0",
            "gateway.toml:6: limits.admin_max_connections: 0 is out of range (at least 1)",
        ),
        (
            "-3",
            "gateway.toml:6: limits.admin_max_connections: -3 is out of range (at least 1)",
        ),
        (
            "70000",
            "gateway.toml:6: limits.admin_max_connections: 70000 is out of range (at most 65536)",
        ),
    ] {
        let dir = fixture(&[("gateway.toml", &limits(value))]);
        let errs = errors(dir.path());
        assert!(errs.iter().any(|e| e == expected), "{expected:?} not in {errs:#?}");
    }
    let dir = fixture(&[]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    assert_eq!(cfg.gateway.limits.admin_max_connections, 256);
    let dir = fixture(&[("gateway.toml", &limits("8"))]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    assert_eq!(cfg.gateway.limits.admin_max_connections, 8);
}

/// If this broke, an operator would have to hunt for the line to fix.
#[test]
fn an_idle_timeout_longer_than_the_absolute_one_is_reported_at_its_line() {
    let both = format!("{ACME}\n[session]\nidle_timeout = \"13h\"\nabsolute_timeout = \"12h\"\n");
    assert_error(
        &[("tenants/acme.toml", &both)],
        "acme.toml:11: session.idle_timeout (13h) must not be longer than session.absolute_timeout (12h)",
    );
    // A wrong absolute timeout is its own problem; the comparison is not made with the default.
    let dir = fixture(&[("tenants/acme.toml", &both.replace("\"12h\"", "\"1000y\""))]);
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("acme.toml:12: session.absolute_timeout: `1000y`"),
        "{errs:#?}"
    );
}

/// If this broke, a break-glass name no local account can have (the rule of `user add`
/// and the login form) would pass review and fail only in an emergency.
#[test]
fn break_glass_names_follow_the_local_account_rule() {
    let sso = |names: &str| {
        format!(
            "{ACME}\n[sso]\nissuer = \"https://idp.example\"\nclient_id = \"gw\"\nclient_secret = \"env:PROD_COOKIE\"\nenforce = true\nbreak_glass = [{names}]\n"
        )
    };
    let dir = fixture(&[("tenants/acme.toml", &sso("\"root\""))]);
    assert_eq!(errors(dir.path()), Vec::<String>::new());
    assert_error(
        &[("tenants/acme.toml", &sso("\"root\", \"sso|x\""))],
        "acme.toml:15: sso.break_glass: user name must not contain '|'",
    );
}

/// If this broke, one wrong `--upstream` would be reported once per tenant, each time at
/// a line of a policy file that does not hold the value.
#[test]
fn a_wrong_upstream_override_is_one_problem_of_the_command_line() {
    let globex = ACME.replace("acme", "globex");
    let dir = fixture(&[("tenants/globex.toml", &globex)]);
    let bad = Overrides {
        upstream: Some("ftp://127.0.0.1".into()),
        ..Overrides::default()
    };
    let errs: Vec<String> = load(dir.path(), &env(), &bad)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs, ["--upstream: scheme `ftp` is not supported (http or https)"]);
    let outside = Overrides {
        upstream: Some("http://203.0.113.9".into()),
        ..Overrides::default()
    };
    let errs: Vec<String> = load(dir.path(), &env(), &outside)
        .unwrap_err()
        .iter()
        .map(|e| e.message.clone())
        .collect();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs.iter()
            .all(|e| e.ends_with("is outside the allowlist of tier `prod` (set by --upstream)")),
        "{errs:#?}"
    );
}

/// If this broke, the SIEM webhook's token (or a key in its URL) could reach a log line
/// through `Debug`, or the sinks would not be built from what the policy says.
#[test]
fn siem_sinks_are_built_and_their_secrets_stay_out_of_debug() {
    let gateway = format!(
        "{GATEWAY}\n[siem]\nwebhook = \"https://siem.example/hook/path-key-0123\"\nwebhook_token = \"file:secrets/siem.token\"\nsyslog = \"tls://siem.example:6514\"\nqueue = 500\n"
    );
    let dir = fixture(&[
        ("gateway.toml", &gateway),
        ("secrets/siem.token", "siem-token-abcdef-0123456789"),
    ]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let siem = &cfg.gateway.siem;
    assert_eq!(siem.queue, 500);
    let webhook = siem.webhook.as_ref().unwrap();
    assert_eq!(webhook.url.host(), Some("siem.example"));
    assert_eq!(
        webhook.token.as_ref().unwrap().expose_secret(),
        b"siem-token-abcdef-0123456789"
    );
    let syslog = siem.syslog.as_ref().unwrap();
    assert_eq!(
        (syslog.host.as_str(), syslog.port, syslog.tls),
        ("siem.example", 6514, true)
    );
    let text = format!("{cfg:?}");
    assert!(!text.contains("siem-token-abcdef"), "token leaked in Debug");
    assert!(!text.contains("path-key-0123"), "webhook path leaked in Debug");
}

/// If this broke, a bearer token could sit in clear in the policy files, or settings
/// that cannot work would be accepted silently.
#[test]
fn siem_settings_that_cannot_work_name_their_line() {
    let gateway = format!(
        "{GATEWAY}\n[siem]\nwebhook_token = \"inline:abc\"\nsyslog_ca = \"file:secrets/none.pem\"\nqueue = 2000000\n"
    );
    let dir = fixture(&[("gateway.toml", &gateway)]);
    let errors = errors(dir.path());
    for expected in [
        "gateway.toml:7: siem.webhook_token: give the secret by reference (env:NAME or file:PATH), not inline",
        "gateway.toml:7: siem.webhook_token: set `siem.webhook` too",
        "gateway.toml:8: siem.syslog_ca: set a `tls://` `siem.syslog` too",
        "gateway.toml:9: siem.queue: 2000000 is out of range (at most 1000000)",
    ] {
        assert!(errors.iter().any(|e| e == expected), "{expected:?} not in {errors:#?}");
    }
}

/// If this broke, a gateway behind a TLS-terminating balancer would hand its IdP a
/// `redirect_uri` with the listener's plain scheme and internal port, and SSO would
/// fail; or a gateway without the keys would change the origin it has always used.
#[test]
fn the_external_scheme_and_port_make_the_public_origin() {
    let unset = load(fixture(&[]).path(), &env(), &Overrides::default()).unwrap();
    assert_eq!(
        unset.gateway.listen.external,
        crate::tenancy::ExternalEndpoint::default()
    );
    let entry = unset.host_map().get("acme.test").unwrap().clone();
    assert_eq!(entry.public_origin(false, 8080), "http://acme.test:8080");

    let behind_balancer = format!("{GATEWAY}external_scheme = \"https\"\nexternal_port = 443\n");
    let config = load(
        fixture(&[("gateway.toml", &behind_balancer)]).path(),
        &env(),
        &Overrides::default(),
    )
    .unwrap();
    let entry = config.host_map().get("acme.test").unwrap().clone();
    assert_eq!(entry.public_origin(false, 8080), "https://acme.test");
    assert!(config.gateway.listen.external.https(false));

    let other_port = format!("{GATEWAY}external_scheme = \"https\"\nexternal_port = 8443\n");
    let config = load(
        fixture(&[("gateway.toml", &other_port)]).path(),
        &env(),
        &Overrides::default(),
    )
    .unwrap();
    let entry = config.host_map().get("acme.test").unwrap().clone();
    assert_eq!(entry.public_origin(false, 8080), "https://acme.test:8443");
}

/// If this broke, a typo in the external scheme or port would quietly give users
/// redirect URIs they cannot reach, or a TLS gateway could be told to hand out
/// plain-HTTP redirect URIs.
#[test]
fn wrong_external_schemes_and_ports_name_their_line() {
    let gateway = format!("{GATEWAY}external_scheme = \"ftp\"\nexternal_port = 0\n");
    let errs = errors(fixture(&[("gateway.toml", &gateway)]).path());
    for expected in [
        "gateway.toml:5: listen.external_scheme: `ftp` is not a scheme (expected \"http\" or \"https\")",
        "gateway.toml:6: listen.external_port: 0 is not a port (1 to 65535)",
    ] {
        assert!(errs.iter().any(|e| e == expected), "{expected:?} not in {errs:#?}");
    }
    for port in ["65536", "-443"] {
        let gateway = format!("{GATEWAY}external_port = {port}\n");
        assert_error(
            &[("gateway.toml", &gateway)],
            &format!("gateway.toml:5: listen.external_port: {port} is not a port (1 to 65535)"),
        );
    }
    let gateway = format!("{GATEWAY}external_scheme = \"HTTPS\"\n");
    assert_error(
        &[("gateway.toml", &gateway)],
        "gateway.toml:5: listen.external_scheme: `HTTPS` is not a scheme",
    );

    let downgrade = GATEWAY.replace("plaintext = true", "plaintext = false\nexternal_scheme = \"http\"");
    assert_error(
        &[("gateway.toml", &downgrade)],
        "gateway.toml:5: listen.external_scheme: `http` in front of a TLS listener would downgrade",
    );
    // Plain HTTP said out loud on a plaintext listener is what it already was.
    let plain = format!("{GATEWAY}external_scheme = \"http\"\nexternal_port = 80\n");
    assert_eq!(
        errors(fixture(&[("gateway.toml", &plain)]).path()),
        Vec::<String>::new()
    );
}

/// The `[listen]` table of [`GATEWAY`] with the admin listener on `admin` and `extra`
/// lines after it.
fn gateway_with_admin(admin: &str, extra: &str) -> String {
    format!("[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"{admin}\"\nplaintext = true\n{extra}")
}

const ADMIN_TLS: &str = "\n[listen.admin_tls]\ncert = \"file:tls/admin.crt\"\nkey = \"file:tls/admin.key\"\n";

/// If this broke, the operator API and console could be served in clear text to the
/// network (bearer tokens and console cookies readable on the wire) by one edited address.
#[test]
fn an_admin_listener_off_loopback_needs_tls_or_an_explicit_plaintext() {
    let exposed = gateway_with_admin("0.0.0.0:9090", "");
    assert_error(
        &[("gateway.toml", &exposed)],
        "gateway.toml:3: listen.admin: the admin listener `0.0.0.0:9090` is not on a loopback address and has no TLS",
    );
    for written in [
        gateway_with_admin("0.0.0.0:9090", "admin_plaintext = true\n"),
        gateway_with_admin("[::1]:9090", ""),
        gateway_with_admin("127.0.0.2:9090", ""),
        gateway_with_admin("127.0.0.1:9090", "admin_plaintext = false\n"),
    ] {
        let dir = fixture(&[("gateway.toml", &written)]);
        assert_eq!(errors(dir.path()), Vec::<String>::new(), "{written}");
    }
    // `admin_plaintext = false` is the default, written out: still refused off loopback.
    assert_error(
        &[(
            "gateway.toml",
            &gateway_with_admin("10.0.0.5:9090", "admin_plaintext = false\n"),
        )],
        "gateway.toml:3: listen.admin: the admin listener `10.0.0.5:9090`",
    );
}

/// If this broke, `--admin-listen 0.0.0.0:9090` would expose a plaintext admin listener
/// that the policy file alone would have refused.
#[test]
fn an_admin_listen_override_off_loopback_is_refused_without_tls() {
    let dir = fixture(&[]);
    let exposed = Overrides {
        admin_listen: Some("0.0.0.0:9090".into()),
        ..Overrides::default()
    };
    let errs: Vec<String> = load(dir.path(), &env(), &exposed)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("--admin-listen: the admin listener `0.0.0.0:9090` is not on a loopback address"),
        "{errs:#?}"
    );
    let allowed = fixture(&[(
        "gateway.toml",
        &gateway_with_admin("127.0.0.1:0", "admin_plaintext = true\n"),
    )]);
    assert!(load(allowed.path(), &env(), &exposed).is_ok());
}

/// If this broke, the admin listener's key would not load (or would leak into logs
/// through `Debug`), or a certificate would be required where loopback needs none.
#[test]
fn admin_tls_loads_its_certificate_and_key_and_allows_any_address() {
    let admin = rcgen::generate_simple_self_signed(vec!["admin.internal".to_string()]).unwrap();
    let dir = fixture(&[
        ("gateway.toml", &gateway_with_admin("0.0.0.0:9090", ADMIN_TLS)),
        ("tls/admin.crt", &admin.cert.pem()),
        ("tls/admin.key", &admin.key_pair.serialize_pem()),
    ]);
    let cfg = load(dir.path(), &env(), &Overrides::default()).unwrap();
    let tls = cfg.gateway.listen.admin_tls.as_ref().expect("admin TLS configured");
    assert_eq!(tls.chain, [admin.cert.der().clone()]);
    assert_eq!(tls.key.expose_secret().secret_der(), admin.key_pair.serialize_der());
    let text = format!("{cfg:?}");
    assert!(
        !text.contains(&format!("{:?}", admin.key_pair.serialize_der())),
        "admin private key leaked in Debug"
    );
    assert!(
        !text.contains(&hex::encode(admin.key_pair.serialize_der())),
        "admin private key leaked in Debug"
    );
    // Without the table, none.
    let plain = fixture(&[]);
    let cfg = load(plain.path(), &env(), &Overrides::default()).unwrap();
    assert!(cfg.gateway.listen.admin_tls.is_none());
}

/// If this broke, a broken admin certificate would be reported without saying where, or
/// a contradictory `[listen]` (TLS and plaintext both) would start with one of them
/// silently winning.
#[test]
fn admin_tls_problems_name_the_file_line_and_key() {
    let admin = rcgen::generate_simple_self_signed(vec!["admin.internal".to_string()]).unwrap();
    let gateway = gateway_with_admin("127.0.0.1:0", ADMIN_TLS);
    // Missing files: each reported at the line that names it (the key once the
    // certificate loads).
    assert_error(&[("gateway.toml", &gateway)], "gateway.toml:7: listen.admin_tls.cert: ");
    assert_error(
        &[("gateway.toml", &gateway), ("tls/admin.crt", &admin.cert.pem())],
        "gateway.toml:8: listen.admin_tls.key: ",
    );
    // Files that are not PEM of the right kind.
    assert_error(
        &[
            ("gateway.toml", &gateway),
            ("tls/admin.crt", "not a certificate"),
            ("tls/admin.key", &admin.key_pair.serialize_pem()),
        ],
        "gateway.toml:7: listen.admin_tls.cert: not a PEM certificate chain",
    );
    assert_error(
        &[
            ("gateway.toml", &gateway),
            ("tls/admin.crt", &admin.cert.pem()),
            ("tls/admin.key", &admin.cert.pem()),
        ],
        "gateway.toml:8: listen.admin_tls.key: not a PEM private key",
    );
    // A missing key in the table, an unknown one.
    assert_error(
        &[(
            "gateway.toml",
            &gateway_with_admin("127.0.0.1:0", "\n[listen.admin_tls]\ncert = \"file:tls/admin.crt\"\n"),
        )],
        "missing field `key`",
    );
    assert_error(
        &[(
            "gateway.toml",
            &gateway_with_admin("127.0.0.1:0", &format!("{ADMIN_TLS}ca = \"file:x\"\n")),
        )],
        "unknown field `ca`",
    );
    // TLS and plaintext at once.
    assert_error(
        &[
            (
                "gateway.toml",
                &gateway_with_admin("0.0.0.0:9090", &format!("admin_plaintext = true\n{ADMIN_TLS}")),
            ),
            ("tls/admin.crt", &admin.cert.pem()),
            ("tls/admin.key", &admin.key_pair.serialize_pem()),
        ],
        "gateway.toml:5: listen.admin_plaintext: cannot be true with [listen.admin_tls]",
    );
}

/// If this broke, `portcullis reload` would not find the certificate to trust (and fail
/// against an HTTPS admin listener), or would need the private key, which an operator's
/// machine should not hold.
#[test]
fn the_admin_endpoint_gives_the_address_and_certificate_but_never_needs_the_key() {
    let admin = rcgen::generate_simple_self_signed(vec!["admin.internal".to_string()]).unwrap();
    let gateway = gateway_with_admin(
        "127.0.0.1:9443",
        "\n[listen.admin_tls]\ncert = \"file:tls/admin.crt\"\nkey = \"env:ADMIN_KEY_NOT_SET\"\n",
    );
    let dir = fixture(&[("gateway.toml", &gateway), ("tls/admin.crt", &admin.cert.pem())]);
    let endpoint = admin_endpoint(dir.path(), &env()).unwrap();
    assert_eq!(endpoint.addr, "127.0.0.1:9443".parse().unwrap());
    assert_eq!(endpoint.tls_certificate, Some(admin.cert.der().clone()));

    let plain = fixture(&[]);
    let endpoint = admin_endpoint(plain.path(), &env()).unwrap();
    assert_eq!(endpoint.tls_certificate, None);

    let broken = fixture(&[("gateway.toml", &gateway), ("tls/admin.crt", "garbage")]);
    let err = admin_endpoint(broken.path(), &env()).unwrap_err();
    assert_eq!(err.line, Some(7));
    assert!(
        err.message
            .contains("listen.admin_tls.cert: not a PEM certificate chain"),
        "{err}"
    );
}
