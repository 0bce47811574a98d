//! Revocation propagation benchmark (issue 16: p50 and p99 over 1,000 revocations across
//! 3 replicas under load; target p99 ≤ 50 ms, aim 10 ms).
//!
//! Starts a `redis-server`, a tiny upstream and three `portcullis run` replicas on it,
//! keeps a light authenticated load on all three, then 1,000 times: puts a fresh session
//! in every replica's cache (one request each) and ends it through replica 1's session
//! center. A revocation returns once the other replicas acknowledged that they evicted
//! the session, so its duration, measured from the client, bounds the propagation time.
//! Right after it returned, replicas 2 and 3 are asked with the session: a `200` is
//! counted (the target is none), and the time until they refuse is measured too (one
//! request's round trip at best, printed as a reference). Prints Markdown tables.
//!
//! Usage: `cargo run --example bench_propagation -- [--revocations 1000] [--load 2]
//! [--bin target/debug/portcullis]` (the `bin` default follows the example's profile).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use portcullis::records::{SessionRecord, session_id_hash};
use portcullis::store::Stores;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// An upstream that answers every request `200 ok` (keep-alive, bodyless requests).
async fn upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                        if conn.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

fn write_policy(dir: &std::path::Path, upstream: u16, redis: u16) {
    for sub in ["tiers", "tenants"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[listen]\npublic = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9090\"\nplaintext = true\n\n\
             [store]\ndata = \"{}\"\nurl = \"redis://127.0.0.1:{redis}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("tiers/prod.toml"),
        "name = \"prod\"\nproduction = false\nupstream_allowlist = [\"127.0.0.1\"]\n\n\
         [keys]\ncookie = \"inline:propagation-bench-cookie-key-0123456789abcdef\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tenants/acme.toml"),
        format!(
            "id = \"acme\"\nname = \"Acme\"\ntier = \"prod\"\nhosts = [\"acme.localhost\"]\n\
             upstream = \"http://127.0.0.1:{upstream}\"\n\n\
             [[routes]]\nprefix = \"/public/\"\naccess = \"public\"\n\n\
             [[routes]]\nprefix = \"/\"\naccess = \"authenticated\"\n"
        ),
    )
    .unwrap();
}

/// A live acme session of `subject` in the store; returns its cookie value and record.
async fn plant(store: &Arc<dyn portcullis::store::TierStore>, subject: &str) -> (String, SessionRecord) {
    let raw: [u8; 32] = rand::random();
    let now = portcullis::clock::unix_now();
    let record = SessionRecord {
        id_hash: session_id_hash(&raw),
        tenant: "acme".into(),
        tier: "prod".into(),
        subject: subject.into(),
        idp: portcullis::account::LOCAL_IDP.to_string(),
        display_name: "Bench".into(),
        roles: vec![],
        auth_method: "password".into(),
        amr: vec!["pwd".into(), "otp".into()],
        mfa_at: Some(now),
        created_at: now,
        last_seen: now,
        idle_expires_at: now + 3600,
        absolute_expires_at: now + 7200,
        ip: "127.0.0.1".into(),
        user_agent: "bench".into(),
        csrf_token: "x".into(),
        sso_sid: None,
        revoked: None,
    };
    store.create_session(&record).await.unwrap();
    (base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw), record)
}

async fn status(http: &reqwest::Client, public: u16, path: &str, cookie: &str) -> u16 {
    match http
        .get(format!("http://127.0.0.1:{public}{path}"))
        .header("host", "acme.localhost")
        .header("cookie", format!("__Host-portcullis-prod={cookie}"))
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    }
}

