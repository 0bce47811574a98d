//! Writes N live sessions of one tenant straight into a store, for bench/run.sh's memory
//! row (RSS with 100,000 cached sessions). Signing in 100,000 times through the API
//! would cost 100,000 argon2id hashes; the store write is what a sign-in ends with.
//! Prints nothing but the cookie header values, one per line, to `--out`.
//!
//! Usage: `bench_sessions --store sqlite:DIR --tier bench --tenant bench --count 100000
//! --out cookies.txt`. Run it before the gateway opens the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use base64::Engine;
use portcullis::records::{SessionRecord, session_id_hash};
use portcullis::store::Stores;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store_url = arg("--store", "");
    let tier = arg("--tier", "bench");
    let tenant = arg("--tenant", "bench");
    let count: usize = arg("--count", "100000").parse().expect("--count N");
    let out = arg("--out", "cookies.txt");
    assert!(!store_url.is_empty(), "--store sqlite:DIR or redis://... is required");

    let stores = Stores::open(&store_url, [tier.as_str()]).await.expect("open the store");
    let store = stores.tier(&tier).expect("the tier's store");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out).expect("create --out"));
    for i in 0..count {
        let raw: [u8; 32] = rand::random();
        // Each session's own creation time: the gateway then has no activity to record
        // (no store write) when the row is requested shortly after.
        let now = portcullis::clock::unix_now();
        store
            .create_session(&SessionRecord {
                id_hash: session_id_hash(&raw),
                tenant: tenant.clone(),
                tier: tier.clone(),
                subject: format!("user{i}"),
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
            .expect("write a session");
        writeln!(
            file,
            "__Host-portcullis-{tier}={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
        .expect("write a cookie");
    }
    file.flush().expect("flush --out");
}
