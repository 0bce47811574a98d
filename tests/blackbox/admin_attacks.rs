//! Attacks on administration through the real binary (SECURITY-CASES ADM-01, ADM-04,
//! ADM-05, ADM-06, ADM-11, KILL-06): a tenant admin approving isolation changes, racing
//! approvals, write paths around the four-eyes flow, forged or editable audit records,
//! SSO callbacks pointed elsewhere, damaged or misplaced operator tokens, and an
//! automation token that may only trip. Each test checks the refusal, that nothing
//! changed, and that the refusal is on the record where the SPEC says it is.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

const PUBLIC: &str = "/public/ping";

/// The reason text that would forge a log line if a newline reached a line-based log.
const FORGED_REASON: &str = "x\n2026-01-01T00:00:00Z INFO approved by root";

/// The start of the forged line.
const FORGED_LINE: &str = "2026-01-01T00:00:00Z";

/// A gateway whose prod tier has operators `olivia`, `oscar` and `paula` and the
/// automation token `siem` (`breaker:trip` on acme), whose staging tier has `sven`, and
/// whose acme and globex tenants each have a signed-in tenant admin.
struct Env {
    ups: Upstreams,
    gw: Gateway,
    olivia: String,
    oscar: String,
    paula: String,
    sven: String,
    siem: String,
    users: Accounts,
    /// acme's tenant admin, signed in on acme.test.
    acme_admin: Agent,
    /// globex's tenant admin, signed in on globex.test.
    globex_admin: Agent,
    client: reqwest::Client,
}

async fn env() -> Env {
    let [olivia, oscar, paula, sven, siem] = std::array::from_fn(|_| random_hex(24));
    let (ups, gw) = start_with(|f| {
        f.prod_operators = operators(&[("olivia", &olivia), ("oscar", &oscar), ("paula", &paula)]);
        f.staging_operators = operators(&[("sven", &sven)]);
        f.automation = vec![AutomationSpec {
            tier: "prod".into(),
            name: "siem".into(),
            token_sha256: sha256_hex(siem.as_bytes()),
            scopes: vec!["breaker:trip".into()],
            tenants: vec!["acme".into()],
        }];
    })
    .await;
    let users = Accounts::open(&gw).await;
    let ada = users.create("acme", "ada", &["tenant-admin"], true).await;
    let gus = users.create("globex", "gus", &["tenant-admin"], true).await;
    let mut acme_admin = Agent::new(&gw, "acme.test");
    acme_admin.api_login(&ada).await;
    let mut globex_admin = Agent::new(&gw, "globex.test");
    globex_admin.api_login(&gus).await;
    let client = admin_client();
    Env {
        ups,
        gw,
        olivia,
        oscar,
        paula,
        sven,
        siem,
        users,
        acme_admin,
        globex_admin,
        client,
    }
}

impl Env {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> AdminAnswer {
        admin_call(&self.client, self.gw.admin, method, path, token, body).await
    }