/// Polls replica `public` until it refuses `cookie`: the time since `since`, and whether
/// the very first request was refused already.
async fn until_refused(http: &reqwest::Client, public: u16, cookie: &str, since: Instant) -> (Duration, bool) {
    let mut first = true;
    loop {
        match status(http, public, "/app/data", cookie).await {
            401 => return (since.elapsed(), first),
            200 => first = false,
            other => panic!("unexpected {other} while waiting for the revocation"),
        }
        assert!(since.elapsed() < Duration::from_secs(5), "revocation not seen in 5 s");
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let revocations: usize = arg("--revocations", "1000").parse().unwrap();
    let load: usize = arg("--load", "2").parse().unwrap();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let bin = arg(
        "--bin",
        &format!("{}/target/{profile}/portcullis", env!("CARGO_MANIFEST_DIR")),
    );
    let tmp = tempfile::tempdir().unwrap();

    let redis_port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)"),
    );
    let upstream = upstream().await;
    let policy = tmp.path().join("policy");
    write_policy(&policy, upstream, redis_port);
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let started = Instant::now();
    while Stores::open(&format!("redis://127.0.0.1:{redis_port}"), ["prod"])
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut replicas = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let (public, admin) = (free_port(), free_port());
        replicas.push(Killed(
            Command::new(&bin)
                .args(["run", "--config"])
                .arg(&policy)
                .args(["--listen", &format!("127.0.0.1:{public}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                .arg("--data")
                .arg(tmp.path().join(format!("data{i}")))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start portcullis (cargo build first, or pass --bin)"),
        ));
        ports.push((public, admin));
    }
    for (_, admin) in &ports {
        let started = Instant::now();
        loop {
            let ready = http.get(format!("http://127.0.0.1:{admin}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "replica not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stores = Stores::open(&format!("redis://127.0.0.1:{redis_port}"), ["prod"])
        .await
        .unwrap();
    let store = stores.tier("prod").unwrap();

    // Light load: `load` clients, each a request every ~5 ms round robin over the replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for c in 0..load {
        let (cookie, _) = plant(&store, &format!("load{c}")).await;
        let (http, stop, served, ports) = (http.clone(), stop.clone(), served.clone(), ports.clone());
        loaders.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                let (public, _) = ports[n % 3];
                n += 1;
                if status(&http, public, "/app/data", &cookie).await == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let (r1, r2, r3) = (ports[0].0, ports[1].0, ports[2].0);
    let mut to_two = Vec::with_capacity(revocations);
    let mut to_three = Vec::with_capacity(revocations);
    let mut to_both = Vec::with_capacity(revocations);
    let mut rtt = Vec::with_capacity(revocations);
    let mut first_refused = [0usize; 2];
    let mut revoke_call = Vec::with_capacity(revocations);
    let bench_started = Instant::now();
    for round in 0..revocations {
        let subject = format!("user{round}");
        let (actor, _) = plant(&store, &subject).await;
        let (victim, record) = plant(&store, &subject).await;
        for public in [r1, r2, r3] {
            let sent = Instant::now();
            assert_eq!(status(&http, public, "/app/data", &victim).await, 200);
            rtt.push(sent.elapsed());
        }
        let sent = Instant::now();
        let resp = http
            .delete(format!(
                "http://127.0.0.1:{r1}/.portcullis/api/sessions/{}",
                record.public_id()
            ))
            .header("host", "acme.localhost")
            .header("cookie", format!("__Host-portcullis-prod={actor}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "revocation on replica 1");
        let returned = Instant::now();
        revoke_call.push(returned - sent);
        let ((two, first_two), (three, first_three)) = tokio::join!(
            until_refused(&http, r2, &victim, returned),
            until_refused(&http, r3, &victim, returned),
        );
        first_refused[0] += usize::from(first_two);
        first_refused[1] += usize::from(first_three);
        to_two.push(two);
        to_three.push(three);
        to_both.push(two.max(three));
    }
    let elapsed = bench_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.unwrap();
    }

    for v in [&mut to_two, &mut to_three, &mut to_both, &mut rtt, &mut revoke_call] {
        v.sort();
    }
    println!(
        "_{} revocations on replica 1 in {:.1} s, 3 replicas on one Redis, `{profile}` build, \
         {load} load clients ({} authenticated requests served meanwhile)_\n",
        revocations,
        elapsed.as_secs_f64(),
        served.load(Ordering::Relaxed)
    );
    println!("| measured | p50 | p90 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, v) in [
        ("revocation on replica 1 (returns once 2 and 3 evicted)", &revoke_call),
        ("then: refused on replica 2", &to_two),
        ("then: refused on replica 3", &to_three),
        ("then: refused on both", &to_both),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.9)),
            ms(pct(v, 0.99)),
            ms(v[v.len() - 1])
        );
    }
    println!(
        "| _reference: one authenticated request's round trip_ | {} | {} | {} | {} |",
        ms(pct(&rtt, 0.5)),
        ms(pct(&rtt, 0.9)),
        ms(pct(&rtt, 0.99)),
        ms(rtt[rtt.len() - 1])
    );
    println!(
        "\nThe first request after the revocation returned was refused in {} of {revocations} \
         rounds on replica 2 and {} on replica 3 (target: all).",
        first_refused[0], first_refused[1]
    );
    let p99 = pct(&revoke_call, 0.99);
    println!(
        "\nTarget p99 ≤ 50 ms: {}",
        if p99 <= Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
}
