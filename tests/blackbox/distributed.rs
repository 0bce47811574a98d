//! Distributed mode (SPEC "Distributed mode"): three `portcullis run` replicas on one real
//! `redis-server`. Revocations and kill switch trips are pushed to every replica at once;
//! a replica that cannot hear the others (subscription dropped, Redis killed) fails
//! closed on sessions (`503`) while public routes keep working, `/readyz` says why, and
//! everything recovers within 5 s of Redis being back. A policy reload on one replica
//! reloads the others.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis::records::SessionRecord;
use portcullis::store::Stores;

use crate::harness::*;

const PROTECTED: &str = "/app/data";
const PUBLIC: &str = "/public/x";

/// Revocations must reach the other replicas well within the 1 s poll they replace.
const PUSH_BOUND: Duration = Duration::from_millis(500);

/// Everything must work again within this long after Redis is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// Three replicas on one Redis, an operator token of tier prod, and a handle on the
/// store to plant sessions.
struct Replicas {
    gws: Vec<Gateway>,
    clients: Vec<reqwest::Client>,
    stores: Stores,
    token: String,
    redis: RedisServer,
    _ups: Upstreams,
}

async fn replicas() -> Replicas {
    let redis = RedisServer::start();
    let ups = Upstreams::start().await;
    let token = random_hex(32);
    let mut f = PolicyFixture::for_upstreams(&ups);
    f.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))];
    f.store_url = Some(redis.url());
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start(&f).await);
    }
    let clients = gws.iter().map(Gateway::client).collect();
    let stores = Stores::open(&redis.url(), ["prod", "staging"])
        .await
        .expect("open the replicas' store");
    let r = Replicas {
        gws,
        clients,
        stores,
        token,
        redis,
        _ups: ups,
    };
    for i in 0..3 {
        let ready = r.readyz(i).await;
        assert_eq!(ready.0, 200, "replica {} not ready: {}", i + 1, ready.1);
    }
    r
}

/// A live acme session of `subject`, written straight into the shared store.
struct Planted {
    cookie: String,
    record: SessionRecord,
}

impl Replicas {
    async fn plant(&self, subject: &str) -> Planted {
        use base64::Engine;
        let raw: [u8; 32] = rand::random();
        let now = portcullis::clock::unix_now();
        let record = live_session(&raw, "acme", "prod", subject, now);
        self.stores
            .tier("prod")
            .unwrap()
            .create_session(&record)
            .await
            .expect("plant a session");
        Planted {
            cookie: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
            record,
        }
    }

    /// Status of `GET path` on acme.test at replica `i`, with the session cookie if any.
    async fn status(&self, i: usize, path: &str, cookie: Option<&str>) -> u16 {
        status_of(&self.clients[i], &self.gws[i], path, cookie).await
    }

    /// `/readyz` of replica `i`: (status, body).
    async fn readyz(&self, i: usize) -> (u16, serde_json::Value) {
        let r = self.clients[i]
            .get(self.gws[i].admin_url("/readyz"))
            .send()
            .await
            .expect("readyz");
        (r.status().as_u16(), r.json().await.expect("readyz json"))
    }

    /// Ends `victim` from `actor`'s session (same user) through replica `i`'s session center.
    async fn revoke(&self, i: usize, actor: &Planted, victim: &Planted) {
        let r = self.clients[i]
            .delete(self.gws[i].host_url(
                "acme.test",
                &format!("/.portcullis/api/sessions/{}", victim.record.public_id()),
            ))
            .header("cookie", format!("__Host-portcullis-prod={}", actor.cookie))
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), 200, "revocation on replica {}", i + 1);
    }

    /// Polls replica `i` with `cookie` until it answers `want`; how long that took.
    async fn until_status(&self, i: usize, cookie: Option<&str>, want: u16, bound: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.status(i, PROTECTED, cookie).await;
            if s == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < bound,
                "replica {} still answers {s}, not {want}, after {:?}\n{}",
                i + 1,
                start.elapsed(),
                self.gws[i].logs()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn logs(&self) -> String {
        self.gws.iter().map(Gateway::logs).collect::<Vec<_>>().join("\n----\n")
    }
}

