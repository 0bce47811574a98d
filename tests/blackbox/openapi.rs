//! The OpenAPI 3.1 documents (SPEC "Operator console and observability", "JSON API on
//! tenant hosts"): `/v1/openapi.json` on the admin listener and
//! `/.portcullis/api/openapi.json` on tenant hosts, both without credentials, and each
//! describing exactly the routes the real binary serves.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::*;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

/// (path, method) of every operation of `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let upper = method.to_uppercase();
            if METHODS.contains(&upper.as_str()) {
                out.insert((path.clone(), upper));
            }
        }
    }
    out
}

/// A concrete path for a templated one (`{id}` → `x`).
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push('x');
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// If this broke, the admin document would be unreachable without a token, would list a
/// route the listener does not serve (a client would get the fallback 404/405), or the
/// listener would take a method on a documented path that the document does not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_document_matches_what_the_listener_serves() {
    let (_ups, gw) = start().await;
    let c = gw.client();
    let r = c.get(gw.admin_url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    // The routes SPEC names are all there.
    for (method, path) in [
        ("PUT", "/v1/tiers/{tier}/breaker"),
        ("DELETE", "/v1/tiers/{tier}/breaker"),
        ("PUT", "/v1/tenants/{tenant}/breaker"),
        ("DELETE", "/v1/tenants/{tenant}/breaker"),
        ("PUT", "/v1/tenants/{tenant}/accounts/{subject}/breaker"),
        ("DELETE", "/v1/tenants/{tenant}/accounts/{subject}/breaker"),
        ("GET", "/v1/breakers"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/changes"),
        ("GET", "/v1/changes"),
        ("PATCH", "/v1/changes/{id}"),
        ("POST", "/v1/changes/{id}/approve"),
        ("POST", "/v1/changes/{id}/reject"),
        ("GET", "/v1/openapi.json"),
    ] {
        assert!(
            ops.contains(&(path.into(), method.into())),
            "{method} {path} not documented"
        );
    }
    let paths: BTreeSet<&String> = ops.iter().map(|(p, _)| p).collect();
    for path in paths {
        for method in METHODS {
            let url = gw.admin_url(&concrete(path));
            let r = c
                .request(method.parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let documented = ops.contains(&(path.clone(), method.to_string()));
            if !documented {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            } else if path == "/v1/openapi.json" {
                assert_eq!(status, 200, "{method} {path}");
            } else {
                // Served: the handler asks for the token (not the router's 404/405).
                assert_eq!(
                    status, 401,
                    "{method} {path} is documented but not served as documented"
                );
            }
        }
    }
}

/// If this broke, a script could not fetch the tenant API's document without a session,
/// or the document would list an endpoint that answers "No such API" (or a method that
/// answers 405), or hide a method that an endpoint takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_document_matches_what_the_host_serves() {
    let (ups, gw) = start().await;
    let r = raw_get(gw.public, "globex.test", "/.portcullis/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["session_cookie"]["name"],
        "__Host-portcullis-prod"
    );
    let ops = operations(&doc);
    for (method, path) in [
        ("POST", "/.portcullis/api/login"),
        ("POST", "/.portcullis/api/mfa"),
        ("GET", "/.portcullis/api/sessions"),
        ("DELETE", "/.portcullis/api/sessions/{id}"),
        ("DELETE", "/.portcullis/api/sessions"),
        ("GET", "/.portcullis/api/history"),
        ("GET", "/.portcullis/api/whoami"),
        ("GET", "/.portcullis/status"),
        ("GET", "/.portcullis/api/admin/users"),
        ("PUT", "/.portcullis/api/admin/accounts/{subject}/breaker"),
        ("DELETE", "/.portcullis/api/admin/accounts/{subject}/breaker"),
        ("PUT", "/.portcullis/api/admin/sso"),
        ("POST", "/.portcullis/api/admin/sso/rollback"),
    ] {
        assert!(
            ops.contains(&(path.into(), method.into())),
            "{method} {path} not documented"
        );
    }
    let mut agent = Agent::new(&gw, "globex.test");
    // The tenant admin's endpoints check the role before the method, so they are probed
    // with a tenant admin's session.
    let gus = Accounts::open(&gw)
        .await
        .create("globex", "gus", &["tenant-admin"], true)
        .await;
    let mut admin = Agent::new(&gw, "globex.test");
    admin.api_login(&gus).await;
    let paths: BTreeSet<&String> = ops.iter().map(|(p, _)| p).collect();
    for path in paths {
        let tenant_admins = path.starts_with("/.portcullis/api/admin/");
        let agent = if tenant_admins { &mut admin } else { &mut agent };
        for method in METHODS {
            let r = agent
                .send(
                    method.parse().unwrap(),
                    &concrete(path),
                    &[("accept", "application/json")],
                    Some(("application/json", b"{}".to_vec())),
                )
                .await;
            let documented = ops.contains(&(path.clone(), method.to_string()));
            if documented {
                // For the tenant admin, a 404 of the resource (`x` names no session,
                // user or tripped breaker) is fine; one of the route is not.
                let no_such_api = r.status == 404 && (!tenant_admins || r.body.contains("No such API"));
                assert!(
                    !no_such_api && r.status != 405,
                    "{method} {path} is documented but answers {}: {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(
                    r.status, 405,
                    "{method} {path} is served but not documented: {}",
                    r.body
                );
                // Outside this API (the status endpoint) the Allow is checked in review_fixes.
                if path.starts_with("/.portcullis/api/") {
                    let documented: Vec<&str> = METHODS
                        .into_iter()
                        .filter(|m| ops.contains(&(path.clone(), m.to_string())))
                        .collect();
                    let mut allow: Vec<&str> = r.header("allow").unwrap_or_default().split(", ").collect();
                    allow.sort_by_key(|m| METHODS.iter().position(|x| x == m));
                    assert_eq!(allow, documented, "{method} {path}: Allow differs from the document");
                }
            }
        }
    }
    assert_eq!(ups.total(), 0, "the reserved prefix reached the upstream");
}

/// If this broke, an audit page size or position outside what the document allows would
/// be clamped or wrapped silently (schemathesis found both) instead of refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_paging_outside_the_documented_range_is_refused() {
    let token = random_hex(24);
    let (_ups, gw) = start_with(|f| f.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))]).await;
    let c = gw.client();
    for (query, want) in [
        ("limit=1000", 200),
        ("limit=1&after=0", 200),
        ("limit=0", 400),
        ("limit=1001", 400),
        ("limit=81431060298016464177619038896128", 400),
        ("after=-1", 400),
        ("after=9223372036854775808", 400),
    ] {
        let r = c
            .get(gw.admin_url(&format!("/v1/audit?{query}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, want, "{query}: {body}");
        if want == 400 {
            assert_eq!(body["error"], "bad_request", "{query}: {body}");
        }
    }
}
