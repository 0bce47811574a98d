//! The gateway's own JSON APIs answer malformed calls in their documented shape: the
//! tenant API under `/.portcullis/api/` and the admin API on the admin listener. A body
//! missing a field names the field, a wrong method is `405` with `Allow`, and every
//! refusal is `{"error","message"}` with the request id in `x-request-id` (SPEC "JSON
//! API on tenant hosts", "Operator console and observability", "Bad input").

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// A refusal as a script sees it.
#[derive(Debug)]
struct Refusal {
    status: u16,
    allow: Option<String>,
    request_id: Option<String>,
    body: Value,
}

impl Refusal {
    async fn of(resp: reqwest::Response) -> Refusal {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (status, allow, request_id) = (resp.status().as_u16(), header("allow"), header("x-request-id"));
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {status} {text:?}"));
        Refusal {
            status,
            allow,
            request_id,
            body,
        }
    }

    /// Asserts the status, the error code, the documented shape and a request id.
    fn expect(&self, status: u16, code: &str) -> &str {
        assert_eq!(
            (self.status, self.body["error"].as_str()),
            (status, Some(code)),
            "{self:?}"
        );
        let keys: Vec<&String> = self.body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error", "message", "request_id"], "{self:?}");
        let id = self
            .request_id
            .as_deref()
            .unwrap_or_else(|| panic!("no x-request-id: {self:?}"));
        assert_eq!(self.body["request_id"], id, "the body names the request too");
        assert!(
            !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id:?}"
        );
        self.body["message"].as_str().unwrap()
    }
}

/// If this broke, a script calling the tenant API with an incomplete body would not learn
/// which field is missing, a known endpoint called with the wrong method would answer
/// `404` as if it did not exist, and a refusal would lose its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_api_names_missing_fields_and_allowed_methods() {
    let (_ups, gw) = start().await;
    let client = gw.client();
    let url = |path: &str| gw.host_url("acme.test", path);

    let r = client
        .post(url("/.portcullis/api/login"))
        .json(&json!({ "username": "alice" }))
        .send()
        .await
        .unwrap();
    let r = Refusal::of(r).await;
    assert_eq!(
        r.expect(400, "bad_request"),
        "Invalid JSON body: missing field `password`."
    );
    let r = client
        .post(url("/.portcullis/api/login"))
        .json(&json!({ "username": "alice", "password": 123_456_789 }))
        .send()
        .await
        .unwrap();
    let r = Refusal::of(r).await;
    let message = r.expect(400, "bad_request");
    assert!(!message.contains("123456789"), "a value came back: {message}");

    for (method, path, allow) in [
        (Method::GET, "/.portcullis/api/login", "POST"),
        (Method::PUT, "/.portcullis/api/whoami", "GET"),
        (Method::POST, "/.portcullis/api/sessions", "GET, DELETE"),
        (Method::GET, "/.portcullis/api/sessions/abc", "DELETE"),
    ] {
        let r = Refusal::of(client.request(method.clone(), url(path)).send().await.unwrap()).await;
        r.expect(405, "method_not_allowed");
        assert_eq!(r.allow.as_deref(), Some(allow), "{method} {path}");
    }
    // A path that is no endpoint stays a 404.
    let r = Refusal::of(client.get(url("/.portcullis/api/nope")).send().await.unwrap()).await;
    r.expect(404, "not_found");
    assert_eq!(r.allow, None);
}

/// If this broke, an operator's script would get axum's plain-text answers (no request
/// id to quote, no JSON to parse) for a wrong method, an unknown path or a path that does
/// not decode, and a body missing a field would not say which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_every_refusal_in_its_shape() {
    let token = random_hex(24);
    let (_ups, gw) = start_with(|f| f.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))]).await;
    let client = gw.client();
    let call = |method: Method, path: &str| client.request(method, gw.admin_url(path)).bearer_auth(&token);

    let r = call(Method::PUT, "/v1/tenants/acme/breaker")
        .json(&json!({ "message": "Paused" }))
        .send()
        .await
        .unwrap();
    let r = Refusal::of(r).await;
    assert_eq!(
        r.expect(400, "bad_request"),
        "Invalid JSON body: missing field `reason`"
    );

    for (method, path, allow) in [
        (Method::GET, "/v1/reload", "POST"),
        (Method::PATCH, "/v1/tenants/acme/breaker", "PUT,DELETE"),
        (Method::DELETE, "/v1/breakers", "GET,HEAD"),
    ] {
        let r = Refusal::of(call(method.clone(), path).send().await.unwrap()).await;
        r.expect(405, "method_not_allowed");
        assert_eq!(r.allow.as_deref(), Some(allow), "{method} {path}");
    }
    let r = Refusal::of(call(Method::GET, "/v1/nope").send().await.unwrap()).await;
    assert_eq!(r.expect(404, "not_found"), "No such API.");
    // A path segment that is not UTF-8: axum's extractor refuses it before the handler.
    let r = Refusal::of(call(Method::PUT, "/v1/tenants/%FF/breaker").send().await.unwrap()).await;
    assert_eq!(
        r.expect(400, "bad_request"),
        "The request's path or query is malformed."
    );
    // A mistyped drill is refused, not run as a real trip.
    for query in ["dry_run=yes", "dryrun=true"] {
        let r = Refusal::of(
            call(Method::PUT, &format!("/v1/tenants/acme/breaker?{query}"))
                .json(&json!({ "reason": "x" }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.expect(400, "bad_request");
    }
    // Nothing was tripped by any of these.
    let r = call(Method::GET, "/v1/breakers").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["breakers"], json!([]), "{list}");
}
