//! Incidents seen from outside (SPEC "Incidents and status"): a trip names an incident
//! (admin API, CLI), everything it causes carries the reference (the stored switch, audit
//! records, security events, the sessions it ended, an auto-trip during it), and the
//! timeline comes out of `GET /v1/incidents/{id}` and `portcullis incident timeline`
//! (Markdown and JSON) complete and in order, within the operator's tier.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

const PROTECTED: &str = "/app/data";

/// A gateway with an operator per tier, an automation token in prod, and an auto-trip
/// rule on globex (three wrong second-factor codes cut the account off).
struct Env {
    _ups: Upstreams,
    gw: Gateway,
    fixture: PolicyFixture,
    /// Operator `olivia` of prod.
    prod: String,
    /// Operator `sven` of staging.
    staging: String,
    /// Automation `siem` of prod.
    siem: String,
    client: reqwest::Client,
}

async fn env() -> Env {
    let (prod, staging, siem) = (random_hex(24), random_hex(24), random_hex(24));
    let ups = Upstreams::start().await;
    let mut fixture = PolicyFixture::for_upstreams(&ups);
    fixture.prod_operators = vec![("olivia".into(), sha256_hex(prod.as_bytes()))];
    fixture.staging_operators = vec![("sven".into(), sha256_hex(staging.as_bytes()))];
    fixture.automation = vec![AutomationSpec {
        tier: "prod".into(),
        name: "siem".into(),
        token_sha256: sha256_hex(siem.as_bytes()),
        scopes: vec!["breaker:trip".into()],
        tenants: vec!["acme".into()],
    }];
    fixture.tenant_mut("globex").routes.push_str(
        "\n[[auto_trip]]\nname = \"mfa-guessing\"\nkind = \"account_mfa_failures\"\nthreshold = 3\nwindow = \"10m\"\n",
    );
    let gw = Gateway::start(&fixture).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    Env {
        _ups: ups,
        gw,
        fixture,
        prod,
        staging,
        siem,
        client,
    }
}

impl Env {
    /// An admin API call with a bearer token and an optional JSON body: (status, body).
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, self.gw.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `GET /v1/breakers` of prod.
    async fn breakers(&self) -> Vec<Value> {
        let (status, body) = self.call(Method::GET, "/v1/breakers", Some(&self.prod), None).await;
        assert_eq!(status, 200, "{body}");
        body["breakers"].as_array().expect("breakers").clone()
    }

    /// `GET /v1/audit?<query>` of prod.
    async fn audit(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/audit?{query}"), Some(&self.prod), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().expect("audit records").clone()
    }

    /// Rewrites the policy files from the fixture and reloads them as olivia.
    async fn reload(&self) {
        self.fixture.write(&self.gw.policy_dir);
        let (status, body) = self.call(Method::POST, "/v1/reload", Some(&self.prod), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["tiers"], json!(["prod"]), "{body}");
    }

    fn config(&self) -> String {
        self.gw.policy_dir.display().to_string()
    }
}

/// A signed-in agent of `user` on `host`.
async fn signed_in(gw: &Gateway, host: &str, user: &TestUser) -> Agent {
    let mut a = Agent::new(gw, host);
    a.api_login(user).await;
    assert_eq!(a.get(PROTECTED).await.status, 200, "fresh session does not work");
    a
}

