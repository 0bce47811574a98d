//! Defects found in review, each reproduced through the real binary: the admin API's
//! `Authorization` scheme read without regard to case (RFC 9110 §11.1); `Allow` on every
//! 405 (RFC 9110 §15.5.6) of the public listener, tenant pages, tenant API and admin
//! listener; a second proposal of a pending four-eyes change answered with the pending
//! one (API and console); `source.ip` on logout events; and a log line for SIEM events
//! dropped by a sink that is slow but never fails.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::harness::*;

/// A gateway whose prod tier has the operators `olivia` and `oscar`; their tokens.
async fn with_operators() -> (Upstreams, Gateway, String, String) {
    let (olivia, oscar) = (random_hex(24), random_hex(24));
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![
            ("olivia".into(), sha256_hex(olivia.as_bytes())),
            ("oscar".into(), sha256_hex(oscar.as_bytes())),
        ];
    })
    .await;
    (ups, gw, olivia, oscar)
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An admin API call with a raw `Authorization` value; (status, body).
async fn admin_call(
    gw: &Gateway,
    method: Method,
    path: &str,
    authorization: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = plain_client()
        .request(method, gw.admin_url(path))
        .header("authorization", authorization);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

// --- 1. Authorization scheme ------------------------------------------------------------

/// If this broke, a client that spells the scheme `bearer` or `BEARER` (RFC 9110 §11.1:
/// the scheme is case-insensitive) would be refused with a valid operator token, or a
/// line without a token or with another scheme would be taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reads_the_bearer_scheme_in_any_case() {
    let (_ups, gw, olivia, _) = with_operators().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for gap in [" ", "   "] {
            let line = format!("{scheme}{gap}{olivia}");
            let (status, body) = admin_call(&gw, Method::GET, "/v1/breakers", &line, None).await;
            assert_eq!(status, 200, "{line:?}: {body}");
        }
    }
    for bad in [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "bearer    ".to_string(),
        format!("Bearer{olivia}"),
        format!("Basic {olivia}"),
        format!("Bearer\t{olivia}"),
        format!("Bearer {olivia} extra"),
        olivia.clone(),
    ] {
        let (status, body) = admin_call(&gw, Method::GET, "/v1/breakers", &bad, None).await;
        assert_eq!(status, 401, "{bad:?}: {body}");
    }
}