async fn status_of(client: &reqwest::Client, gw: &Gateway, path: &str, cookie: Option<&str>) -> u16 {
    let mut req = client.get(gw.host_url("acme.test", path));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("__Host-portcullis-prod={c}"));
    }
    match req.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// If this broke, a session ended on one replica (a stolen laptop, a fired employee)
/// would keep working on the others until their cache expired (up to 1 s of polling).
/// Each replica's cache holds the session when it is revoked, so only the pushed event
/// can make it refuse, and the very first request after the revocation returned must be
/// refused everywhere (the revocation waits for the others' acknowledgements).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_is_refused_on_the_others_at_once() {
    let r = replicas().await;
    let mut latencies = Vec::new();
    for round in 0..10 {
        let subject = format!("alice{round}");
        let actor = r.plant(&subject).await;
        let victim = r.plant(&subject).await;
        // Cached on every replica.
        for i in 0..3 {
            assert_eq!(r.status(i, PROTECTED, Some(&victim.cookie)).await, 200, "{}", r.logs());
        }
        let started = Instant::now();
        r.revoke(0, &actor, &victim).await;
        let took = started.elapsed();
        assert!(took < PUSH_BOUND, "the revocation took {took:?}");
        latencies.push(took);
        let (one, two, three) = tokio::join!(
            r.status(0, PROTECTED, Some(&victim.cookie)),
            r.status(1, PROTECTED, Some(&victim.cookie)),
            r.status(2, PROTECTED, Some(&victim.cookie)),
        );
        assert_eq!([one, two, three], [401; 3], "round {round}\n{}", r.logs());
        // The actor's own session is untouched everywhere.
        for i in 0..3 {
            assert_eq!(r.status(i, PROTECTED, Some(&actor.cookie)).await, 200);
        }
    }
    latencies.sort();
    println!(
        "revocation on replica 1, returning once replicas 2 and 3 acted on it: p50 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        latencies[latencies.len() - 1]
    );
}

/// If this broke, a tenant cut off on one replica during an incident would still be
/// served by the others until their next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_trip_on_one_replica_is_refused_on_all() {
    let r = replicas().await;
    let s = r.plant("bob").await;
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&s.cookie)).await, 200);
        assert_eq!(r.status(i, PUBLIC, None).await, 200);
    }
    let trip = r.clients[1]
        .put(r.gws[1].admin_url("/v1/tenants/acme/breaker"))
        .bearer_auth(&r.token)
        .json(&serde_json::json!({"reason": "incident 42"}))
        .send()
        .await
        .expect("trip");
    assert_eq!(trip.status(), 200);
    // The trip returned once every replica put it on its board.
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&s.cookie)).await, 423, "replica {}", i + 1);
    }
    for i in 0..3 {
        assert_eq!(r.status(i, PUBLIC, None).await, 423, "the whole tenant is cut off");
    }
    // The reset on replica 3 reaches the others too; the tripped sessions stay ended.
    let reset = r.clients[2]
        .delete(r.gws[2].admin_url("/v1/tenants/acme/breaker"))
        .bearer_auth(&r.token)
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), 200);
    for i in 0..3 {
        assert_eq!(r.status(i, PUBLIC, None).await, 200, "reset seen on replica {}", i + 1);
        assert_eq!(r.status(i, PROTECTED, Some(&s.cookie)).await, 401);
    }
}

