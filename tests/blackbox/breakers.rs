//! Kill switches (security circuit breakers) seen from outside: the admin API
//! (`PUT|DELETE /v1/{tiers,tenants,tenants/{t}/accounts}/.../breaker`, `GET /v1/breakers`,
//! `GET /v1/audit`), what tenants' users get while a switch is on (`423`, the status
//! endpoint and login page), who may trip what (operators per tier, automation tokens per
//! tenant), expiry, idempotency, drills, open WebSockets, the CLI, and the hash-chained
//! audit log (SPEC "Request path" step 3, "Kill switches", "Changes, audit, four eyes",
//! "Operator console and observability").

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::*;

const PROTECTED: &str = "/app/data";
const PUBLIC: &str = "/public/ping";

/// A gateway with an operator in each tier and an automation token (`siem`) of tier
/// prod that may trip breakers of tenant acme only.
struct Env {
    ups: Upstreams,
    gw: Gateway,
    /// Token of operator `olivia` (tier prod).
    prod: String,
    /// Token of operator `sven` (tier staging).
    staging: String,
    /// Token of automation `siem` (tier prod, tenant acme, `breaker:trip`).
    siem: String,
    client: reqwest::Client,
}

/// An answer of the admin API.
#[derive(Debug)]
struct AdminReply {
    status: u16,
    /// `x-request-id` of the answer, if any.
    request_id: Option<String>,
    body: String,
}

impl AdminReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {} body {:?}", self.status, self.body))
    }
}

async fn env() -> Env {
    let prod = random_hex(24);
    let staging = random_hex(24);
    let siem = random_hex(24);
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![("olivia".into(), sha256_hex(prod.as_bytes()))];
        f.staging_operators = vec![("sven".into(), sha256_hex(staging.as_bytes()))];
        f.automation = vec![AutomationSpec {
            tier: "prod".into(),
            name: "siem".into(),
            token_sha256: sha256_hex(siem.as_bytes()),
            scopes: vec!["breaker:trip".into()],
            tenants: vec!["acme".into()],
        }];
    })
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    Env {
        ups,
        gw,
        prod,
        staging,
        siem,
        client,
    }
}

