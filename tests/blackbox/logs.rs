//! The access log: one JSON line per request on stdout with stable field names.

use std::time::Duration;

use crate::harness::*;

/// Operators and SIEMs rely on these fields; if they went missing or were renamed,
/// dashboards and alerts would silently stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_has_tenant_tier_method_path_status_duration() {
    let (_ups, gw) = start().await;
    assert_eq!(raw_get(gw.public, "acme.test", "/public/logcheck").await.status, 200);
    assert_eq!(raw_get(gw.public, "initech.test", "/admin/logcheck").await.status, 401);
    assert_eq!(
        raw_get(gw.public, "nobody.test", "/public/logcheck-unknown")
            .await
            .status,
        421
    );

    let find = |path: &'static str| {
        let gw = &gw;
        async move {
            eventually(Duration::from_secs(5), || async {
                gw.access_log().into_iter().find(|l| l["path"] == path)
            })
            .await
        }
    };
    let line = find("/public/logcheck")
        .await
        .unwrap_or_else(|| panic!("no access log line; stdout:\n{}", gw.stdout()));
    assert_eq!(line["tenant"], "acme", "{line}");
    assert_eq!(line["tier"], "prod", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["upstream_status"], 200, "{line}");
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert!(line["request_id"].as_str().is_some_and(|s| !s.is_empty()), "{line}");

    let line = find("/admin/logcheck").await.expect("log line for the refused request");
    assert_eq!(line["tenant"], "initech", "{line}");
    assert_eq!(line["tier"], "staging", "{line}");
    assert_eq!(line["status"], 401, "{line}");

    let line = find("/public/logcheck-unknown")
        .await
        .expect("log line for the unknown host");
    assert_eq!(line["status"], 421, "{line}");
    assert_eq!(line["tenant"], "-", "{line}");
}
