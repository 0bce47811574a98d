//! The Grafana dashboard (`deploy/grafana/portcullis.json`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) against the real gateway's `/metrics`: every metric
//! name their PromQL uses is one the gateway exports, with the series they select, and
//! the metrics added for them (sign-ins, active sessions, suspension, store health,
//! readiness) move as the gateway's state does (SPEC "Operator console and
//! observability"). `promtool check rules` and `promtool test rules` prove the rules
//! themselves (`.ci/run`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn deploy_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

/// One sample line of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    /// The label pairs as written, without the braces (`tenant="acme",status="200"`).
    labels: String,
    value: f64,
}

fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).expect("a sample line has a name");
            let (labels, rest) = match l[name_end..].strip_prefix('{') {
                Some(after) => {
                    let close = after.rfind('}').expect("closing brace");
                    (after[..close].to_string(), &after[close + 1..])
                }
                None => (String::new(), &l[name_end..]),
            };
            let value = rest.split_whitespace().next().expect("a value");
            Sample {
                name: l[..name_end].to_string(),
                labels,
                value: value.parse().unwrap_or_else(|e| panic!("value of {l:?}: {e}")),
            }
        })
        .collect()
}

/// The value of the one series of `name` carrying every label pair in `labels`.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && wanted.iter().all(|w| s.labels.split(',').any(|p| p == w)))
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?} names several series: {found:?}");
    found.first().map(|s| s.value)
}

/// The `portcullis_*` identifiers in a PromQL expression.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = promql;
    while let Some(at) = rest.find("portcullis_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(deploy_file("grafana/portcullis.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: the panels' targets and the variables' queries.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("a target has an expr").to_string());
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = var["query"]["query"].as_str() {
            queries.push(q.to_string());
        }
    }
    queries
}