    /// Proposes a `tenant.update` of `tenant` as olivia; panics unless 201. Returns
    /// (id, digest).
    async fn propose(&self, tenant: &str, change: Value) -> (String, String) {
        let r = self
            .call(
                Method::POST,
                "/v1/changes",
                &self.olivia,
                Some(json!({"kind": "tenant.update", "target": tenant, "change": change, "reason": "ticket OPS-9"})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        (json_str(&r.body["id"]), json_str(&r.body["digest"]))
    }

    async fn change_status(&self, id: &str) -> String {
        let r = self
            .call(Method::GET, &format!("/v1/changes/{id}"), &self.oscar, None)
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        json_str(&r.body["status"])
    }

    /// Every audit record of tier prod, oldest first.
    async fn audit(&self) -> Vec<Value> {
        let r = self.call(Method::GET, "/v1/audit?limit=1000", &self.oscar, None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_array().expect("audit array").clone()
    }

    async fn audit_of(&self, action: &str) -> Vec<Value> {
        self.audit()
            .await
            .into_iter()
            .filter(|r| r["action"] == action)
            .collect()
    }

    /// Every policy file, by path, and the digest the gateway serves.
    async fn policy_state(&self) -> (Vec<(String, String)>, Value) {
        let mut files = Vec::new();
        for sub in ["", "tiers", "tenants"] {
            let dir = self.gw.policy_dir.join(sub);
            for entry in std::fs::read_dir(&dir).expect("policy dir") {
                let path = entry.expect("entry").path();
                if path.is_file() {
                    files.push((
                        path.display().to_string(),
                        std::fs::read_to_string(&path).expect("read"),
                    ));
                }
            }
        }
        files.sort();
        (files, self.gw.readyz().await["policy"]["digest"].clone())
    }

    /// Stdout and stderr of the gateway so far.
    fn all_logs(&self) -> String {
        self.gw.logs()
    }
}

/// A same-origin JSON call of a signed-in agent on its tenant host.
async fn agent_json(agent: &mut Agent, method: http::Method, path: &str, body: Option<Value>) -> Reply {
    let origin = agent.origin();
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    agent.send(method, path, &[("origin", &origin)], body).await
}

/// If this broke, a tenant admin (whose only credential is a session on their tenant's
/// host) could approve an isolation change of their own or another tenant, through the
/// admin API or the tenant pages, or the proposer's own refused approval would leave no
/// record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_cannot_approve_an_isolation_change() {
    let mut env = env().await;
    let moved_to = RecordingUpstream::start().await;
    let own = env.propose("acme", json!({"upstream": moved_to.url()})).await;
    let other = env.propose("globex", json!({"upstream": moved_to.url()})).await;
    let policy_before = env.policy_state().await;
    let session = env.acme_admin.session("prod").expect("acme admin session");
    let cookie = format!("__Host-portcullis-prod={session}");

    for (id, digest) in [&own, &other] {
        let approve = format!("/v1/changes/{id}/approve");
        let body = json!({ "digest": digest });
        // Every way the session could be presented to the admin API.
        for headers in [
            vec![("authorization", format!("Bearer {session}"))],
            vec![("cookie", cookie.clone())],
            vec![
                ("cookie", cookie.clone()),
                ("authorization", format!("Bearer {session}")),
            ],
        ] {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let r = admin_send(&env.client, env.gw.admin, Method::POST, &approve, &headers, Some(&body)).await;
            assert_eq!(r.status, 401, "{headers:?}: {:?}", r.body);
        }
        // The tenant pages and their JSON twin serve no approval.
        for path in [
            format!("/.portcullis/api/admin/changes/{id}/approve"),
            format!("/.portcullis/api/changes/{id}/approve"),
            format!("/.portcullis/admin/changes/{id}/approve"),
            format!("/.portcullis/v1/changes/{id}/approve"),
        ] {
            let r = agent_json(&mut env.acme_admin, http::Method::POST, &path, Some(body.clone())).await;
            assert_eq!(r.status, 404, "{path}: {}", r.body);
            let r = env
                .acme_admin
                .post_form(&path, &[("digest", digest.as_str()), ("action", "approve")])
                .await;
            assert_eq!(r.status, 404, "form {path}: {}", r.body);
        }
        // Nor has globex's admin, on their own host.
        let r = agent_json(
            &mut env.globex_admin,
            http::Method::POST,
            &format!("/.portcullis/api/admin/changes/{id}/approve"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(env.change_status(id).await, "pending");
    }
    // The admin API is not served on the public listener: `/v1/...` on a tenant host is
    // the tenant's own app (an authenticated route), never the gateway's approval.
    let r = agent_json(
        &mut env.acme_admin,
        http::Method::POST,
        &format!("/v1/changes/{}/approve", own.0),
        Some(json!({ "digest": own.1 })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.ups.acme.count(), 1, "the request went to acme's app");

    assert_eq!(env.policy_state().await, policy_before, "the policy changed");
    assert_eq!(moved_to.count(), 0);
    assert!(env.audit_of("change.approve").await.is_empty());
    assert!(env.audit_of("change.apply").await.is_empty());
    // The admin API logs each session-as-token attempt as a refused call.
    let approve = "POST /v1/changes/{id}/approve";
    env.gw
        .await_security_event("admin_access", |e| {
            e["event.outcome"] == "failure" && e["portcullis.target"] == approve && e["user.id"].is_null()
        })
        .await;

    // The proposer's own approval is refused and audited, with who and from where.
    let r = env
        .call(
            Method::POST,
            &format!("/v1/changes/{}/approve", own.0),
            &env.olivia,
            Some(json!({ "digest": own.1 })),
        )
        .await;
    assert_eq!((r.status, r.body["error"].clone()), (403, json!("same_person")));
    let denied = env.audit_of("change.approve_denied").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["actor"], "operator:olivia");
    assert_eq!(denied[0]["source_ip"], "127.0.0.1");
    assert_eq!(denied[0]["target"], "tenant:acme");
    assert_eq!(denied[0]["after"]["denied"], "self-approval");
    assert_eq!(env.change_status(&own.0).await, "pending");
}

/// If this broke, one approved change could be applied twice, or two second operators
/// approving at the same moment could both apply it (two reloads, two audit records) or
/// make the gateway fail (5xx).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_apply_a_change_exactly_once() {
    let env = env().await;
    let moved_to = RecordingUpstream::start().await;
    let (id, digest) = env.propose("acme", json!({"upstream": moved_to.url()})).await;
    let approvers = [env.oscar.clone(), env.paula.clone()];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, admin) = (env.client.clone(), env.gw.admin);
        let auth = format!("Bearer {}", approvers[i % 2]);
        let (path, body) = (format!("/v1/changes/{id}/approve"), json!({ "digest": digest }));
        tasks.push(tokio::spawn(async move {
            admin_send(
                &client,
                admin,
                Method::POST,
                &path,
                &[("authorization", &auth)],
                Some(&body),
            )
            .await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{answers:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 19, "{answers:?}");

    // Applied again, afterwards, by either: refused, nothing more.
    for token in [&env.oscar, &env.paula] {
        let r = env
            .call(
                Method::POST,
                &format!("/v1/changes/{id}/approve"),
                token,
                Some(json!({ "digest": digest })),
            )
            .await;
        assert_eq!(r.status, 409, "{:?}", r.body);
    }
    assert_eq!(env.change_status(&id).await, "applied");
    assert_eq!(env.audit_of("change.approve").await.len(), 1);
    assert_eq!(env.audit_of("change.apply").await.len(), 1);
    let file = std::fs::read_to_string(env.gw.policy_dir.join("tenants/acme.toml")).unwrap();
    assert_eq!(file.matches(&moved_to.url()).count(), 1, "{file}");
    // One reload, for this change.
    let reloads = eventually(Duration::from_secs(5), || async {
        let n = env
            .gw
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "policy reloaded" && l["trigger"].as_str().is_some_and(|t| t.contains(&id)))
            .count();
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(reloads, Some(1), "{}", env.gw.logs());
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!((moved_to.count(), env.ups.acme.count()), (1, 0));
}

/// The write routes the admin API serves, as the OpenAPI document lists them (the
/// document and the router are compared both ways by `openapi.rs`).
const SERVED_WRITES: &[&str] = &[
    "POST /v1/reload",
    "POST /v1/changes",
    "PATCH /v1/changes/{id}",
    "POST /v1/changes/{id}/approve",
    "POST /v1/changes/{id}/reject",
    "PUT /v1/tiers/{tier}/breaker",
    "DELETE /v1/tiers/{tier}/breaker",
    "PUT /v1/tenants/{tenant}/breaker",
    "DELETE /v1/tenants/{tenant}/breaker",
    "PUT /v1/tenants/{tenant}/accounts/{subject}/breaker",
    "DELETE /v1/tenants/{tenant}/accounts/{subject}/breaker",
];

/// If this broke, tenant hosts, tier or upstream (isolation settings) could be written
/// around the four-eyes flow: through a config or tenant endpoint, a bulk import, the
/// tenant admin's API, or by another tier's operator; or a new write route would have
/// been added to the admin API without this list (and its review) noticing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_settings_have_no_write_path_but_the_change_flow() {
    let mut env = env().await;
    let r = env.call(Method::GET, "/v1/openapi.json", &env.olivia, None).await;
    assert_eq!(r.status, 200);
    let mut writes = Vec::new();
    for (path, ops) in r.body["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            if method != "get" && method != "parameters" {
                writes.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    writes.sort();
    let mut expected: Vec<String> = SERVED_WRITES.iter().map(|w| w.to_string()).collect();
    expected.sort();
    assert_eq!(
        writes, expected,
        "the admin API's write routes changed: review them here"
    );

    let before = env.policy_state().await;
    let isolation = json!({"hosts": ["acme.test", "globex.test"], "tier": "staging", "upstream": "http://127.0.0.1:1"});
    let bulk = json!({"tenants": [{"id": "acme", "hosts": ["globex.test"], "tier": "staging"}]});
    let attempts: Vec<(Method, &str, &Value)> = vec![
        (Method::PUT, "/api/config", &isolation),
        (Method::PUT, "/v1/config", &isolation),
        (Method::PATCH, "/v1/config", &isolation),
        (Method::POST, "/v1/config", &isolation),
        (Method::PUT, "/v1/policy", &isolation),
        (Method::PATCH, "/v1/tenants/acme", &isolation),
        (Method::PUT, "/v1/tenants/acme", &isolation),
        (Method::POST, "/v1/tenants", &bulk),
        (Method::PATCH, "/v1/tenants", &bulk),
        (Method::POST, "/v1/import", &bulk),
        (Method::POST, "/v1/tenants/import", &bulk),
        (Method::POST, "/v1/bulk", &bulk),
        (Method::PATCH, "/v1/tiers/prod", &isolation),
        (Method::PUT, "/v1/tiers/prod/credentials", &isolation),
        (Method::PUT, "/v1/changes", &isolation),
        (Method::PUT, "/v1/tenants/acme/hosts", &isolation),
        (Method::POST, "/v1/reload?tenant=acme", &isolation),
    ];
    for token in [&env.olivia.clone(), &env.sven.clone()] {
        for (method, path, body) in &attempts {
            let r = env.call(method.clone(), path, token, Some((*body).clone())).await;
            // `/v1/reload` serves, but takes no body: it re-reads the reviewed files.
            let refused = if *path == "/v1/reload?tenant=acme" {
                r.status == 200 && r.body["tiers"] == json!([])
            } else {
                matches!(r.status, 404 | 405)
            };
            assert!(refused, "{method} {path}: {} {:?}", r.status, r.body);
        }
    }
    // Another tier's operator cannot reach prod through the served routes either.
    let (id, digest) = env
        .propose("acme", json!({"hosts": ["acme.test", "www.acme.test"]}))
        .await;
    let staging_attempts = [
        (
            Method::POST,
            "/v1/changes".to_string(),
            json!({"kind": "tenant.update", "target": "acme", "change": isolation, "reason": "r"}),
        ),
        (
            Method::POST,
            "/v1/changes".to_string(),
            json!({"kind": "tier.credentials", "target": "prod", "change": {"cookie": "env:X"}, "reason": "r"}),
        ),
        (
            Method::PATCH,
            format!("/v1/changes/{id}"),
            json!({"change": {"hosts": ["globex.test"]}}),
        ),
        (
            Method::POST,
            format!("/v1/changes/{id}/approve"),
            json!({"digest": digest}),
        ),
        (Method::POST, format!("/v1/changes/{id}/reject"), json!({"reason": "r"})),
        (
            Method::PUT,
            "/v1/tiers/prod/breaker".to_string(),
            json!({"reason": "r"}),
        ),
        (
            Method::PUT,
            "/v1/tenants/acme/breaker".to_string(),
            json!({"reason": "r"}),
        ),
    ];
    for (method, path, body) in staging_attempts {
        let r = env.call(method.clone(), &path, &env.sven, Some(body)).await;
        assert_eq!(r.status, 404, "{method} {path}: {:?}", r.body);
    }
    assert_eq!(env.change_status(&id).await, "pending");
    // The tenant admin's API has no tenant settings to write.
    for path in [
        "/.portcullis/api/admin/tenant",
        "/.portcullis/api/admin/config",
        "/.portcullis/api/admin/hosts",
        "/.portcullis/api/admin/upstream",
        "/.portcullis/api/admin/tier",
        "/.portcullis/api/admin/import",
    ] {
        for method in [http::Method::PUT, http::Method::PATCH, http::Method::POST] {
            let r = agent_json(&mut env.acme_admin, method.clone(), path, Some(isolation.clone())).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        }
    }
    assert_eq!(env.policy_state().await, before, "the policy changed");
    let r = env.call(Method::GET, "/v1/changes", &env.olivia, None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{:?}", r.body);
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!(env.ups.acme.count(), 1);
}

/// If this broke, an audit record would lack who, from where, through what, on what or
/// why; a reason could forge a line in the gateway's log or the audit export; or the
/// tenant admin's audit view could be used to change or remove records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_is_audited_in_full_and_no_reason_forges_a_line() {
    let mut env = env().await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let bob = env.users.create("acme", "bob", &[], true).await;
    let mut bob_agent = Agent::new(&env.gw, "acme.test");
    bob_agent.api_login(&bob).await;
    let bob_session = bob_agent.current_session_id().await;

    // Ten mutations, three of them refused.
    let ok = |r: &AdminAnswer, what: &str| assert_eq!(r.status, 200, "{what}: {:?}", r.body);
    let r = env
        .call(
            Method::PUT,
            "/v1/tenants/globex/breaker",
            &env.olivia,
            Some(json!({"reason": "drill 1"})),
        )
        .await;
    ok(&r, "trip globex");
    let r = env
        .call(
            Method::DELETE,
            "/v1/tenants/globex/breaker",
            &env.olivia,
            Some(json!({"reason": "drill over"})),
        )
        .await;
    ok(&r, "reset globex");
    let r = env
        .call(
            Method::PUT,
            "/v1/tenants/globex/accounts/gina/breaker",
            &env.oscar,
            Some(json!({"reason": "phished"})),
        )
        .await;
    ok(&r, "trip gina");
    let (id, digest) = env
        .propose("acme", json!({"hosts": ["acme.test", "www.acme.test"]}))
        .await;
    let approve = format!("/v1/changes/{id}/approve");
    let r = env
        .call(Method::POST, &approve, &env.olivia, Some(json!({ "digest": digest })))
        .await;
    assert_eq!(r.status, 403, "self-approval: {:?}", r.body);
    let r = env
        .call(Method::POST, &approve, &env.oscar, Some(json!({ "digest": digest })))
        .await;
    ok(&r, "approve");
    let r = env
        .call(Method::DELETE, "/v1/tenants/acme/breaker", &env.siem, None)
        .await;
    assert_eq!(r.status, 403, "automation reset: {:?}", r.body);
    let r = env
        .acme_admin
        .delete(&format!("/.portcullis/api/admin/sessions/{bob_session}"))
        .await;
    assert_eq!(r.status, 200, "end bob's session: {}", r.body);
    let r = agent_json(
        &mut env.acme_admin,
        http::Method::PUT,
        "/.portcullis/api/admin/accounts/bob/breaker",
        Some(json!({"reason": "left the company"})),
    )
    .await;
    assert_eq!(r.status, 200, "trip bob: {}", r.body);
    let r = agent_json(
        &mut env.acme_admin,
        http::Method::PUT,
        "/.portcullis/api/admin/accounts/ada/breaker",
        Some(json!({"reason": "self"})),
    )
    .await;
    assert!(r.status >= 400 && r.status < 500, "own account: {}", r.body);

    // A reason with a forged log line: refused, or kept as data (never a line of its own).
    let (other, _) = env
        .propose("globex", json!({"hosts": ["globex.test", "www.globex.test"]}))
        .await;
    let forged = [
        (
            Method::PUT,
            "/v1/tenants/acme/breaker".to_string(),
            json!({"reason": FORGED_REASON}),
        ),
        (
            Method::POST,
            "/v1/changes".to_string(),
            json!({"kind": "tenant.update", "target": "acme", "change": {"hosts": ["acme.test"]}, "reason": FORGED_REASON}),
        ),
        (
            Method::PATCH,
            format!("/v1/changes/{other}"),
            json!({"reason": FORGED_REASON}),
        ),
        (
            Method::POST,
            format!("/v1/changes/{other}/reject"),
            json!({"reason": FORGED_REASON}),
        ),
    ];
    for (method, path, body) in forged {
        let r = env.call(method.clone(), &path, &env.olivia, Some(body)).await;
        assert_eq!(r.status, 400, "{method} {path}: {:?}", r.body);
    }
    let r = agent_json(
        &mut env.acme_admin,
        http::Method::PUT,
        "/.portcullis/api/admin/accounts/carl/breaker",
        Some(json!({"reason": FORGED_REASON, "message": FORGED_REASON})),
    )
    .await;
    assert!(matches!(r.status, 200 | 400), "{}", r.body);

    let records = env.audit().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let actions: Vec<&str> = records.iter().filter_map(|r| r["action"].as_str()).collect();
    for wanted in [
        "breaker.trip",
        "breaker.reset",
        "change.propose",
        "change.approve_denied",
        "change.approve",
        "change.apply",
        "breaker.refused",
        "session.revoke",
    ] {
        assert!(actions.contains(&wanted), "no {wanted} record: {actions:?}");
    }
    assert!(records.len() >= 10, "{records:#?}");
    let mut prev: Option<&Value> = None;
    for r in &records {
        // UTC by construction: unix seconds, within this test's run.
        let time = r["time"].as_i64().unwrap_or_else(|| panic!("time: {r}"));
        assert!(time >= started - 1 && time <= now + 1, "{r}");
        let actor = json_str(&r["actor"]);
        assert!(
            ["operator:", "automation:", "user:"]
                .iter()
                .any(|p| actor.starts_with(p)),
            "{r}"
        );
        assert!(["api", "console"].contains(&json_str(&r["system"]).as_str()), "{r}");
        assert_eq!(r["source_ip"], "127.0.0.1", "{r}");
        assert_eq!(r["tier"], "prod", "{r}");
        assert!(r["reason"].is_string(), "{r}");
        let target = json_str(&r["target"]);
        let tenant = target
            .strip_prefix("tenant:")
            .or_else(|| target.strip_prefix("account:"));
        match tenant {
            Some(rest) => assert_eq!(r["tenant"].as_str(), rest.split(':').next(), "{r}"),
            None => assert!(target.starts_with("tier:"), "{r}"),
        }
        // What came of a refused call is on its record.
        match r["action"].as_str() {
            Some("breaker.refused") => assert_eq!(r["after"]["status"], 403, "{r}"),
            Some("change.approve_denied") => assert_eq!(r["after"]["denied"], "self-approval", "{r}"),
            _ => {}
        }
        if let Some(p) = prev {
            assert_eq!(r["prev_hash"], p["hash"], "chain broken at {r}");
        }
        // A reason with a line break is only ever the forged one, kept as data.
        if json_str(&r["reason"]).contains('\n') {
            assert_eq!(r["reason"], FORGED_REASON, "{r}");
        }
        prev = Some(r);
    }
    let bob_trip = records
        .iter()
        .find(|r| r["action"] == "breaker.trip" && r["target"] == "account:acme:bob")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        (&bob_trip["actor"], &bob_trip["system"]),
        (&json!("user:ada"), &json!("console"))
    );

    // The tenant admin's audit view is read only, and nothing above changed a record.
    let before = env.acme_admin.get("/.portcullis/api/admin/audit").await.body;
    for method in [
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::PATCH,
    ] {
        for path in ["/.portcullis/api/admin/audit", "/.portcullis/admin/audit"] {
            let r = agent_json(&mut env.acme_admin, method.clone(), path, Some(json!({"seq": 1}))).await;
            assert!(
                matches!(r.status, 404 | 405),
                "{method} {path}: {} {}",
                r.status,
                r.body
            );
        }
        let r = agent_json(
            &mut env.acme_admin,
            method.clone(),
            "/.portcullis/api/admin/audit/1",
            None,
        )
        .await;
        assert!(
            matches!(r.status, 404 | 405),
            "{method} audit/1: {} {}",
            r.status,
            r.body
        );
        let r = env
            .call(
                Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                "/v1/audit/1",
                &env.oscar,
                None,
            )
            .await;
        assert!(matches!(r.status, 404 | 405), "{method} /v1/audit/1: {:?}", r.body);
    }
    let r = env
        .acme_admin
        .post_form("/.portcullis/admin/audit", &[("seq", "1")])
        .await;
    assert!(matches!(r.status, 404 | 405), "form: {} {}", r.status, r.body);
    assert_eq!(env.acme_admin.get("/.portcullis/api/admin/audit").await.body, before);
    assert_eq!(env.audit().await, records, "an audit record changed");

    // No line of the log or of the audit export starts with the forged text.
    let (ok, export, err) = crate::cli::portcullis(&env.gw, &["audit", "export", "--tier", "prod"], "").await;
    assert!(ok, "audit export: {err}");
    assert!(export.lines().count() >= records.len(), "{export}");
    for (what, text) in [("log", env.all_logs()), ("export", export), ("export stderr", err)] {
        for line in text.lines() {
            assert!(
                !line.trim_start().starts_with(FORGED_LINE),
                "forged line in the {what}: {line}"
            );
        }
    }
}

/// If this broke, a tenant admin could make their IdP send users (and their codes) to
/// another tenant's host or an attacker's domain, or read the client secret back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_callbacks_stay_on_the_tenants_host_and_the_secret_is_never_shown() {
    use crate::sso_wizard::{API, SECRET_B, ivy, setup};
    let mut s = setup(&[ivy()]).await;
    let port = s.gw.public.port();
    let own = format!("{}/.portcullis/callback", s.admin.origin());
    for field in [
        "redirect_uri",
        "redirect_uris",
        "callback_url",
        "post_logout_redirect_uri",
        "backchannel_logout_uri",
        "allowed_redirects",
    ] {
        for elsewhere in [
            "https://evil.example/.portcullis/callback".to_string(),
            format!("http://acme.test:{port}/.portcullis/callback"),
        ] {
            let value = if field.ends_with('s') {
                json!([elsewhere])
            } else {
                json!(elsewhere)
            };
            let r = s.put_draft_with("gw-b", SECRET_B, json!({ field: value })).await;
            assert_eq!(r.status, 400, "{field}: {}", r.body);
            assert!(
                r.json()["message"].as_str().unwrap_or_default().contains(field),
                "{field}: {}",
                r.body
            );
        }
    }
    // The wizard's page form: the same fields are refused by name.
    let page = s.admin.get("/.portcullis/admin/sso").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_string();
    let issuer = s.idp.issuer();
    for field in ["redirect_uri", "post_logout_redirect_uri"] {
        let r = s
            .admin
            .post_form(
                "/.portcullis/admin/sso",
                &[
                    ("csrf", csrf.as_str()),
                    ("action", "save"),
                    ("issuer", issuer.as_str()),
                    ("client_id", "gw-b"),
                    ("client_secret", SECRET_B),
                    ("scopes", "openid profile"),
                    ("mfa", "required"),
                    (field, "https://evil.example/.portcullis/callback"),
                ],
            )
            .await;
        assert_eq!(r.status, 400, "form {field}: {}", r.body);
        assert!(r.body.contains(field), "the page names {field}: {}", r.body);
        assert!(!r.body.contains(SECRET_B), "the page shows the secret");
    }
    let r = s.call(http::Method::GET, API, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["draft"].is_null(), "a refused save was stored: {}", r.body);
    let r = s.call(http::Method::GET, "/.portcullis/api/admin/audit", None).await;
    assert!(!r.body.contains("sso."), "a refused save was audited: {}", r.body);

    // A draft names the tenant's own callback; the secret reads back only as "set".
    let r = s.put_draft("gw-b", SECRET_B).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["redirect_uri"], own.as_str(), "{}", r.body);
    let r = s.call(http::Method::GET, API, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["draft"]["client_secret_set"], true, "{}", r.body);
    let page = s.admin.get("/.portcullis/admin/sso").await;
    let records = s.call(http::Method::GET, "/.portcullis/api/admin/audit", None).await;
    assert!(records.body.contains("sso.update"), "{}", records.body);
    let operator =
        s.gw.client()
            .get(s.gw.admin_url("/v1/audit?tenant=initech"))
            .bearer_auth(&s.operator_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    for (what, text) in [
        ("GET", r.body.as_str()),
        ("page", page.body.as_str()),
        ("tenant audit", records.body.as_str()),
        ("operator audit", operator.as_str()),
        ("log", s.gw.logs().as_str()),
    ] {
        assert!(!text.contains(SECRET_B), "the secret in the {what}");
    }
    assert!(!records.body.contains("\"client_secret\""), "{}", records.body);
}

/// If this broke, a tenant admin's session could act on operator-only endpoints, a
/// damaged operator token would still work, or an operator token sent in a URL would be
/// accepted or written to the gateway's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_refuse_tenant_admins_and_damaged_tokens() {
    let env = env().await;
    let session = env.acme_admin.session("prod").expect("session");
    let operator_only: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/v1/breakers", None),
        (Method::GET, "/v1/changes", None),
        (Method::GET, "/v1/audit", None),
        (Method::PUT, "/v1/tenants/globex/breaker", Some(json!({"reason": "r"}))),
        (Method::PUT, "/v1/tenants/acme/breaker", Some(json!({"reason": "r"}))),
        (Method::PUT, "/v1/tiers/prod/breaker", Some(json!({"reason": "r"}))),
        (
            Method::POST,
            "/v1/changes",
            Some(json!({"kind": "tier.credentials", "target": "prod", "change": {"cookie": "env:X"}, "reason": "r"})),
        ),
        (Method::POST, "/v1/reload", None),
    ];
    let mut damaged = env.olivia.clone();
    let last = if damaged.ends_with('0') { "1" } else { "0" };
    damaged.replace_range(damaged.len() - 1.., last);
    let truncated = env.olivia[..env.olivia.len() - 1].to_string();
    let cookie = format!("__Host-portcullis-prod={session}");
    let bad_headers: Vec<(&str, String)> = vec![
        ("authorization", format!("Bearer {session}")),
        ("cookie", cookie),
        ("authorization", format!("Bearer {damaged}")),
        ("authorization", format!("Bearer {truncated}")),
        ("authorization", env.olivia.clone()),
        ("authorization", format!("Basic {}", env.olivia)),
        ("authorization", format!("Bearer {}x", env.olivia)),
    ];
    for (method, path, body) in &operator_only {
        for (name, value) in &bad_headers {
            let r = admin_send(
                &env.client,
                env.gw.admin,
                method.clone(),
                path,
                &[(name, value.as_str())],
                body.as_ref(),
            )
            .await;
            assert_eq!(r.status, 401, "{method} {path} with {name}: {:?}", r.body);
        }
        // The token in the URL is not read from there.
        let sep = if path.contains('?') { '&' } else { '?' };
        let in_query = format!("{path}{sep}access_token={}", env.olivia);
        let r = admin_send(&env.client, env.gw.admin, method.clone(), &in_query, &[], body.as_ref()).await;
        assert!(matches!(r.status, 400 | 401), "{method} {in_query}: {:?}", r.body);
    }
    // Nor on the public listener.
    let r = raw_get(
        env.gw.public,
        "acme.test",
        &format!("/.portcullis/api/whoami?access_token={}", env.olivia),
    )
    .await;
    assert_eq!(r.status, 401);
    // The tenant admin's own API has no operator endpoints.
    let mut admin = Agent::new(&env.gw, "acme.test");
    admin.cookies = env.acme_admin.cookies.clone();
    for path in [
        "/.portcullis/api/admin/tenants",
        "/.portcullis/api/admin/tenants/globex/breaker",
        "/.portcullis/api/admin/breaker",
        "/.portcullis/api/admin/tiers/prod",
        "/.portcullis/api/admin/changes",
    ] {
        let r = agent_json(&mut admin, http::Method::PUT, path, Some(json!({"reason": "r"}))).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    let r = env.call(Method::GET, "/v1/breakers", &env.oscar, None).await;
    assert_eq!(r.body["breakers"], json!([]), "{:?}", r.body);
    assert_eq!(raw_get(env.gw.public, "globex.test", PUBLIC).await.status, 200);
    let r = env.call(Method::GET, "/v1/changes", &env.oscar, None).await;
    assert_eq!(r.body, json!([]));

    let logs = env.all_logs();
    for (what, secret) in [
        ("operator token", &env.olivia),
        ("damaged token", &damaged),
        ("session", &session),
    ] {
        assert!(!logs.contains(secret.as_str()), "the {what} is in the gateway's log");
    }
    assert!(
        !logs.contains(&truncated),
        "the truncated token is in the gateway's log"
    );
}

/// If this broke, an automation token meant only to trip breakers could lift them, read
/// or change SSO, list or end sessions, read the audit log or propose changes; or its
/// refusals would leave no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_scoped_token_can_only_trip() {
    let mut env = env().await;
    let (id, digest) = env
        .propose("acme", json!({"hosts": ["acme.test", "www.acme.test"]}))
        .await;
    let policy_before = env.policy_state().await;
    let ada_session = env.acme_admin.current_session_id().await;
    let refused_served: Vec<(Method, String, Option<Value>)> = vec![
        (Method::DELETE, "/v1/tenants/acme/breaker".into(), None),
        (Method::DELETE, "/v1/tenants/acme/accounts/ada/breaker".into(), None),
        (Method::DELETE, "/v1/tiers/prod/breaker".into(), None),
        (
            Method::POST,
            "/v1/changes".into(),
            Some(
                json!({"kind": "tenant.update", "target": "acme", "change": {"upstream": "http://127.0.0.1:1"}, "reason": "r"}),
            ),
        ),
        (Method::GET, "/v1/changes".into(), None),
        (
            Method::PATCH,
            format!("/v1/changes/{id}"),
            Some(json!({"reason": "mine now"})),
        ),
        (
            Method::POST,
            format!("/v1/changes/{id}/approve"),
            Some(json!({ "digest": digest })),
        ),
        (Method::POST, format!("/v1/changes/{id}/reject"), None),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/breakers".into(), None),
        (Method::GET, "/v1/incidents/INC-1".into(), None),
        (Method::POST, "/v1/reload".into(), None),
    ];
    for (method, path, body) in &refused_served {
        let r = env.call(method.clone(), path, &env.siem, body.clone()).await;
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.body);
    }
    // SSO and sessions are not on the admin API at all.
    for (method, path) in [
        (Method::PUT, "/v1/tenants/acme/sso"),
        (Method::GET, "/v1/tenants/acme/sessions"),
        (Method::GET, "/v1/sessions"),
        (Method::DELETE, "/v1/sessions/x"),
    ] {
        let r = env.call(method.clone(), path, &env.siem, Some(json!({}))).await;
        assert_eq!(r.status, 404, "{method} {path}: {:?}", r.body);
    }
    // On the tenant's host the token is no session.
    let mut bot = Agent::new(&env.gw, "acme.test");
    let auth = format!("Bearer {}", env.siem);
    let sso = json!({"issuer": "https://evil.example", "client_id": "x", "client_secret": "y"});
    let end = format!("/.portcullis/api/admin/sessions/{ada_session}");
    for (method, path, body) in [
        (http::Method::GET, "/.portcullis/api/admin/sso", None),
        (http::Method::PUT, "/.portcullis/api/admin/sso", Some(&sso)),
        (http::Method::POST, "/.portcullis/api/admin/sso/activate", None),
        (http::Method::GET, "/.portcullis/api/admin/sessions", None),
        (http::Method::DELETE, end.as_str(), None),
        (http::Method::GET, "/.portcullis/api/sessions", None),
    ] {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let r = bot.send(method.clone(), path, &[("authorization", &auth)], body).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
    }

    // Nothing changed: the session lives, no SSO draft, the change is as proposed.
    let r = env.acme_admin.get("/.portcullis/api/whoami").await;
    assert_eq!(r.status, 200, "the admin's session ended: {}", r.body);
    let r = env.acme_admin.get("/.portcullis/api/admin/sso").await;
    assert!(r.json()["draft"].is_null(), "{}", r.body);
    let r = env
        .call(Method::GET, &format!("/v1/changes/{id}"), &env.oscar, None)
        .await;
    assert_eq!(
        (r.body["status"].clone(), r.body["digest"].clone()),
        (json!("pending"), json!(digest))
    );
    assert_eq!(env.policy_state().await, policy_before);

    // Each refusal of a served route is audited in the token's tier, and logged.
    let refused: Vec<Value> = env
        .audit()
        .await
        .into_iter()
        .filter(|r| r["actor"] == "automation:siem")
        .collect();
    assert_eq!(refused.len(), refused_served.len(), "{refused:#?}");
    for r in &refused {
        assert!(json_str(&r["action"]).ends_with(".refused"), "{r}");
        assert_eq!(r["after"]["status"], 403, "{r}");
        assert_eq!(r["source_ip"], "127.0.0.1", "{r}");
    }
    env.gw
        .await_security_event("admin_access", |e| {
            e["user.id"] == "automation:siem" && e["event.outcome"] == "failure"
        })
        .await;

    // What it may do: trip its tenant; and still never reset it.
    let r = env
        .call(
            Method::PUT,
            "/v1/tenants/acme/breaker",
            &env.siem,
            Some(json!({"reason": "alert 7"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = env
        .call(Method::DELETE, "/v1/tenants/acme/breaker", &env.siem, None)
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 423);
}