/// If this broke, a replica whose subscription was dropped (while its store connection
/// stays up) would serve sessions from its cache without hearing revocations: with
/// pub/sub a missed event is gone for good. Re-subscribing is held off with an ACL rule
/// for a while, so the fail-closed window can be observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_fails_closed_until_it_is_back() {
    let r = replicas().await;
    let s = r.plant("carol").await;
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&s.cookie)).await, 200);
    }
    assert_eq!(r.redis.cli(&["ACL", "SETUSER", "default", "-subscribe"]), "OK");
    let killed: u32 = r.redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).parse().unwrap();
    assert!(killed >= 6, "each replica follows both tiers: {killed}");
    for i in 0..3 {
        r.until_status(i, Some(&s.cookie), 503, Duration::from_secs(2)).await;
        assert_eq!(r.status(i, PUBLIC, None).await, 200, "public routes keep working");
        let (code, body) = r.readyz(i).await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["ready"], false);
        let reasons = body["reasons"].to_string();
        assert!(reasons.contains("session events:"), "{reasons}");
    }
    // Still refused a while later: the replicas keep trying, and keep failing closed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&s.cookie)).await, 503);
    }
    assert_eq!(r.redis.cli(&["ACL", "SETUSER", "default", "+subscribe"]), "OK");
    let back = Instant::now();
    for i in 0..3 {
        r.until_status(i, Some(&s.cookie), 200, RECOVERY_BOUND).await;
        assert_eq!(r.readyz(i).await.0, 200);
    }
    println!("subscriptions back and serving after {:?}", back.elapsed());
    assert!(r.gws[0].logs().contains("subscription lost"), "the loss is logged");
}

/// If this broke, a revoked session could be served while Redis is away (from a cache
/// nobody can invalidate any more), sessions would be trusted on a Redis that lost
/// them, or replicas would stay broken after Redis came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_never_serves_a_revoked_session() {
    let mut r = replicas().await;
    let actor = r.plant("dave").await;
    let victim = r.plant("dave").await;
    let live = r.plant("erin").await;
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&victim.cookie)).await, 200);
    }

    // Load: the victim's session round-robin on every replica, and public requests.
    type Log = Arc<Mutex<Vec<(Instant, usize, u16)>>>;
    let victim_log: Log = Arc::default();
    let public_log: Log = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for (log, cookie) in [
        (victim_log.clone(), Some(victim.cookie.clone())),
        (public_log.clone(), None),
    ] {
        let targets: Vec<(reqwest::Client, String)> = (0..3)
            .map(|i| {
                let path = if cookie.is_some() { PROTECTED } else { PUBLIC };
                (r.clients[i].clone(), r.gws[i].host_url("acme.test", path))
            })
            .collect();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = n % 3;
                n += 1;
                let sent = Instant::now();
                let mut req = targets[i].0.get(&targets[i].1).timeout(Duration::from_secs(5));
                if let Some(c) = &cookie {
                    req = req.header("cookie", format!("__Host-portcullis-prod={c}"));
                }
                let status = req.send().await.map_or(0, |r| r.status().as_u16());
                log.lock().unwrap().push((sent, i, status));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.revoke(0, &actor, &victim).await;
    let revoked = Instant::now();
    r.redis.kill();

    // Redis is down: sessions fail closed everywhere, public routes keep working.
    for i in 0..3 {
        r.until_status(i, Some(&live.cookie), 503, Duration::from_secs(2)).await;
        assert_eq!(r.status(i, PUBLIC, None).await, 200);
        let (code, body) = r.readyz(i).await;
        assert_eq!(code, 503, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&live.cookie)).await, 503);
    }

    r.redis.spawn();
    let back = Instant::now();
    for i in 0..3 {
        r.until_status(i, Some(&live.cookie), 200, RECOVERY_BOUND).await;
        assert_eq!(r.readyz(i).await.0, 200, "{}", r.readyz(i).await.1);
    }
    let recovered = back.elapsed();
    assert!(recovered < RECOVERY_BOUND);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&victim.cookie)).await, 401, "still revoked");
    }

    let victim_log = victim_log.lock().unwrap();
    let served_after: Vec<_> = victim_log
        .iter()
        .filter(|(sent, _, status)| *sent >= revoked && *status == 200)
        .collect();
    assert!(
        served_after.is_empty(),
        "the revoked session was served after the revocation returned: {served_after:?}"
    );
    let fail_closed = victim_log.iter().filter(|(_, _, s)| *s == 503).count();
    assert!(fail_closed > 0, "no request hit the Redis outage");
    let public_log = public_log.lock().unwrap();
    assert!(public_log.len() > 10);
    let public_failures: Vec<_> = public_log.iter().filter(|(_, _, s)| *s != 200).collect();
    assert!(
        public_failures.is_empty(),
        "public requests failed: {public_failures:?}"
    );
    println!(
        "Redis outage: {} victim requests ({} fail-closed 503), {} public requests all 200; recovered {recovered:?} after Redis restarted",
        victim_log.len(),
        fail_closed,
        public_log.len()
    );
}