/// Runs the `portcullis` CLI; returns (success, stdout, stderr).
async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .expect("run the portcullis CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `(kind, detail)` pairs of a timeline body.
fn kinds_and_details(timeline: &Value) -> Vec<(String, String)> {
    timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("?").to_string(),
                e["detail"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// A scripted incident from trip to reset: users are signed in, the operator trips
/// acme for INC-42 (their sessions end), an account of globex (same tier) guessing codes
/// is auto-tripped during it, the policy is reloaded, both switches are reset, and the
/// policy is reloaded once more after. If this broke, the postmortem of an incident
/// would be missing steps, counts or order, show another tier's incident, or include
/// what happened after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_incident_has_a_complete_timeline_in_order() {
    let mut env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let gina = accounts.create("globex", "gina", &[], true).await;
    let mut alice_agent = signed_in(&env.gw, "acme.test", &alice).await;
    let _bob_agent = signed_in(&env.gw, "acme.test", &bob).await;
    let mut gina_agent = signed_in(&env.gw, "globex.test", &gina).await;

    // Trip acme for INC-42: both sessions end, and everything says so.
    let (status, trip) = env
        .call(
            Method::PUT,
            "/v1/tenants/acme/breaker",
            Some(&env.prod),
            Some(json!({"reason": "credential leak", "message": "Back soon", "incident": "INC-42"})),
        )
        .await;
    assert_eq!(status, 200, "{trip}");
    assert_eq!(trip["incident"], "INC-42", "{trip}");
    assert_eq!(trip["sessions_ended"], 2, "{trip}");
    assert_eq!(
        alice_agent.get(PROTECTED).await.status,
        423,
        "alice's session still served"
    );
    let listed = env.breakers().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["incident"], "INC-42", "{listed:?}");
    let event = env
        .gw
        .await_security_event("breaker_trip", |e| e["portcullis.target"] == "tenant:acme")
        .await;
    assert_eq!(event["portcullis.incident"], "INC-42", "{event}");
    let event = env
        .gw
        .await_security_event("session_revoked", |e| e["portcullis.target"] == "tenant:acme")
        .await;
    assert_eq!(event["portcullis.sessions"], 2, "{event}");
    assert_eq!(event["portcullis.incident"], "INC-42", "{event}");

    // During it, gina's account (globex, same tier) guesses codes: the rule trips it,
    // ending her session, and the trip joins the incident open in the tier.
    for _ in 0..3 {
        let mut a = Agent::new(&env.gw, "globex.test");
        assert_eq!(a.api_password_step(&gina, None).await.status, 200);
        let r = a.post_json("/.portcullis/api/mfa", &json!({"code": "000000"})).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let auto = eventually(Duration::from_secs(5), || async {
        env.breakers().await.into_iter().find(|b| b["subject"] == "gina")
    })
    .await
    .expect("the auto-trip rule did not fire");
    assert_eq!(auto["incident"], "INC-42", "{auto}");
    assert_eq!(auto["sessions_ended"], 1, "{auto}");
    assert_eq!(gina_agent.get(PROTECTED).await.status, 423);

    // A configuration change in the window.
    env.fixture.tenant_mut("acme").session_timeouts.0 = "20m".into();
    env.reload().await;

    // Resets: the account's without a body, the tenant's naming the incident.
    let (status, body) = env
        .call(
            Method::DELETE,
            "/v1/tenants/globex/accounts/gina/breaker",
            Some(&env.prod),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = env
        .call(
            Method::DELETE,
            "/v1/tenants/acme/breaker",
            Some(&env.prod),
            Some(json!({"reason": "keys rotated", "incident": "INC-42"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let resets = env.audit("action=breaker.reset").await;
    assert_eq!(resets.len(), 2, "{resets:?}");
    assert!(resets.iter().all(|r| r["incident"] == "INC-42"), "{resets:?}");
    let event = env
        .gw
        .await_security_event("breaker_reset", |e| e["portcullis.target"] == "tenant:acme")
        .await;
    assert_eq!(event["portcullis.incident"], "INC-42", "{event}");

    // After the incident: not on its timeline. (The audit log's times are whole seconds.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.fixture.tenant_mut("acme").session_timeouts.0 = "25m".into();
    env.reload().await;

    let (status, timeline) = env
        .call(Method::GET, "/v1/incidents/INC-42", Some(&env.prod), None)
        .await;
    assert_eq!(status, 200, "{timeline}");
    assert_eq!(timeline["incident"], "INC-42");
    let steps = kinds_and_details(&timeline);
    let expected: Vec<(String, String)> = [
        ("trip", "tenant:acme tripped; users told: Back soon"),
        ("revocation", "2 sessions ended by the trip of tenant:acme"),
        ("auto_trip", "account:globex:gina tripped; users told: "),
        ("revocation", "1 session ended by the trip of account:globex:gina"),
        ("config_change", "policy.reload tier:prod"),
        ("reset", "account:globex:gina reset"),
        ("reset", "tenant:acme reset"),
    ]
    .iter()
    .map(|(k, d)| (k.to_string(), d.to_string()))
    .collect();
    assert_eq!(steps.len(), expected.len(), "{timeline:#}");
    for (got, want) in steps.iter().zip(&expected) {
        assert_eq!(got.0, want.0, "{timeline:#}");
        assert!(
            got.1.starts_with(&want.1),
            "{} does not start with {}: {timeline:#}",
            got.1,
            want.1
        );
    }
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(events[0]["actor"], "operator:olivia");
    assert_eq!(events[0]["system"], "api");
    assert_eq!(events[0]["reason"], "credential leak");
    assert_eq!(events[0]["tenant"], "acme");
    assert_eq!(events[0]["tier"], "prod");
    assert_eq!(events[2]["actor"], "rule:mfa-guessing");
    assert_eq!(events[2]["system"], "auto-rule");
    assert_eq!(events[6]["reason"], "keys rotated");
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.iter().all(|t| t.len() == 20 && t.ends_with('Z')), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not oldest first: {times:?}");

    // The other tier's operator sees none of it; machines may not read it.
    let (status, body) = env
        .call(Method::GET, "/v1/incidents/INC-42", Some(&env.staging), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found", "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    assert!(!body.to_string().contains("acme"), "{body}");
    let (status, _) = env
        .call(Method::GET, "/v1/incidents/INC-42", Some(&env.siem), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = env.call(Method::GET, "/v1/incidents/INC-42", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = env
        .call(Method::GET, "/v1/incidents/INC-404", Some(&env.prod), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = env
        .call(Method::GET, "/v1/incidents/INC%2042", Some(&env.prod), None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request", "{body}");

    // The CLI prints the same timeline: JSON exactly as the API, Markdown as a table.
    let config = env.config();
    let (ok, out, err) = cli(&[
        "incident",
        "timeline",
        "--config",
        &config,
        "--incident",
        "INC-42",
        "--format",
        "json",
    ])
    .await;
    assert!(ok, "incident timeline failed:\n{out}\n{err}");
    let from_cli: Value = serde_json::from_str(&out).expect("CLI JSON");
    assert_eq!(from_cli, timeline, "the CLI and the API disagree");
    let (ok, md, err) = cli(&["incident", "timeline", "--config", &config, "--incident", "INC-42"]).await;
    assert!(ok, "incident timeline (md) failed:\n{md}\n{err}");
    assert!(md.starts_with("## Incident INC-42\n"), "{md}");
    let window = format!("Window: {} to {}", times[0], times[6]);
    assert!(md.contains(&window), "expected `{window}` in:\n{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 20")).collect();
    assert_eq!(rows.len(), 7, "{md}");
    assert!(
        rows[1].contains("| revocation |") && rows[1].contains("2 sessions ended"),
        "{md}"
    );
    assert!(rows[4].contains("| config_change |"), "{md}");
    let (ok, out, _) = cli(&["incident", "timeline", "--config", &config, "--incident", "INC-404"]).await;
    assert!(!ok, "an unknown incident printed: {out}");

    // The chain, now holding records with and without incidents, still verifies.
    let (ok, out, err) = cli(&["audit", "verify", "--config", &config]).await;
    assert!(ok, "audit verify failed:\n{out}\n{err}");
    assert!(out.contains("tier prod:") && out.contains("chain intact"), "{out}");
}

/// If this broke, a malformed incident reference would reach logs, URLs and Markdown,
/// or a refused trip would still cut a tenant off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_incident_references_are_refused_and_trip_nothing() {
    let env = env().await;
    let long = "I".repeat(65);
    for bad in [
        json!(""),
        json!("INC 42"),
        json!("INC/42"),
        json!("<b>x</b>"),
        json!(long),
        json!(42),
    ] {
        for dry_run in ["", "?dry_run=true"] {
            let (status, body) = env
                .call(
                    Method::PUT,
                    &format!("/v1/tenants/acme/breaker{dry_run}"),
                    Some(&env.prod),
                    Some(json!({"reason": "r", "incident": bad})),
                )
                .await;
            assert_eq!(status, 400, "{bad} {dry_run}: {body}");
            assert_eq!(body["error"], "bad_request", "{body}");
            if bad.is_string() {
                assert!(body["message"].as_str().unwrap().contains("incident"), "{body}");
            }
        }
    }
    let ok_id = "I".repeat(64);
    assert!(env.breakers().await.is_empty(), "a refused trip tripped");
    assert!(env.audit("action=breaker.trip").await.is_empty());
    assert!(env.audit("action=breaker.drill").await.is_empty());
    assert_eq!(env.gw.security_events("breaker_trip").len(), 0);

    // A reset naming a bad incident changes nothing either.
    let (status, _) = env
        .call(
            Method::PUT,
            "/v1/tenants/acme/breaker",
            Some(&env.prod),
            Some(json!({"reason": "r", "incident": ok_id})),
        )
        .await;
    assert_eq!(status, 200, "64 characters are allowed");
    let (status, body) = env
        .call(
            Method::DELETE,
            "/v1/tenants/acme/breaker",
            Some(&env.prod),
            Some(json!({"incident": "no spaces"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(env.breakers().await.len(), 1, "a refused reset reset");

    // The CLI refuses it before opening anything.
    let config = env.config();
    let (ok, out, err) = cli(&[
        "breaker",
        "trip",
        "--config",
        &config,
        "--tenant",
        "globex",
        "--reason",
        "r",
        "--incident",
        "INC 42",
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("--incident"), "{err}");
    let (ok, _, err) = cli(&["incident", "timeline", "--config", &config, "--incident", "a|b"]).await;
    assert!(!ok && err.contains("--incident"), "{err}");
    assert_eq!(env.breakers().await.len(), 1, "the CLI tripped globex");
}

/// If this broke, an operator at a shell could not file a trip under its incident on a
/// running gateway, or a reset without `--incident` would drop out of the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_trip_names_its_incident_on_a_running_gateway() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let gina = accounts.create("globex", "gina", &[], true).await;
    let mut a = signed_in(&env.gw, "globex.test", &gina).await;
    let config = env.config();
    let (ok, out, err) = cli(&[
        "breaker",
        "trip",
        "--config",
        &config,
        "--tenant",
        "globex",
        "--reason",
        "ddos from the app",
        "--incident",
        "INC-7",
    ])
    .await;
    assert!(ok, "breaker trip failed:\n{out}\n{err}");
    assert!(out.contains("ended 1 session"), "{out}");
    let applied = eventually(Duration::from_secs(5), || async {
        (raw_get(env.gw.public, "globex.test", "/public/ping").await.status == 423).then_some(())
    })
    .await;
    assert!(applied.is_some(), "the CLI trip was not applied within 5 s");
    assert_eq!(a.get(PROTECTED).await.status, 423, "gina's session still served");
    let listed = env.breakers().await;
    assert_eq!(listed[0]["incident"], "INC-7", "{listed:?}");

    let (ok, out, err) = cli(&["breaker", "reset", "--config", &config, "--tenant", "globex"]).await;
    assert!(ok, "breaker reset failed:\n{out}\n{err}");
    let (status, timeline) = env
        .call(Method::GET, "/v1/incidents/INC-7", Some(&env.prod), None)
        .await;
    assert_eq!(status, 200, "{timeline}");
    let steps: Vec<String> = kinds_and_details(&timeline).into_iter().map(|(k, _)| k).collect();
    assert_eq!(steps, ["trip", "revocation", "reset"], "{timeline:#}");
    assert!(
        timeline["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["system"] == "cli"),
        "{timeline:#}"
    );
}

/// If this broke, a tenant admin cutting off a phished account during an incident could
/// not file it under the incident (JSON API or page form), or a bad reference would trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_may_name_the_incident_of_an_account_trip() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let ada = accounts.create("acme", "ada", &["tenant-admin"], true).await;
    accounts.create("acme", "bob", &[], true).await;
    accounts.create("acme", "cy", &[], true).await;
    let mut admin = signed_in(&env.gw, "acme.test", &ada).await;
    let put = |body: &'static str| {
        (
            Method::PUT,
            "/.portcullis/api/admin/accounts/bob/breaker",
            Some(("application/json", body.as_bytes().to_vec())),
        )
    };
    let (m, p, b) = put(r#"{"reason":"phished","incident":"INC 9"}"#);
    let r = admin.send(m, p, &[], b).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("incident"), "{}", r.body);
    assert!(env.breakers().await.is_empty(), "a refused trip tripped");
    let (m, p, b) = put(r#"{"reason":"phished","incident":"INC-9"}"#);
    let r = admin.send(m, p, &[], b).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["incident"], "INC-9", "{}", r.body);

    // The page's form: the incident field is optional.
    let page = admin.get("/.portcullis/admin").await;
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_string();
    for (subject, incident) in [("cy", ""), ("dee", "INC-9")] {
        let r = admin
            .post_form(
                "/.portcullis/admin/breaker",
                &[
                    ("csrf", &csrf),
                    ("action", "trip"),
                    ("subject", subject),
                    ("idp", "local"),
                    ("reason", "phished"),
                    ("incident", incident),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{subject}: {}", r.body);
    }
    let by_subject = |subject: &str, list: &[Value]| {
        list.iter()
            .find(|b| b["subject"] == subject)
            .cloned()
            .unwrap_or_else(|| panic!("no switch of {subject}: {list:?}"))
    };
    let listed = env.breakers().await;
    assert!(by_subject("cy", &listed).get("incident").is_none(), "{listed:?}");
    assert_eq!(by_subject("dee", &listed)["incident"], "INC-9", "{listed:?}");
    let (status, timeline) = env
        .call(Method::GET, "/v1/incidents/INC-9", Some(&env.prod), None)
        .await;
    assert_eq!(status, 200, "{timeline}");
    let trips: Vec<String> = kinds_and_details(&timeline)
        .into_iter()
        .filter(|(k, _)| k == "trip")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(trips.len(), 2, "{timeline:#}");
    assert!(trips[0].starts_with("account:acme:bob tripped"), "{timeline:#}");
    assert!(trips[1].starts_with("account:acme:dee tripped"), "{timeline:#}");
}

/// If this broke, a switch that runs out on its own would close its incident without a
/// trace: the expiry's reset would not name it, and the timeline would look still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_switch_closes_its_incident() {
    let env = env().await;
    let (status, body) = env
        .call(
            Method::PUT,
            "/v1/tenants/globex/breaker",
            Some(&env.prod),
            Some(json!({"reason": "short pause", "expires_in": "1s", "incident": "INC-8"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reset = eventually(Duration::from_secs(10), || async {
        env.audit("action=breaker.reset").await.into_iter().next()
    })
    .await
    .expect("the expiry was not audited");
    assert_eq!(reset["system"], "expiry", "{reset}");
    assert_eq!(reset["incident"], "INC-8", "{reset}");
    let (status, timeline) = env
        .call(Method::GET, "/v1/incidents/INC-8", Some(&env.prod), None)
        .await;
    assert_eq!(status, 200, "{timeline}");
    let steps: Vec<String> = kinds_and_details(&timeline).into_iter().map(|(k, _)| k).collect();
    assert_eq!(steps, ["trip", "reset"], "{timeline:#}");
    assert_eq!(timeline["events"][1]["actor"], "expiry", "{timeline:#}");
}
