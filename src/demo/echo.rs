//! The demo's built-in upstream app: answers any request with JSON describing what it
//! received, so a newcomer sees exactly what the gateway forwards, and verifies the
//! `Portcullis-Assertion` header the way a real app should: against the tier's JWKS,
//! fetched from the gateway (`/.portcullis/jwks.json`) and fetched again on an unknown
//! key id. A browser (`Accept` naming `text/html`) gets the same data as a small page
//! (askama, escaped) with links to the account page and sign-out; everything else gets
//! the JSON.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use askama::Template;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use crate::assertion::{AssertionError, Verifier};

/// How the echo app of one tenant checks assertions.
pub struct AssertionCheck {
    /// The tenant the app belongs to (the assertion's `aud`).
    pub tenant: String,
    /// A host of the tenant, to ask the gateway for the tier's JWKS.
    pub host: String,
    /// The gateway's public listener, known once it is bound.
    pub gateway: OnceLock<SocketAddr>,
    /// The last JWKS fetched.
    verifier: Mutex<Option<Arc<Verifier>>>,
}

impl AssertionCheck {
    /// A check for `tenant`, fetching keys through `host`.
    pub fn new(tenant: &str, host: &str) -> Arc<Self> {
        Arc::new(AssertionCheck {
            tenant: tenant.to_string(),
            host: host.to_string(),
            gateway: OnceLock::new(),
            verifier: Mutex::new(None),
        })
    }

    /// `{"valid", "claims"}` or `{"valid": false, "error"}` for a request's header.
    async fn check(&self, token: Option<&str>) -> serde_json::Value {
        let Some(token) = token else {
            return json!({ "valid": false, "claims": {}, "error": "no Portcullis-Assertion header" });
        };
        let now = crate::clock::unix_now();
        let mut result = Err(AssertionError::UnknownKey);
        for refresh in [false, true] {
            let verifier = match self.verifier(refresh).await {
                Ok(v) => v,
                Err(e) => return json!({ "valid": false, "claims": {}, "error": e }),
            };
            result = verifier.verify(token, None, &self.tenant, now);
            // An unknown key id may be a key rotated in since the last fetch: fetch once more.
            if !matches!(result, Err(AssertionError::UnknownKey)) {
                break;
            }
        }
        match result {
            Ok(claims) => json!({ "valid": true, "claims": claims }),
            Err(e) => json!({ "valid": false, "claims": {}, "error": e.to_string() }),
        }
    }

    async fn verifier(&self, refresh: bool) -> Result<Arc<Verifier>, String> {
        if !refresh && let Some(v) = self.verifier.lock().ok().and_then(|g| g.clone()) {
            return Ok(v);
        }
        let gateway = self.gateway.get().ok_or("the gateway is not up yet")?;
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<http_body_util::Empty<Bytes>>();
        let req = Request::get(format!("http://{gateway}/.portcullis/jwks.json"))
            .header(http::header::HOST, &self.host)
            .body(http_body_util::Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|_| "cannot fetch the JWKS".to_string())?;
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|_| "cannot read the JWKS".to_string())?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| "JWKS is not UTF-8".to_string())?;
        let verifier = Arc::new(Verifier::from_jwks_json(text).map_err(|e| e.to_string())?);
        if let Ok(mut slot) = self.verifier.lock() {
            *slot = Some(verifier.clone());
        }
        Ok(verifier)
    }
}

/// Starts an echo app on an ephemeral 127.0.0.1 port and returns its address.
pub async fn spawn(check: Arc<AssertionCheck>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let check = check.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let check = check.clone();
                    async move { echo(req, &check).await }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>, check: &AssertionCheck) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let assertion = check
        .check(req.headers().get("portcullis-assertion").and_then(|v| v.to_str().ok()))
        .await;
    let body = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
        "assertion": assertion,
    });
    let wants_html = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html && let Ok(page) = EchoPage::of(&check.tenant, &body).render() {
        return Ok(respond(page, "text/html; charset=utf-8"));
    }
    Ok(respond(body.to_string(), "application/json"))
}

fn respond(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    // Like any app behind the gateway, the page allows only same-origin styles.
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    resp
}

/// The echo's answer as a page: the same data as the JSON.
#[derive(Template)]
#[template(path = "echo.html")]
struct EchoPage {
    tenant: String,
    user: Option<String>,
    method: String,
    path: String,
    query: Option<String>,
    valid: bool,
    error: Option<String>,
    claims: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl EchoPage {
    /// Reads the page's fields from the echo's JSON answer.
    fn of(tenant: &str, body: &serde_json::Value) -> Self {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let pairs = |v: &serde_json::Value| -> Vec<(String, String)> {
            v.as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default()
        };
        let assertion = &body["assertion"];
        EchoPage {
            tenant: tenant.to_string(),
            user: body["headers"]["x-portcullis-user"].as_str().map(str::to_string),
            method: text(&body["method"]),
            path: text(&body["path"]),
            query: body["query"].as_str().map(str::to_string),
            valid: assertion["valid"].as_bool().unwrap_or(false),
            error: assertion["error"].as_str().map(str::to_string),
            claims: pairs(&assertion["claims"]),
            headers: pairs(&body["headers"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, a browser would see raw JSON, or a header value could inject markup
    /// into the demo page.
    #[test]
    fn the_page_shows_the_same_data_escaped() {
        let body = json!({
            "method": "GET", "path": "/x", "query": "a=<b>",
            "headers": {"x-portcullis-user": "alice", "x-evil": "<script>alert(1)</script>"},
            "assertion": {"valid": true, "claims": {"sub": "alice", "roles": ["admin"]}},
        });
        let page = EchoPage::of("acme", &body).render().unwrap();
        assert!(page.contains("Hello, alice"), "{page}");
        assert!(
            page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("href=\"/.portcullis/account\""), "{page}");
        assert!(
            page.contains("[&#34;admin&#34;]") || page.contains("[&quot;admin&quot;]"),
            "{page}"
        );
    }
}