fn alert_rules() -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(deploy_file("prometheus/alerts.yml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("the rules are YAML");
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

async fn scrape(gw: &Gateway) -> String {
    let r = gw.client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// If this broke, a panel or an alert would query a metric the gateway no longer exports
/// (renamed, dropped, or never added): an empty graph, and an alert that can never fire,
/// both silent. It also breaks if the sign-in counter, the session gauge or the
/// suspension gauge stop following what the gateway did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let token = random_hex(24);
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))];
    })
    .await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");

    // A failed sign-in, a complete one, a proxied request, and a tenant kill switch.
    let wrong = TestUser::known("acme", "prod", "alice", "not-the-password-at-all", "");
    assert_eq!(a.api_password_step(&wrong, None).await.status, 401);
    a.api_login(&alice).await;
    assert_eq!(a.get("/app/data").await.status, 200);
    assert_eq!(ups.acme.count(), 1);
    let client = gw.client();
    let r = client
        .put(gw.admin_url("/v1/tenants/globex/breaker"))
        .bearer_auth(&token)
        .json(&json!({ "reason": "dashboard test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let text = scrape(&gw).await;
    let s = samples(&text);
    let exported: BTreeSet<&str> = s.iter().map(|x| x.name.as_str()).collect();

    // The new metrics follow the gateway's state.
    let logins = |outcome| {
        value_of(
            &s,
            "portcullis_logins_total",
            &[("tenant", "acme"), ("method", "password"), ("outcome", outcome)],
        )
    };
    assert_eq!(logins("failure"), Some(1.0), "{text}");
    assert_eq!(
        value_of(
            &s,
            "portcullis_logins_total",
            &[("tenant", "acme"), ("method", "totp"), ("outcome", "success")]
        ),
        Some(1.0),
        "one complete sign-in: {text}"
    );
    assert_eq!(
        logins("success"),
        Some(0.0),
        "the password step alone is no sign-in: {text}"
    );
    // Series exist at 0 before the first attempt, so rate() sees a tenant's first burst.
    for (method, outcome) in [("password", "failure"), ("oidc", "failure"), ("oidc", "success")] {
        let labels = [("tenant", "globex"), ("method", method), ("outcome", outcome)];
        assert_eq!(
            value_of(&s, "portcullis_logins_total", &labels),
            Some(0.0),
            "{labels:?}: {text}"
        );
    }
    assert_eq!(
        value_of(&s, "portcullis_active_sessions", &[("tenant", "acme")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&s, "portcullis_active_sessions", &[("tenant", "globex")]),
        Some(0.0)
    );
    assert_eq!(
        value_of(&s, "portcullis_tenant_suspended", &[("tenant", "globex")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&s, "portcullis_tenant_suspended", &[("tenant", "acme")]),
        Some(0.0)
    );
    assert_eq!(value_of(&s, "portcullis_kill_switches", &[]), Some(1.0));
    assert_eq!(value_of(&s, "portcullis_ready", &[]), Some(1.0));
    assert_eq!(value_of(&s, "portcullis_store_up", &[("tier", "prod")]), Some(1.0));
    assert_eq!(value_of(&s, "portcullis_store_up", &[("tier", "staging")]), Some(1.0));

    // The dashboard: JSON with panels, the data source and tenant variables, and only
    // exported metric names, each per-tenant one filtered by `$tenant`.
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    assert_eq!(
        var("DS_PROMETHEUS").expect("data source variable")["type"],
        "datasource"
    );
    let tenant = var("tenant").expect("tenant variable");
    assert_eq!(tenant["type"], "query");
    assert_eq!(tenant["includeAll"], true);
    let panels: Vec<&Value> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut used_by_dashboard = BTreeSet::new();
    let per_tenant: BTreeSet<&str> = s
        .iter()
        .filter(|x| x.labels.split(',').any(|p| p.starts_with("tenant=")))
        .map(|x| x.name.as_str())
        .collect();
    for panel in &panels {
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} queries nothing", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            if names.iter().any(|n| per_tenant.contains(n.as_str())) {
                assert!(expr.contains("tenant=~\"$tenant\""), "not filtered by tenant: {expr}");
            }
        }
    }
    for q in dashboard_queries(&d) {
        used_by_dashboard.extend(metric_names(&q));
    }
    for needed in [
        "portcullis_requests_total",
        "portcullis_upstream_latency_seconds_bucket",
        "portcullis_logins_total",
        "portcullis_active_sessions",
        "portcullis_kill_switches",
        "portcullis_tenant_suspended",
        "portcullis_upstream_breaker_state",
        "portcullis_store_up",
        "portcullis_ready",
    ] {
        assert!(used_by_dashboard.contains(needed), "no panel shows {needed}");
    }

    // The alert rules: each with a duration, a severity and runbook annotations, and
    // only exported metric names.
    let rules = alert_rules();
    let mut used_by_alerts = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("an alerting rule").to_string();
        assert!(rule["for"].as_str().is_some(), "{name} has no `for`");
        let severity = rule["labels"]["severity"].as_str();
        assert!(matches!(severity, Some("critical" | "warning")), "{name}: {severity:?}");
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name} has no {key}");
        }
        used_by_alerts.extend(metric_names(rule["expr"].as_str().expect("expr")));
        alerts.insert(name);
    }
    for needed in [
        "PortcullisDown",
        "PortcullisNotReady",
        "PortcullisStoreLost",
        "PortcullisKillSwitchInForce",
        "PortcullisLoginFailureSpike",
        "PortcullisUpstreamBreakerOpen",
    ] {
        assert!(alerts.contains(needed), "no alert {needed}");
    }

    let missing: Vec<&String> = used_by_dashboard
        .iter()
        .chain(&used_by_alerts)
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// If this broke, losing Redis would not show on `/metrics`: the store-lost and
/// not-ready alerts would stay silent while every authenticated request got 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_shows_in_store_up_and_ready() {
    let mut redis = RedisServer::start();
    let ups = Upstreams::start().await;
    let mut f = PolicyFixture::for_upstreams(&ups);
    f.store_url = Some(redis.url());
    let gw = Gateway::start(&f).await;
    let health = |text: &str| {
        let s = samples(text);
        (
            value_of(&s, "portcullis_store_up", &[("tier", "prod")]),
            value_of(&s, "portcullis_ready", &[]),
            value_of(&s, "portcullis_active_sessions", &[("tenant", "acme")]),
        )
    };
    assert_eq!(health(&scrape(&gw).await), (Some(1.0), Some(1.0), Some(0.0)));

    redis.kill();
    let lost = eventually(Duration::from_secs(10), || async {
        let h = health(&scrape(&gw).await);
        (h.0 == Some(0.0) && h.1 == Some(0.0)).then_some(h)
    })
    .await;
    assert_eq!(
        lost,
        Some((Some(0.0), Some(0.0), None)),
        "no count without a store; got {:?}",
        health(&scrape(&gw).await)
    );

    redis.spawn();
    let back = eventually(Duration::from_secs(15), || async {
        let h = health(&scrape(&gw).await);
        (h == (Some(1.0), Some(1.0), Some(0.0))).then_some(h)
    })
    .await;
    assert!(back.is_some(), "still {:?}", health(&scrape(&gw).await));
}
