//! Kill switch benchmark (issue: time from a trip returning to the last request in scope
//! served). Starts `portcullis demo` on free ports, writes N live sessions of tenant
//! `acme` straight into its store, drives authenticated requests with those sessions from
//! many concurrent clients, trips the tenant's switch through the admin API, and reports:
//! how long the trip call took, how many requests in scope got 200 after it returned
//! (the target is zero), and when the last 200 arrived relative to the return.
//!
//! Usage: `cargo run --release --example bench_killswitch -- [--sessions 10000]
//! [--clients 32] [--bin target/release/portcullis] [--store redis://127.0.0.1:6379]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::records::{SessionRecord, session_id_hash};
use portcullis::store::Stores;

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

#[tokio::main]
async fn main() {
    let sessions: usize = arg("--sessions", "10000").parse().unwrap();
    let clients: usize = arg("--clients", "32").parse().unwrap();
    let bin = arg("--bin", "target/release/portcullis");
    let store_url = arg("--store", "");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (public, admin) = (free_port(), free_port());
    let mut command = Command::new(&bin);
    command.args(["demo", "--data"]).arg(&data);
    if !store_url.is_empty() {
        command.args(["--store", &store_url]);
    }
    let _gateway = Killed(
        command
            .args(["--listen", &format!("127.0.0.1:{public}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway (build it with cargo build --release first)"),
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .build()
        .unwrap();
    let demo_json = data.join("demo.json");
    let started = Instant::now();
    while !demo_json.exists()
        || http
            .get(format!("http://127.0.0.1:{admin}/healthz"))
            .send()
            .await
            .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(30), "gateway did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let demo: serde_json::Value = serde_json::from_slice(&std::fs::read(&demo_json).unwrap()).unwrap();
    let token = demo["operator_tokens"]["prod"].as_str().unwrap().to_string();

    eprintln!("writing {sessions} sessions of acme into the store...");
    let url = if store_url.is_empty() {
        format!("sqlite:{}", data.display())
    } else {
        store_url.clone()
    };
    let stores = Stores::open(&url, ["prod"]).await.unwrap();
    let store = stores.tier("prod").unwrap();
    let now = portcullis::clock::unix_now();
    let mut cookies = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let raw: [u8; 32] = rand::random();
        use base64::Engine;
        cookies.push(format!(
            "__Host-portcullis-prod={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        ));
        store
            .create_session(&SessionRecord {
                id_hash: session_id_hash(&raw),
                tenant: "acme".into(),
                tier: "prod".into(),
                subject: format!("user{}", i % 1000),
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
            })
            .await
            .unwrap();
    }
    let cookies = Arc::new(cookies);

    // Load: every client walks the sessions round robin and records when each answer arrived.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let epoch = Instant::now();
    let mut workers = Vec::new();
    for c in 0..clients {
        let (http, cookies, stop) = (http.clone(), cookies.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = c;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let cookie = &cookies[i % cookies.len()];
                i += clients;
                let sent = epoch.elapsed();
                let status = match http
                    .get(format!("http://127.0.0.1:{public}/app/data"))
                    .header("host", "acme.localhost")
                    .header("cookie", cookie)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                seen.push((sent, epoch.elapsed(), status));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let trip_sent = epoch.elapsed();
    let resp = http
        .put(format!("http://127.0.0.1:{admin}/v1/tenants/acme/breaker"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reason": "benchmark", "message": "paused"}))
        .send()
        .await
        .unwrap();
    let trip_returned = epoch.elapsed();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(status.is_success(), "trip failed: {status} {body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }

    let before: Vec<_> = all.iter().filter(|(_, recv, _)| *recv < trip_sent).collect();
    let ok_before = before.iter().filter(|(_, _, s)| *s == 200).count();
    let served_after = all
        .iter()
        .filter(|(_, recv, s)| *s == 200 && *recv > trip_returned)
        .count();
    let sent_after_ok = all
        .iter()
        .filter(|(sent, _, s)| *s == 200 && *sent > trip_returned)
        .count();
    let last_ok = all
        .iter()
        .filter(|(_, _, s)| *s == 200)
        .map(|(_, recv, _)| *recv)
        .max()
        .unwrap_or_default();
    let locked_after = all
        .iter()
        .filter(|(sent, _, s)| *s == 423 && *sent > trip_returned)
        .count();
    let rate = ok_before as f64 / trip_sent.as_secs_f64();
    let last_rel_ms = (last_ok.as_secs_f64() - trip_returned.as_secs_f64()) * 1000.0;
    println!(
        "| sessions | clients | load before trip | trip call | sessions ended | 200s sent after return | 200s received after return | last 200 vs return | 423s after return |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {sessions} | {clients} | {rate:.0} req/s | {:.1} ms | {} | {sent_after_ok} | {served_after} | {last_rel_ms:+.1} ms | {locked_after} |",
        (trip_returned - trip_sent).as_secs_f64() * 1000.0,
        body["sessions_ended"],
    );
}