/// If this broke, a policy change rolled out to every replica's files but applied (SIGHUP,
/// `/v1/reload`, an approved change) on one replica only would leave the others serving
/// the old policy until someone reloaded each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_on_one_replica_reloads_the_others() {
    let r = replicas().await;
    for i in 0..3 {
        assert_eq!(r.status(i, "/open/x", None).await, 401);
    }
    for gw in &r.gws {
        let path = gw.policy_dir.join("tenants/acme.toml");
        let policy = std::fs::read_to_string(&path).unwrap();
        let opened = policy.replacen(
            "[[routes]]\nprefix = \"/public/\"",
            "[[routes]]\nprefix = \"/open/\"\naccess = \"public\"\n\n[[routes]]\nprefix = \"/public/\"",
            1,
        );
        assert_ne!(opened, policy);
        std::fs::write(&path, opened).unwrap();
    }
    r.gws[0].signal("HUP");
    for i in 0..3 {
        let start = Instant::now();
        while r.status(i, "/open/x", None).await != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "replica {} still serves the old policy\n{}",
                i + 1,
                r.gws[i].logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for i in 1..3 {
        let (_, ready) = r.readyz(i).await;
        assert_eq!(
            ready["policy"]["last_reload"]["trigger"],
            portcullis::replicas::REPLICA_TRIGGER,
            "{ready}"
        );
    }
    // Replica 1's reload was its own (SIGHUP), and the others' were not echoed back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.readyz(0).await.1["policy"]["last_reload"]["trigger"], "SIGHUP");
}

/// `portcullis <args> --config <replica 1's policy>`, against the running replicas' store.
fn cli(r: &Replicas, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&r.gws[0].policy_dir)
        .env("USER", "olivia")
        .output()
        .expect("run the portcullis CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// If this broke, an operator ending a session or cutting off a tenant from the command
/// line would leave every running replica serving it from its cache for up to a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_revokes_and_trips_on_every_running_replica_at_once() {
    let r = replicas().await;
    let victim = r.plant("frank").await;
    let other = r.plant("grace").await;
    for i in 0..3 {
        assert_eq!(r.status(i, PROTECTED, Some(&victim.cookie)).await, 200);
        assert_eq!(r.status(i, PROTECTED, Some(&other.cookie)).await, 200);
    }
    let out = cli(
        &r,
        &[
            "sessions",
            "revoke",
            "--tenant",
            "acme",
            "--session",
            &victim.record.public_id(),
        ],
    );
    assert!(out.contains("ended 1 session"), "{out}");
    for i in 0..3 {
        assert_eq!(
            r.status(i, PROTECTED, Some(&victim.cookie)).await,
            401,
            "replica {}",
            i + 1
        );
        assert_eq!(r.status(i, PROTECTED, Some(&other.cookie)).await, 200);
    }
    cli(
        &r,
        &["breaker", "trip", "--tenant", "acme", "--reason", "from the shell"],
    );
    for i in 0..3 {
        assert_eq!(r.status(i, PUBLIC, None).await, 423, "replica {}", i + 1);
    }
}