impl Env {
    /// Any admin API call: optional bearer token, optional body with its content type,
    /// extra headers.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> AdminReply {
        let mut req = self.client.request(method, self.gw.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        AdminReply {
            status: resp.status().as_u16(),
            request_id: resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    /// `PUT <path>` with a JSON body and `token`.
    async fn put(&self, path: &str, token: &str, body: Value) -> AdminReply {
        self.call(
            Method::PUT,
            path,
            Some(token),
            Some(("application/json", body.to_string())),
            &[],
        )
        .await
    }

    /// `DELETE <path>` with `token` and no body.
    async fn delete(&self, path: &str, token: &str) -> AdminReply {
        self.call(Method::DELETE, path, Some(token), None, &[]).await
    }

    async fn get(&self, path: &str, token: &str) -> AdminReply {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    /// Trips a tenant breaker as the prod operator; panics unless 200.
    async fn trip_tenant(&self, tenant: &str, body: Value) -> Value {
        let r = self
            .put(&format!("/v1/tenants/{tenant}/breaker"), &self.prod, body)
            .await;
        assert_eq!(r.status, 200, "trip {tenant}: {}", r.body);
        r.json()
    }

    /// `GET /v1/audit?<query>` as the prod operator.
    async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/audit?{query}"), &self.prod).await;
        assert_eq!(r.status, 200, "audit: {}", r.body);
        r.json().as_array().expect("audit array").clone()
    }

    /// `GET /v1/breakers` as the prod operator.
    async fn breakers(&self) -> Vec<Value> {
        let r = self.get("/v1/breakers", &self.prod).await;
        assert_eq!(r.status, 200, "breakers: {}", r.body);
        r.json()["breakers"].as_array().expect("breakers array").clone()
    }

    /// Status of an anonymous request to a public route of `host` (no session involved).
    async fn public_status(&self, host: &str) -> u16 {
        raw_get(self.gw.public, host, PUBLIC).await.status
    }

    /// `/.portcullis/status` of `host`.
    async fn portal_status(&self, host: &str) -> Value {
        let r = raw_get(self.gw.public, host, "/.portcullis/status").await;
        assert_eq!(r.status, 200, "status endpoint: {}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice(&r.body).expect("status JSON")
    }
}

/// A signed-in agent of `user` on `host`.
async fn signed_in(gw: &Gateway, host: &str, user: &TestUser) -> Agent {
    let mut a = Agent::new(gw, host);
    a.api_login(user).await;
    assert_eq!(a.get(PROTECTED).await.status, 200, "fresh session does not work");
    a
}

/// The `{"error"}` of a 423 JSON answer; panics on another status.
fn assert_suspended(r: &Reply, what: &str) {
    assert_eq!(r.status, 423, "{what}: {}", r.body);
    assert_eq!(r.json()["error"], "suspended", "{what}: {}", r.body);
}

/// Runs the `portcullis` CLI; returns (success, stdout, stderr).
async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("PORTCULLIS_OPERATOR_TOKEN")
        .output()
        .await
        .expect("run the portcullis CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// If this broke, requests of a compromised tenant would still reach its app after the
/// operator's trip call returned (or a trip would leak into other tenants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_trip_under_load_serves_nothing_after_it_returns() {
    const N: usize = 20;
    // Besides N real sign-ins, the issue's 10,000 live sessions, written to the store.
    const BULK: usize = 10_000;
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let mut users = Vec::new();
    for i in 0..N {
        users.push(accounts.create("acme", &format!("load{i:02}"), &[], true).await);
    }
    let gw = &env.gw;
    let tokens: Vec<String> = futures_util::future::join_all(users.iter().map(|u| async move {
        let mut a = Agent::new(gw, "acme.test");
        a.api_login(u).await;
        a.session("prod").expect("session token")
    }))
    .await;
    let mut tokens = tokens;
    tokens.extend(accounts.insert_sessions("acme", BULK).await);
    let globex_user = accounts.create("globex", "gina", &[], true).await;
    let mut globex = signed_in(&env.gw, "globex.test", &globex_user).await;
    let initech_user = accounts.create("initech", "ian", &[], true).await;
    let mut initech = signed_in(&env.gw, "initech.test", &initech_user).await;

    // A sign-in half done (password accepted) before the trip.
    let late = accounts.create("acme", "late", &[], true).await;
    let mut half = Agent::new(&env.gw, "acme.test");
    let r = half.api_password_step(&late, None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Background load: every request carries a sequence number the upstream records.
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let log: Arc<Mutex<Vec<(u64, Instant, u16)>>> = Arc::default();
    let tokens = Arc::new(tokens);
    let url = env.gw.host_url("acme.test", PROTECTED);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (stop, seq, log, tokens, url) = (stop.clone(), seq.clone(), log.clone(), tokens.clone(), url.clone());
        let client = env.gw.client();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = seq.fetch_add(1, Ordering::SeqCst);
                let token = &tokens[n as usize % tokens.len()];
                let sent = Instant::now();
                let status = client
                    .get(&url)
                    .header("cookie", format!("__Host-portcullis-prod={token}"))
                    .header("x-seq", n.to_string())
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                log.lock().expect("log").push((n, sent, status));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let message = "Security incident: access to Acme is paused";
    let tripped = env
        .trip_tenant("acme", json!({"reason": "INC-1 credential leak", "message": message}))
        .await;
    let returned = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("load task");
    }

    assert_eq!(tripped["scope"], "tenant", "{tripped}");
    assert_eq!(tripped["tenant"], "acme", "{tripped}");
    assert_eq!(tripped["tier"], "prod", "{tripped}");
    assert_eq!(tripped["tripped_by"], "operator:olivia", "{tripped}");
    assert_eq!(tripped["system"], "api", "{tripped}");
    assert_eq!(tripped["repeated"], false, "{tripped}");
    assert_eq!(
        tripped["sessions_ended"],
        (N + BULK) as u64,
        "every acme session ends: {tripped}"
    );

    let log = log.lock().expect("log").clone();
    let before_ok = log.iter().filter(|(_, sent, s)| *sent < returned && *s == 200).count();
    assert!(before_ok > 0, "the load never got a 200 before the trip: {log:?}");
    let after: Vec<&(u64, Instant, u16)> = log.iter().filter(|(_, sent, _)| *sent > returned).collect();
    assert!(after.len() >= 10, "too little load after the trip ({})", after.len());
    eprintln!(
        "load: {} requests, {} got 200 before the trip returned, {} sent after it",
        log.len(),
        before_ok,
        after.len()
    );
    let served: Vec<_> = after.iter().filter(|(_, _, s)| *s != 423).collect();
    assert!(
        served.is_empty(),
        "{} of {} requests sent after the trip returned were not refused with 423: {:?}",
        served.len(),
        after.len(),
        served.iter().take(10).collect::<Vec<_>>()
    );
    let after_seqs: BTreeSet<u64> = after.iter().map(|(n, _, _)| *n).collect();
    let leaked: Vec<String> = env
        .ups
        .acme
        .requests()
        .iter()
        .filter_map(|r| r.header("x-seq").map(str::to_string))
        .filter(|s| s.parse::<u64>().is_ok_and(|n| after_seqs.contains(&n)))
        .collect();
    assert!(
        leaked.is_empty(),
        "the app saw requests sent after the trip: {leaked:?}"
    );

    // What users see: the message, on requests and the status endpoint.
    let mut anyone = Agent::new(&env.gw, "acme.test");
    anyone
        .cookies
        .insert("__Host-portcullis-prod".into(), tokens[0].clone());
    let r = anyone.get(PROTECTED).await;
    assert_suspended(&r, "a session of the tripped tenant");
    assert_eq!(r.json()["message"], message);
    let status = env.portal_status("acme.test").await;
    assert_eq!(status["status"], "suspended", "{status}");
    assert_eq!(status["message"], message, "{status}");
    // New logins are refused, before any password check.
    let mut fresh = Agent::new(&env.gw, "acme.test");
    let r = fresh.api_password_step(&users[0], None).await;
    assert_suspended(&r, "a new login on the tripped tenant");
    assert!(fresh.session("prod").is_none());

    let code = late.fresh_code().await;
    let r = half.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_suspended(&r, "finishing a sign-in begun before the trip");
    assert!(half.session("prod").is_none(), "a session was issued after the trip");

    // Same tier, other tenant, and the other tier: untouched.
    assert_eq!(globex.get(PROTECTED).await.status, 200, "globex was cut off too");
    assert_eq!(initech.get(PROTECTED).await.status, 200, "initech was cut off too");
    assert_eq!(env.portal_status("globex.test").await["status"], "ok");
    let mut g2 = Agent::new(&env.gw, "globex.test");
    assert_eq!(g2.api_password_step(&globex_user, None).await.status, 200);
}

/// If this broke, cutting off one stolen account would hit its colleagues, leave the
/// account able to sign in, or bring its ended sessions back on reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_switch_hits_only_that_account_and_its_sessions_stay_ended() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let mut a = signed_in(&env.gw, "acme.test", &alice).await;
    let mut b = signed_in(&env.gw, "acme.test", &bob).await;
    let old_alice = a.session("prod").expect("token");
    // Alice's password accepted just before her switch trips; the code comes after.
    let mut half = Agent::new(&env.gw, "acme.test");
    assert_eq!(half.api_password_step(&alice, None).await.status, 200);

    let r = env
        .put(
            "/v1/tenants/acme/accounts/alice/breaker",
            &env.prod,
            json!({"reason": "phished", "message": "Your account is locked"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sw = r.json();
    assert_eq!(sw["scope"], "account", "{sw}");
    assert_eq!(sw["subject"], "alice", "{sw}");
    assert_eq!(sw["sessions_ended"], 1, "{sw}");

    let r = a.get(PROTECTED).await;
    assert_suspended(&r, "alice's session while her switch is on");
    assert_eq!(r.json()["message"], "Your account is locked");
    assert_eq!(b.get(PROTECTED).await.status, 200, "bob was cut off by alice's switch");
    assert_eq!(env.public_status("acme.test").await, 200);
    assert_eq!(env.portal_status("acme.test").await["status"], "ok");

    // The password step says what it says without the switch (no password oracle); the
    // switch shows once both factors are proven.
    let mut login = Agent::new(&env.gw, "acme.test");
    let right = login.api_password_step(&alice, None).await;
    assert_eq!(right.status, 200, "right password while suspended: {}", right.body);
    let r = login
        .post_json(
            "/.portcullis/api/login",
            &json!({"username": "alice", "password": "not-alices-password-1"}),
        )
        .await;
    assert_eq!(r.status, 401, "wrong password while suspended: {}", r.body);
    assert!(login.session("prod").is_none());
    let code = alice.fresh_code().await;
    let r = half.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_suspended(&r, "alice finishing a sign-in begun before her switch");
    assert!(
        half.session("prod").is_none(),
        "a session was issued to a suspended account"
    );
    // Bob can still sign in.
    let mut bob_again = Agent::new(&env.gw, "acme.test");
    assert_eq!(bob_again.api_password_step(&bob, None).await.status, 200);

    let r = env.delete("/v1/tenants/acme/accounts/alice/breaker", &env.prod).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "reset", "{}", r.body);
    assert_eq!(r.json()["breaker"]["subject"], "alice", "{}", r.body);
    let r = env.delete("/v1/tenants/acme/accounts/alice/breaker", &env.prod).await;
    assert_eq!(r.status, 404, "a second reset: {}", r.body);

    // The ended session stays ended; a new sign-in works.
    let mut replay = Agent::new(&env.gw, "acme.test");
    replay.cookies.insert("__Host-portcullis-prod".into(), old_alice);
    assert_eq!(
        replay.get(PROTECTED).await.status,
        401,
        "reset revived an ended session"
    );
    let mut again = Agent::new(&env.gw, "acme.test");
    again.api_login(&alice).await;
    assert_eq!(again.get(PROTECTED).await.status, 200);
    assert_eq!(b.get(PROTECTED).await.status, 200);

    // IdP subjects with reserved characters travel percent-encoded in the path.
    let r = env
        .put(
            "/v1/tenants/acme/accounts/auth0%7C5f1e%2Fx/breaker",
            &env.prod,
            json!({"reason": "sso account"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["subject"], "auth0|5f1e/x", "{}", r.body);
    let list = env.breakers().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["subject"], "auth0|5f1e/x", "{list:?}");
    assert_eq!(
        again.get(PROTECTED).await.status,
        200,
        "another account's switch hit alice"
    );
}

/// If this broke, a tier-wide emergency stop would miss a tenant, or stop the other tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_switch_stops_every_tenant_of_the_tier_only() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let acme_user = accounts.create("acme", "ada", &[], true).await;
    let mut acme = signed_in(&env.gw, "acme.test", &acme_user).await;
    let globex_user = accounts.create("globex", "gus", &[], true).await;
    let mut globex = signed_in(&env.gw, "globex.test", &globex_user).await;
    let initech_user = accounts.create("initech", "ines", &[], true).await;
    let mut initech = signed_in(&env.gw, "initech.test", &initech_user).await;

    let message = "Planned maintenance until noon";
    let r = env
        .put(
            "/v1/tiers/prod/breaker",
            &env.prod,
            json!({"reason": "datacenter failover", "message": message}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["scope"], "tier", "{}", r.body);
    assert_eq!(r.json()["sessions_ended"], 2, "{}", r.body);

    let seen = env.ups.acme.count() + env.ups.globex.count();
    for (host, agent) in [("acme.test", &mut acme), ("globex.test", &mut globex)] {
        assert_suspended(&agent.get(PROTECTED).await, host);
        assert_eq!(env.public_status(host).await, 423, "{host} public route");
        let status = env.portal_status(host).await;
        assert_eq!(status["status"], "suspended", "{host}: {status}");
        assert_eq!(status["message"], message, "{host}: {status}");
        // A browser gets a page saying why.
        let mut browser = Agent::new(&env.gw, host);
        let r = browser.send(Method::GET, "/", &[("accept", "text/html")], None).await;
        assert_eq!(r.status, 423, "{host}");
        assert!(
            r.header("content-type").is_some_and(|c| c.starts_with("text/html")),
            "{host}"
        );
        assert!(r.body.contains(message), "{host}: page without the message");
        // The login page says why; jwks still served; login attempts refused.
        let r = browser.get("/.portcullis/login").await;
        assert_eq!(r.status, 200, "{host} login page");
        assert!(r.body.contains(message), "{host}: login page without the message");
        assert_eq!(browser.get("/.portcullis/jwks.json").await.status, 200, "{host}");
    }
    let mut login = Agent::new(&env.gw, "globex.test");
    assert_suspended(&login.api_password_step(&globex_user, None).await, "globex login");
    assert_eq!(
        env.ups.acme.count() + env.ups.globex.count(),
        seen,
        "a prod app saw a request"
    );

    // The staging tier goes on.
    assert_eq!(initech.get(PROTECTED).await.status, 200, "staging was stopped too");
    assert_eq!(env.public_status("initech.test").await, 200);
    assert_eq!(env.portal_status("initech.test").await["status"], "ok");
    let list = env.breakers().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["scope"], "tier");
    assert_eq!(list[0]["tier"], "prod");
}

/// If this broke, a switch tripped "for 2 hours" would stay on forever (or the automatic
/// reset would leave no audit trail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_switch_resets_itself_and_is_audited() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let eve = accounts.create("acme", "eve", &[], true).await;
    let mut a = signed_in(&env.gw, "acme.test", &eve).await;

    let sw = env
        .trip_tenant("acme", json!({"reason": "short drill", "expires_in": "2s"}))
        .await;
    assert!(sw["expires_at"].as_i64().is_some(), "{sw}");
    assert_suspended(&a.get(PROTECTED).await, "right after the trip");
    assert_eq!(env.public_status("acme.test").await, 423);

    let back = eventually(Duration::from_secs(10), || async {
        (env.public_status("acme.test").await == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "acme still suspended 10 s after a 2 s expiry");
    assert_eq!(a.get(PROTECTED).await.status, 401, "the ended session came back");
    assert_eq!(env.portal_status("acme.test").await["status"], "ok");

    let reset = eventually(Duration::from_secs(5), || async {
        env.audit("tenant=acme&action=breaker.reset")
            .await
            .into_iter()
            .find(|r| r["system"] == "expiry")
    })
    .await
    .expect("no breaker.reset audit record with system expiry");
    assert_eq!(reset["target"], "tenant:acme", "{reset}");
    assert_eq!(reset["tier"], "prod", "{reset}");
    assert!(env.breakers().await.is_empty());
    let mut b = Agent::new(&env.gw, "acme.test");
    b.api_login(&eve).await;
    assert_eq!(b.get(PROTECTED).await.status, 200);
}

/// If this broke, a SIEM retrying a trip would record (and act on) it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_trip_with_the_same_idempotency_key_is_answered_once() {
    let env = env().await;
    let body = json!({"reason": "alert 7731", "message": "Paused"}).to_string();
    let trip = || {
        env.call(
            Method::PUT,
            "/v1/tenants/acme/breaker",
            Some(&env.siem),
            Some(("application/json", body.clone())),
            &[("idempotency-key", "siem-alert-7731")],
        )
    };
    let first = trip().await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = trip().await;
    assert_eq!(second.status, 200, "{}", second.body);
    let (mut first, mut second) = (first.json(), second.json());
    assert_eq!(first["repeated"], false, "{first}");
    assert_eq!(second["repeated"], true, "{second}");
    assert_eq!(first["idempotency_key"], "siem-alert-7731", "{first}");
    assert_eq!(first["tripped_by"], "automation:siem", "{first}");
    first.as_object_mut().expect("object").remove("repeated");
    second.as_object_mut().expect("object").remove("repeated");
    assert_eq!(first, second, "the repeat answered a different switch");

    let trips = env.audit("tenant=acme&action=breaker.trip").await;
    assert_eq!(trips.len(), 1, "one trip, one audit record: {trips:#?}");
    assert_eq!(trips[0]["actor"], "automation:siem");
    assert_eq!(trips[0]["system"], "api");
    assert_eq!(trips[0]["reason"], "alert 7731");
    assert_eq!(trips[0]["source_ip"], "127.0.0.1");
    assert_eq!(env.breakers().await.len(), 1);
}

/// If this broke, a SIEM token (a machine credential, easier to leak) could lift a
/// breaker, cut off tenants it was never given, or read the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_tokens_trip_their_tenants_and_nothing_else() {
    let env = env().await;
    let r = env
        .put(
            "/v1/tenants/acme/breaker",
            &env.siem,
            json!({"reason": "impossible travel"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tripped_by"], "automation:siem", "{}", r.body);
    assert_eq!(env.public_status("acme.test").await, 423);

    let r = env.delete("/v1/tenants/acme/breaker", &env.siem).await;
    assert_eq!(r.status, 403, "automation reset: {}", r.body);
    assert_eq!(env.public_status("acme.test").await, 423, "the refused reset applied");

    let r = env
        .put("/v1/tenants/globex/breaker", &env.siem, json!({"reason": "x"}))
        .await;
    // Answered exactly like a tenant that does not exist: no existence leak (TEN-08).
    let nosuch = env
        .put("/v1/tenants/nosuch/breaker", &env.siem, json!({"reason": "x"}))
        .await;
    assert_eq!(nosuch.status, 404, "{}", nosuch.body);
    assert_eq!(
        (r.status, sans_request_id(&r.body)),
        (404, sans_request_id(&nosuch.body)),
        "another tenant"
    );
    env.gw
        .await_security_event("cross_tenant", |e| e["organization.id"] == "globex")
        .await;
    let r = env
        .put(
            "/v1/tenants/globex/accounts/gina/breaker",
            &env.siem,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(
        (r.status, sans_request_id(&r.body)),
        (404, sans_request_id(&nosuch.body)),
        "an account of another tenant"
    );
    let r = env
        .put("/v1/tiers/prod/breaker", &env.siem, json!({"reason": "x"}))
        .await;
    assert_eq!(r.status, 403, "the whole tier: {}", r.body);
    let r = env
        .put("/v1/tenants/initech/breaker", &env.siem, json!({"reason": "x"}))
        .await;
    assert_eq!(
        (r.status, sans_request_id(&r.body)),
        (404, sans_request_id(&nosuch.body)),
        "a tenant of another tier"
    );
    let r = env
        .put("/v1/tiers/staging/breaker", &env.siem, json!({"reason": "x"}))
        .await;
    assert_eq!(r.status, 404, "another tier: {}", r.body);
    assert_eq!(env.get("/v1/breakers", &env.siem).await.status, 403);
    assert_eq!(env.get("/v1/audit", &env.siem).await.status, 403);

    for host in ["globex.test", "initech.test"] {
        assert_eq!(env.public_status(host).await, 200, "{host} was tripped");
    }
    let list = env.breakers().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["tenant"], "acme");
    let r = env.get("/v1/breakers", &env.staging).await;
    assert_eq!(r.json()["breakers"], json!([]), "{}", r.body);
    // Only the operator lifts it.
    let r = env.delete("/v1/tenants/acme/breaker", &env.prod).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.public_status("acme.test").await, 200);
    let trips = env.audit("action=breaker.trip").await;
    assert_eq!(trips.len(), 1, "refused calls were audited as trips: {trips:#?}");
    // KILL-06: each refusal is audited as what it was, in the log of the tier it named
    // (prod: the reset, globex, its account, the whole tier, and the unknown tenant,
    // which falls to the token's own tier), and by whom.
    let refused = env.audit("action=breaker.refused").await;
    let targets: BTreeSet<&str> = refused.iter().filter_map(|r| r["target"].as_str()).collect();
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert_eq!(
        targets,
        BTreeSet::from([
            "tenant:acme",
            "tenant:globex",
            "tenant:nosuch",
            "account:globex:gina",
            "tier:prod"
        ]),
    );
    assert!(refused.iter().all(|r| r["actor"] == "automation:siem"), "{refused:#?}");
    let reset = refused
        .iter()
        .find(|r| r["target"] == "tenant:acme")
        .expect("the refused reset");
    assert_eq!(reset["after"], json!({"refused": "reset", "status": 403}));
    // initech and tier staging are staging's: there, not in prod's log.
    let r = env.get("/v1/audit?action=breaker.refused", &env.staging).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let staging = r.json();
    let targets: BTreeSet<&str> = staging
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["tenant:initech", "tier:staging"]),
        "{}",
        r.body
    );
    // A call with no valid token is logged as a failed trip, and never audited.
    let r = env
        .put("/v1/tenants/acme/breaker", "not-a-token", json!({"reason": "x"}))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    env.gw
        .await_security_event("breaker_trip", |e| {
            e["event.outcome"] == "failure" && e["event.reason"] == "no valid admin token"
        })
        .await;
    assert_eq!(env.audit("action=breaker.refused").await.len(), 5);
}

/// If this broke, a staging operator token (shared more widely) could cut off
/// production customers, and nobody would see the attempt. Prod's tenants answer 404 to
/// it, as if they did not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_of_another_tier_cannot_trip_or_see_prod() {
    let env = env().await;
    let r = env
        .put("/v1/tenants/acme/breaker", &env.staging, json!({"reason": "oops"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    env.gw
        .await_security_event("cross_tier", |e| e["portcullis.tier"] == "prod")
        .await;
    let r = env
        .put("/v1/tiers/prod/breaker", &env.staging, json!({"reason": "oops"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = env
        .put(
            "/v1/tenants/acme/accounts/ada/breaker",
            &env.staging,
            json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(env.public_status("acme.test").await, 200, "a refused trip applied");
    assert!(env.breakers().await.is_empty());

    // A prod trip is neither visible to nor removable by the staging operator.
    env.trip_tenant("acme", json!({"reason": "real incident"})).await;
    let r = env.delete("/v1/tenants/acme/breaker", &env.staging).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(env.public_status("acme.test").await, 423);
    let r = env.get("/v1/breakers", &env.staging).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["breakers"], json!([]), "prod switches shown to staging");
    let r = env.get("/v1/audit", &env.staging).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains("acme"),
        "prod audit records shown to staging: {}",
        r.body
    );
    // The staging operator can act on staging.
    let r = env
        .put("/v1/tenants/initech/breaker", &env.staging, json!({"reason": "test"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tripped_by"], "operator:sven", "{}", r.body);
    assert_eq!(env.public_status("initech.test").await, 423);
}

/// If this broke, a drill ("what would this cut off?") would cut real users off, or
/// leave no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_is_audited_as_a_drill() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let dan = accounts.create("acme", "dan", &[], true).await;
    let _dora = accounts.create("acme", "dora", &[], true).await;
    let mut a = signed_in(&env.gw, "acme.test", &dan).await;
    let mut b = signed_in(&env.gw, "acme.test", &dan).await;

    let r = env
        .put(
            "/v1/tenants/acme/breaker?dry_run=true",
            &env.prod,
            json!({"reason": "quarterly drill"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["scope"], "tenant", "{report}");
    assert_eq!(report["tenant"], "acme", "{report}");
    assert_eq!(report["sessions"], 2, "{report}");
    assert_eq!(report["signed_in_users"], 1, "{report}");
    assert_eq!(report["local_accounts"], 2, "{report}");
    assert_eq!(report["tenants"], json!(["acme"]), "{report}");

    assert_eq!(a.get(PROTECTED).await.status, 200, "a drill ended a session");
    assert_eq!(b.get(PROTECTED).await.status, 200, "a drill ended a session");
    assert_eq!(env.public_status("acme.test").await, 200);
    assert_eq!(env.portal_status("acme.test").await["status"], "ok");
    let mut login = Agent::new(&env.gw, "acme.test");
    assert_eq!(login.api_password_step(&dan, None).await.status, 200);
    assert!(env.breakers().await.is_empty(), "a drill left a switch");

    let drills = env.audit("tenant=acme&action=breaker.drill").await;
    assert_eq!(drills.len(), 1, "{drills:#?}");
    assert_eq!(drills[0]["actor"], "operator:olivia");
    assert_eq!(drills[0]["reason"], "quarterly drill");
    assert!(env.audit("action=breaker.trip").await.is_empty());
}

async fn open_ws(
    gw: &Gateway,
    cookie: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://acme.test:{}/app/ws", gw.public.port())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert("cookie", cookie.parse().expect("cookie"));
    let tcp = TcpStream::connect(gw.public).await.expect("connect");
    tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
}

/// If this broke, an attacker's open WebSocket (live data, commands) would survive the
/// kill switch meant to cut them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_of_a_tripped_tenant_is_closed_with_1008() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let wes = accounts.create("acme", "wes", &[], true).await;
    let a = signed_in(&env.gw, "acme.test", &wes).await;
    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    let mut ws = open_ws(&env.gw, &cookie).await.expect("upgrade with a session");
    ws.send(Message::text("ping")).await.expect("send");
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("frame")
        .expect("ok");
    assert_eq!(echo, Message::text("ping"));

    env.trip_tenant("acme", json!({"reason": "INC-9"})).await;
    crate::websocket::assert_closed_with_1008(&mut ws, Duration::from_secs(3), "the trip").await;
    match open_ws(&env.gw, &cookie).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 423),
        Err(e) => panic!("expected 423, got {e}"),
        Ok(_) => panic!("a tripped tenant's session opened a WebSocket"),
    }
}

/// The audit log of tier prod as stored: (seq, data) rows.
fn audit_rows(db: &rusqlite::Connection) -> Vec<(i64, String)> {
    let mut stmt = db
        .prepare("SELECT seq, data FROM audit_log ORDER BY seq")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// If this broke, someone with write access to the store could rewrite, remove or
/// reorder who tripped or reset what, and `audit verify` would still say all is well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_edited_deleted_and_reordered_records() {
    let env = env().await;
    env.trip_tenant("acme", json!({"reason": "one"})).await;
    let r = env.delete("/v1/tenants/acme/breaker", &env.prod).await;
    assert_eq!(r.status, 200, "{}", r.body);
    env.trip_tenant("globex", json!({"reason": "three"})).await;
    let r = env
        .put(
            "/v1/tenants/acme/breaker?dry_run=true",
            &env.prod,
            json!({"reason": "four"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The API shows one unbroken chain, oldest first.
    let records = env.audit("").await;
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap_or("?")).collect();
    assert_eq!(
        actions,
        ["breaker.trip", "breaker.reset", "breaker.trip", "breaker.drill"],
        "{records:#?}"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1, "{r}");
        let prev = if i == 0 {
            "0".repeat(64)
        } else {
            records[i - 1]["hash"].as_str().unwrap_or_default().to_string()
        };
        assert_eq!(r["prev_hash"], prev.as_str(), "{r}");
        assert_eq!(r["tier"], "prod");
        for key in [
            "time",
            "actor",
            "source_ip",
            "system",
            "target",
            "reason",
            "before",
            "after",
            "hash",
        ] {
            assert!(r.get(key).is_some(), "{key} missing: {r}");
        }
    }
    let page = env.audit("limit=2").await;
    assert_eq!(page, records[..2].to_vec(), "limit=2");
    let rest = env.audit("after=2").await;
    assert_eq!(rest, records[2..].to_vec(), "after=2");
    let globex = env.audit("tenant=globex").await;
    assert_eq!(globex, records[2..3].to_vec(), "tenant=globex");
    let since = records[3]["time"].as_i64().expect("time") + 3600;
    assert!(
        env.audit(&format!("since={since}")).await.is_empty(),
        "since in the future"
    );
    assert_eq!(records[0]["target"], "tenant:acme");
    assert_eq!(records[1]["before"]["reason"], "one", "{}", records[1]);

    let config = env.gw.policy_dir.display().to_string();
    let verify = || {
        let config = config.clone();
        async move { cli(&["audit", "verify", "--config", &config]).await }
    };
    let (ok, out, err) = verify().await;
    assert!(ok, "verify failed on an untouched log:\n{out}\n{err}");
    assert!(out.contains("chain intact"), "{out}");

    let db = rusqlite::Connection::open(env.gw.policy_dir.join("data/prod.sqlite3")).expect("open store");
    db.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let original = audit_rows(&db);
    assert_eq!(original.len(), 4);
    let restore = |db: &rusqlite::Connection| {
        db.execute("DELETE FROM audit_log", []).expect("clear");
        for (seq, data) in &original {
            db.execute(
                "INSERT INTO audit_log (seq, data) VALUES (?1, ?2)",
                rusqlite::params![seq, data],
            )
            .expect("restore");
        }
    };

    // 1. Edit: the reason of record 2 rewritten.
    let mut edited: Value = serde_json::from_str(&original[1].1).expect("record JSON");
    edited["reason"] = json!("nothing to see here");
    db.execute(
        "UPDATE audit_log SET data = ?1 WHERE seq = 2",
        rusqlite::params![edited.to_string()],
    )
    .expect("edit");
    let (ok, out, err) = verify().await;
    assert!(!ok, "an edited record passed verification:\n{out}\n{err}");
    assert!(out.contains("tier prod: TAMPERED"), "{out}\n{err}");
    restore(&db);
    let (ok, out, err) = verify().await;
    assert!(ok, "the restored log fails verification:\n{out}\n{err}");

    // 2. Delete: record 2 removed.
    db.execute("DELETE FROM audit_log WHERE seq = 2", []).expect("delete");
    let (ok, out, err) = verify().await;
    assert!(!ok, "a deleted record went unnoticed:\n{out}\n{err}");
    assert!(out.contains("tier prod: TAMPERED"), "{out}\n{err}");
    restore(&db);

    // 3. Reorder: records 2 and 3 swapped.
    db.execute(
        "UPDATE audit_log SET data = ?1 WHERE seq = 2",
        rusqlite::params![original[2].1],
    )
    .expect("swap");
    db.execute(
        "UPDATE audit_log SET data = ?1 WHERE seq = 3",
        rusqlite::params![original[1].1],
    )
    .expect("swap");
    let (ok, out, err) = verify().await;
    assert!(!ok, "reordered records went unnoticed:\n{out}\n{err}");
    assert!(out.contains("tier prod: TAMPERED"), "{out}\n{err}");
    restore(&db);
    let (ok, out, err) = verify().await;
    assert!(ok, "the restored log fails verification:\n{out}\n{err}");
}

/// If this broke, an operator at a shell (no admin API at hand) could not stop a tenant
/// on a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_trip_applies_to_a_running_gateway() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let cal = accounts.create("acme", "cal", &[], true).await;
    let mut a = signed_in(&env.gw, "acme.test", &cal).await;
    let config = env.gw.policy_dir.display().to_string();

    let (ok, out, err) = cli(&[
        "breaker",
        "trip",
        "--config",
        &config,
        "--tenant",
        "acme",
        "--reason",
        "cli incident",
        "--message",
        "Paused by the on-call",
    ])
    .await;
    assert!(ok, "breaker trip failed:\n{out}\n{err}");
    let applied = eventually(Duration::from_secs(5), || async {
        (env.public_status("acme.test").await == 423).then_some(())
    })
    .await;
    assert!(applied.is_some(), "the CLI trip was not applied within 5 s");
    let r = a.get(PROTECTED).await;
    assert_suspended(&r, "a session after the CLI trip");
    assert_eq!(r.json()["message"], "Paused by the on-call");
    assert_eq!(env.public_status("globex.test").await, 200);

    let (ok, out, err) = cli(&["breaker", "list", "--config", &config]).await;
    assert!(ok, "breaker list failed:\n{out}\n{err}");
    assert!(out.contains("tenant:acme"), "{out}");
    let list = env.breakers().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["system"], "cli", "{list:?}");

    let (ok, out, err) = cli(&[
        "breaker",
        "reset",
        "--config",
        &config,
        "--tenant",
        "acme",
        "--reason",
        "all clear",
    ])
    .await;
    assert!(ok, "breaker reset failed:\n{out}\n{err}");
    let lifted = eventually(Duration::from_secs(5), || async {
        (env.public_status("acme.test").await == 200).then_some(())
    })
    .await;
    assert!(lifted.is_some(), "the CLI reset was not applied within 5 s");
    assert_eq!(a.get(PROTECTED).await.status, 401, "the ended session came back");
    let (ok, out, _) = cli(&["breaker", "list", "--config", &config]).await;
    assert!(ok && !out.contains("tenant:acme"), "{out}");

    let records = env.audit("tenant=acme").await;
    let systems: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["action"].as_str().unwrap_or("?"), r["system"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        systems,
        [("breaker.trip", "cli"), ("breaker.reset", "cli")],
        "{records:#?}"
    );
    assert_eq!(records[0]["reason"], "cli incident");
}

/// One refused call: what, token, body (content type, text), expected status.
type BadCall<'a> = (&'a str, Option<&'a str>, Option<(&'a str, String)>, u16);

/// If this broke, a malformed or unauthenticated call could trip a breaker, or a
/// typo'd tenant would silently do nothing with a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_breaker_calls_are_refused_and_trip_nothing() {
    let env = env().await;
    let path = "/v1/tenants/acme/breaker";
    let json_body = |v: Value| Some(("application/json", v.to_string()));
    let cases: Vec<BadCall> = vec![
        (
            "missing reason",
            Some(&env.prod),
            json_body(json!({"message": "m"})),
            400,
        ),
        ("empty reason", Some(&env.prod), json_body(json!({"reason": "  "})), 400),
        (
            "unknown field",
            Some(&env.prod),
            json_body(json!({"reason": "r", "colour": "red"})),
            400,
        ),
        (
            "not JSON",
            Some(&env.prod),
            Some(("application/json", "{reason".into())),
            400,
        ),
        (
            "expiry in the past",
            Some(&env.prod),
            json_body(json!({"reason": "r", "expires_at": 1_000_000})),
            400,
        ),
        (
            "bad duration",
            Some(&env.prod),
            json_body(json!({"reason": "r", "expires_in": "soon"})),
            400,
        ),
        (
            "wrong content type",
            Some(&env.prod),
            Some(("text/plain", json!({"reason": "r"}).to_string())),
            415,
        ),
        ("no token", None, json_body(json!({"reason": "r"})), 401),
        ("bad token", Some("not-a-token"), json_body(json!({"reason": "r"})), 401),
        // ADM-06: a reason cannot forge a second line of a log or an audit record.
        (
            "newline in the reason",
            Some(&env.prod),
            json_body(json!({"reason": "ok\nforged: yes"})),
            400,
        ),
        // ADM-11: no reading where two parsers could disagree, and no stack to exhaust.
        (
            "duplicate keys",
            Some(&env.prod),
            Some(("application/json", r#"{"reason": "r", "reason": "other"}"#.into())),
            400,
        ),
        (
            "7,000 levels deep",
            Some(&env.prod),
            Some((
                "application/json",
                format!("{}{}", "[".repeat(7_000), "]".repeat(7_000)),
            )),
            400,
        ),
        (
            "10,000 levels deep (over the body limit first)",
            Some(&env.prod),
            Some((
                "application/json",
                format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            )),
            413,
        ),
    ];
    let mut ids = std::collections::HashSet::new();
    for (what, token, body, want) in cases {
        let r = env.call(Method::PUT, path, token, body, &[]).await;
        assert_eq!(r.status, want, "{what}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{what}: {}", r.body);
        // Each refusal names its request, for the operator to find in the logs.
        let id = r.request_id.unwrap_or_else(|| panic!("{what}: no x-request-id"));
        assert!(ids.insert(id), "{what}: a request id was used twice");
    }
    for p in [
        "/v1/tenants/nope/breaker",
        "/v1/tiers/nope/breaker",
        "/v1/tenants/nope/accounts/alice/breaker",
    ] {
        let r = env.put(p, &env.prod, json!({"reason": "r"})).await;
        assert_eq!(r.status, 404, "{p}: {}", r.body);
    }
    let r = env.delete(path, &env.prod).await;
    assert_eq!(r.status, 404, "reset with nothing tripped: {}", r.body);
    // ADM-11: a token in the query is no token (it would end up in access logs): the
    // query is refused as malformed.
    let r = env
        .call(
            Method::PUT,
            &format!("{path}?access_token={}", env.prod),
            None,
            json_body(json!({"reason": "r"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "token in the query: {}", r.body);
    // ADM-06: the audit log cannot be edited or deleted through the API.
    for method in [Method::PUT, Method::DELETE, Method::POST, Method::PATCH] {
        let r = env.call(method.clone(), "/v1/audit", Some(&env.prod), None, &[]).await;
        assert_eq!(r.status, 405, "{method} /v1/audit: {}", r.body);
    }
    let r = env.call(Method::GET, "/v1/breakers", None, None, &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = env.call(Method::GET, "/v1/audit", None, None, &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);

    assert!(env.breakers().await.is_empty(), "a refused call left a switch");
    for host in ["acme.test", "globex.test", "initech.test"] {
        assert_eq!(env.public_status(host).await, 200, "{host}");
    }
    // Only the known token's refusals are audited, as refusals (KILL-06): the three
    // unknown targets. Bad bodies never reached a switch, and token-less calls are only
    // logged.
    let audited = env.audit("").await;
    let targets: BTreeSet<&str> = audited.iter().filter_map(|r| r["target"].as_str()).collect();
    assert!(audited.iter().all(|r| r["action"] == "breaker.refused"), "{audited:#?}");
    assert_eq!(
        targets,
        BTreeSet::from(["tenant:nope", "tier:nope", "account:nope:alice"]),
        "{audited:#?}"
    );
}

/// A tenant admin cuts off an account of their own tenant from the page and the API; if
/// this broke, a tenant admin could not stop a compromised account without an operator,
/// could lock themselves or another tenant's account out, or a plain user could trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_trip_and_reset_account_breakers_of_their_own_tenant() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    let ada = accounts.create("acme", "ada", &["tenant-admin"], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let gina = accounts.create("globex", "gina", &[], true).await;
    let admin = signed_in(&env.gw, "acme.test", &ada).await;
    let mut admin = admin;
    let mut bob_agent = signed_in(&env.gw, "acme.test", &bob).await;
    let mut gina_agent = signed_in(&env.gw, "globex.test", &gina).await;

    // The page lists the tenant's accounts; a plain user is refused.
    let page = admin.get("/.portcullis/admin").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("bob") && !page.body.contains("gina"),
        "{}",
        page.body
    );
    let mut plain = signed_in(&env.gw, "acme.test", &bob).await;
    assert_eq!(plain.get("/.portcullis/admin").await.status, 403);
    let r = plain
        .send(
            Method::PUT,
            "/.portcullis/api/admin/accounts/ada/breaker",
            &[],
            Some(("application/json", br#"{"reason":"x"}"#.to_vec())),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Trip through the page's form (CSRF token from the session).
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_string();
    let r = admin
        .post_form(
            "/.portcullis/admin/breaker",
            &[
                ("csrf", &csrf),
                ("action", "trip"),
                ("subject", "bob"),
                ("reason", "phished"),
            ],
        )
        .await;
    // Back to the page (303), which says what was done; a reload shows it again.
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").expect("location").to_string();
    assert!(
        location.starts_with("/.portcullis/admin?done=tripped&account=bob&ended="),
        "{location}"
    );
    let r = admin.get(&location).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Breaker tripped for bob: "), "{}", r.body);
    assert_suspended(&bob_agent.get(PROTECTED).await, "bob after the tenant admin's trip");
    assert_eq!(gina_agent.get(PROTECTED).await.status, 200, "other tenants unaffected");

    // Without the CSRF token nothing happens.
    let r = admin
        .post_form("/.portcullis/admin/breaker", &[("action", "reset"), ("subject", "bob")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_suspended(&bob_agent.get(PROTECTED).await, "bob still suspended");

    // Self-lockout is refused; the API resets, audited as the admin through the console.
    let r = admin
        .send(
            Method::PUT,
            "/.portcullis/api/admin/accounts/ada/breaker",
            &[],
            Some(("application/json", br#"{"reason":"oops"}"#.to_vec())),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let listed = admin.get("/.portcullis/api/admin/breakers").await.json();
    assert_eq!(listed["breakers"].as_array().map(Vec::len), Some(1), "{listed}");
    let r = admin.delete("/.portcullis/api/admin/accounts/bob/breaker").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(bob_agent.get(PROTECTED).await.status, 401, "ended sessions stay ended");
    let records = env.audit("tenant=acme").await;
    let by_admin: Vec<&Value> = records
        .iter()
        .filter(|r| r["actor"] == "user:ada" && r["system"] == "console")
        .collect();
    assert_eq!(by_admin.len(), 2, "{records:?}");
}

/// Auto-trip rules from the tenant's policy fire on their own: an account guessing MFA
/// codes is cut off, and a tenant under credential stuffing is cut off, each audited as
/// the rule. If this broke, the automatic defences the policy promises would not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_trip_rules_cut_off_mfa_guessing_and_credential_stuffing() {
    let prod = random_hex(24);
    let (_ups, gw) = start_with(|f| {
        f.prod_operators = vec![("olivia".into(), sha256_hex(prod.as_bytes()))];
        f.tenant_mut("acme").routes.push_str(
            "\n[[auto_trip]]\nname = \"mfa-guessing\"\nkind = \"account_mfa_failures\"\nthreshold = 3\nwindow = \"10m\"\n",
        );
        f.tenant_mut("globex").routes.push_str(
            "\n[[auto_trip]]\nname = \"stuffing\"\nkind = \"tenant_login_failures\"\nthreshold = 5\nwindow = \"1m\"\nexpires = \"1h\"\n",
        );
    })
    .await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let gina = accounts.create("globex", "gina", &[], true).await;

    // Three wrong codes after a right password trip alice's account switch.
    for _ in 0..3 {
        let mut a = Agent::new(&gw, "acme.test");
        assert_eq!(a.api_password_step(&alice, None).await.status, 200);
        let r = a.post_json("/.portcullis/api/mfa", &json!({"code": "000000"})).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let mut again = Agent::new(&gw, "acme.test");
    assert_eq!(again.api_password_step(&alice, None).await.status, 200);
    let code = alice.fresh_code().await;
    let r = again.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_eq!(r.status, 423, "alice is cut off: {}", r.body);
    assert!(again.session("prod").is_none(), "alice got a session");
    assert!(
        accounts
            .history(&alice)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("breaker")),
        "the refusal is in alice's history"
    );
    let mut other = Agent::new(&gw, "acme.test");
    other.api_login(&bob).await;
    assert_eq!(other.get(PROTECTED).await.status, 200, "bob is not");

    // Five failed logins across globex trip the tenant.
    for i in 0..5 {
        let mut a = Agent::new(&gw, "globex.test");
        let r = a
            .post_json(
                "/.portcullis/api/login",
                &json!({"username": format!("guess{i}"), "password": "wrong-password-123"}),
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let mut g = Agent::new(&gw, "globex.test");
    let r = g.api_password_step(&gina, None).await;
    assert_eq!(r.status, 423, "globex is cut off: {}", r.body);
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&bob).await;

    // Both trips are audited as their rules.
    let client = reqwest::Client::new();
    let records: Vec<Value> = client
        .get(gw.admin_url("/v1/audit?action=breaker.trip"))
        .bearer_auth(&prod)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actors: BTreeSet<String> = records
        .iter()
        .filter(|r| r["system"] == "auto-rule")
        .map(|r| {
            format!(
                "{} {}",
                r["actor"].as_str().unwrap_or(""),
                r["target"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        actors,
        BTreeSet::from([
            "rule:mfa-guessing account:acme:alice".to_string(),
            "rule:stuffing tenant:globex".to_string()
        ]),
        "{records:?}"
    );
    gw.await_security_event("auto_trip", |_| true).await;
}

/// Twenty concurrent trips of one breaker make one state change (one audit record), and
/// the switch still holds after a restart. If this broke, a burst of automated trips
/// would flood the audit log, or a restart would quietly reopen a cut-off tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_trips_change_state_once_and_the_switch_survives_a_restart() {
    let mut env = env().await;
    let replies = futures_util::future::join_all((0..20).map(|i| {
        env.put(
            "/v1/tenants/acme/breaker",
            &env.prod,
            json!({"reason": format!("burst {i}")}),
        )
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 200), "{replies:?}");
    let first = replies.iter().filter(|r| r.json()["repeated"] == false).count();
    assert_eq!(first, 1, "exactly one trip changed state: {replies:?}");
    assert_eq!(env.audit("action=breaker.trip").await.len(), 1);

    env.gw.signal("TERM");
    assert!(env.gw.wait_exit(Duration::from_secs(15)).await.is_some());
    env.gw.restart().await;
    let client = env.gw.client();
    let status = client
        .get(env.gw.host_url("acme.test", PUBLIC))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 423, "the switch holds after a restart");
    let other = client.get(env.gw.host_url("globex.test", PUBLIC)).send().await.unwrap();
    assert_eq!(other.status(), 200);
}