/// If this broke, an attacker who spreads password guesses over the replicas behind a
/// load balancer would get a budget per replica instead of one per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guesses_spread_over_replicas_share_one_budget() {
    let r = replicas().await;
    let users = Accounts::open_url(&r.redis.url()).await;
    let gail = users.create("acme", "gail", &[], true).await;
    let guesser = TestUser::known("acme", "prod", "gail", "not-her-password", "JBSWY3DPEHPK3PXP");
    let attempts = portcullis::auth::login::ACCOUNT_ATTEMPTS;
    for n in 0..attempts {
        let i = usize::try_from(n).unwrap() % 3;
        let r2 = Agent::new(&r.gws[i], "acme.test")
            .api_password_step(&guesser, None)
            .await;
        assert_eq!(r2.status, 401, "guess {} on replica {}: {}", n + 1, i + 1, r2.body);
    }
    // Each replica saw at most 4 guesses; the account's budget of 10 is used up on all.
    for i in 0..3 {
        let right = Agent::new(&r.gws[i], "acme.test").api_password_step(&gail, None).await;
        assert_eq!(right.status, 429, "replica {}: {}", i + 1, right.body);
        assert!(right.header("retry-after").is_some());
    }
}

/// `portcullis demo --store redis://...` on a free port, in a data dir of its own;
/// SIGTERM on drop.
struct DemoReplica {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl DemoReplica {
    fn start(store: &str) -> DemoReplica {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let child = Command::new(BIN)
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--store",
                store,
            ])
            .arg("--data")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn demo");
        DemoReplica { child, dir }
    }

    /// Its demo.json, once written.
    async fn demo_json(&self) -> serde_json::Value {
        let path = self.dir.path().join("data");
        for _ in 0..400 {
            if let Some(v) = demo_json(&path) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no demo.json: {}",
            std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
        );
    }
}

impl Drop for DemoReplica {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// If this broke, demo replicas on one Redis would each print their own operator tokens
/// and keys: a token from replica 1 would get 401 on replica 2, a sign-in could not
/// continue on another replica, and assertions of one would not verify with the other's
/// keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_replicas_on_one_redis_act_as_one_gateway() {
    let redis = RedisServer::start();
    let one = DemoReplica::start(&redis.url());
    let first = one.demo_json().await;
    let two = DemoReplica::start(&redis.url());
    let second = two.demo_json().await;
    assert_eq!(first["operators"], second["operators"], "one set of operator tokens");
    assert_eq!(first["users"], second["users"]);
    let addr = |v: &serde_json::Value, key: &str| -> std::net::SocketAddr {
        v[key].as_str().expect(key).parse().expect("address")
    };

    // Replica 1's operator token on replica 2's admin API.
    let token = first["operator_tokens"]["prod"].as_str().expect("prod token");
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/breakers", addr(&second, "admin")))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin API");
    assert_eq!(r.status(), 200);

    // A sign-in started on replica 1 finishes on replica 2; the session works on both.
    let alice = &first["users"][0];
    let user = TestUser::known(
        "acme",
        "prod",
        alice["username"].as_str().expect("username"),
        alice["password"].as_str().expect("password"),
        alice["totp_secret"].as_str().expect("secret"),
    );
    let mut on_one = Agent::at(addr(&first, "public"), "acme.localhost");
    let step = on_one.api_password_step(&user, None).await;
    assert_eq!(
        (step.status, step.json()["next"].as_str()),
        (200, Some("mfa")),
        "{}",
        step.body
    );
    let mut on_two = Agent::at(addr(&second, "public"), "acme.localhost");
    on_two.cookies = on_one.cookies.clone();
    let code = user.fresh_code().await;
    let done = on_two
        .post_json("/.portcullis/api/mfa", &serde_json::json!({ "code": code }))
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    on_one.cookies = on_two.cookies.clone();
    for agent in [&mut on_one, &mut on_two] {
        let me = agent.get("/.portcullis/api/whoami").await;
        assert_eq!(me.status, 200, "{}", me.body);
    }

    // One set of assertion keys.
    let jwks = |a: std::net::SocketAddr| async move {
        let mut agent = Agent::at(a, "acme.localhost");
        agent.get("/.portcullis/jwks.json").await.json()
    };
    let kids = |v: serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_string))
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kids(jwks(addr(&first, "public")).await),
        kids(jwks(addr(&second, "public")).await)
    );
}
