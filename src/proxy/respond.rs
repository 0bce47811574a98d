//! The public listener's one mapping from refusal to response (and the one from an
//! upstream failure to a refusal), and the security headers every gateway-made response
//! carries.
//!
//! Clients see a status, a short message and a request id; never inner error text,
//! upstream addresses or versions. JSON for API clients, a small HTML page for browsers.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::upstream::UpstreamError;
use crate::upstream::guard::Rejection;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or ambiguous request (400).
    BadRequest(&'static str),
    /// Host names no tenant (421).
    UnknownHost,
    /// Authentication needed (401, or 302 to the login page for browsers).
    NeedsSession { login_path: String },
    /// Signed in but not allowed (403).
    Forbidden(&'static str),
    /// Nothing here (404).
    NotFound,
    /// Method never allowed through the gateway (405).
    MethodNotAllowed,
    /// Declared body larger than the route allows (413).
    PayloadTooLarge,
    /// The upstream could not be reached or answered badly (502).
    BadGateway,
    /// The upstream did not answer in time (504).
    GatewayTimeout,
    /// The gateway cannot serve this yet (503).
    Unavailable(&'static str),
    /// The upstream's circuit breaker is open or its bulkhead is full (503 with Retry-After).
    UpstreamUnavailable { retry_after_secs: u64, overloaded: bool },
    /// A kill switch covers the tenant or account (423); `message` is the one chosen
    /// for users when the switch was tripped.
    Locked { message: String },
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::NeedsSession { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BadGateway => StatusCode::BAD_GATEWAY,
            Refusal::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Locked { .. } => StatusCode::LOCKED,
            Refusal::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason code and the message users see.
    pub(super) fn code_and_message(&self) -> (&'static str, &'static str) {
        match self {
            Refusal::BadRequest(m) => ("bad_request", m),
            Refusal::UnknownHost => ("unknown_host", "This gateway does not serve that host."),
            Refusal::NeedsSession { .. } => ("unauthenticated", "Sign-in required."),
            Refusal::Forbidden(m) => ("forbidden", m),
            Refusal::NotFound => ("not_found", "Not found."),
            Refusal::MethodNotAllowed => ("method_not_allowed", "Method not allowed."),
            Refusal::PayloadTooLarge => ("payload_too_large", "Request body too large."),
            Refusal::BadGateway => ("bad_gateway", "The application could not be reached."),
            Refusal::GatewayTimeout => ("gateway_timeout", "The application did not answer in time."),
            Refusal::Unavailable(m) => ("unavailable", m),
            Refusal::Locked { .. } => ("suspended", "Access is suspended."),
            Refusal::UpstreamUnavailable { overloaded: true, .. } => {
                ("overloaded", "The application is busy; try again shortly.")
            }
            Refusal::UpstreamUnavailable { overloaded: false, .. } => (
                "upstream_unavailable",
                "The application is failing; requests are paused briefly.",
            ),
        }
    }
}

/// The one mapping from an upstream failure to the listener's answer.
impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::MalformedTarget => Refusal::BadRequest("Malformed request target."),
            UpstreamError::Rejected(Rejection::CircuitOpen { retry_after_secs }) => Refusal::UpstreamUnavailable {
                retry_after_secs,
                overloaded: false,
            },
            UpstreamError::Rejected(Rejection::Overloaded) => Refusal::UpstreamUnavailable {
                retry_after_secs: 1,
                overloaded: true,
            },
            UpstreamError::TimedOut => Refusal::GatewayTimeout,
            // Client set-up errors stop a policy from loading, so they never reach a
            // request; were one to, the upstream is as unreachable as after a failure.
            UpstreamError::Failed
            | UpstreamError::CaCertificate(_)
            | UpstreamError::ClientCertificate(_)
            | UpstreamError::Tls(_) => Refusal::BadGateway,
        }
    }
}

/// True when the client prefers an HTML page (a browser navigation).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Builds the response for a refusal.
pub fn refusal(refusal: &Refusal, html: bool, request_id: &str) -> Response<ProxyBody> {
    let status = refusal.status();
    if let Refusal::NeedsSession { login_path } = refusal
        && html
    {
        let mut resp = page(
            StatusCode::FOUND,
            "Sign-in required",
            "Redirecting to sign-in.",
            request_id,
        );
        if let Ok(loc) = HeaderValue::from_str(login_path) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        return resp;
    }
    let (code, message) = refusal.code_and_message();
    let message = match refusal {
        Refusal::Locked { message } => message.as_str(),
        _ => message,
    };
    let mut resp = if html {
        page(
            status,
            status.canonical_reason().unwrap_or("Error"),
            message,
            request_id,
        )
    } else {
        json_error(status, code, message, request_id)
    };
    if let Refusal::UpstreamUnavailable { retry_after_secs, .. } = refusal
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if status == StatusCode::BAD_REQUEST {
        // A malformed request may have left the connection's framing unknown: close it.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// `{"error","message","request_id"}` with the security headers.
pub fn json_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "message": message, "request_id": request_id });
    json(status, &body)
}

/// A JSON response with the security headers.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    security_headers(resp.headers_mut());
    resp
}

/// A minimal accessible HTML page; `title` and `message` are escaped.
pub fn page(status: StatusCode, title: &str, message: &str, request_id: &str) -> Response<ProxyBody> {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title></head>\
         <body><main><h1>{t}</h1><p>{m}</p><p><small>Request id: {r}</small></p></main></body></html>",
        t = escape_html(title),
        m = escape_html(message),
        r = escape_html(request_id),
    );
    let mut resp = Response::new(ProxyBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(resp.headers_mut());
    resp
}

/// Headers every gateway-made response carries (no caching, no framing, no sniffing,
/// no referrer, a CSP that allows nothing foreign).
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    );
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status() {
        let cases = [
            (Refusal::BadRequest("x"), 400),
            (Refusal::UnknownHost, 421),
            (
                Refusal::NeedsSession {
                    login_path: "/.portcullis/login?rd=%2F".into(),
                },
                401,
            ),
            (Refusal::Forbidden("x"), 403),
            (Refusal::NotFound, 404),
            (Refusal::MethodNotAllowed, 405),
            (Refusal::PayloadTooLarge, 413),
            (Refusal::BadGateway, 502),
            (Refusal::Unavailable("x"), 503),
            (Refusal::GatewayTimeout, 504),
        ];
        for (r, status) in cases {
            assert_eq!(refusal(&r, false, "id").status().as_u16(), status, "{r:?}");
        }
    }

    #[test]
    fn each_upstream_error_has_its_answer() {
        let cases = [
            (UpstreamError::MalformedTarget, 400, None),
            (UpstreamError::Failed, 502, None),
            (UpstreamError::TimedOut, 504, None),
            (
                UpstreamError::Rejected(Rejection::CircuitOpen { retry_after_secs: 7 }),
                503,
                Some("7"),
            ),
            (UpstreamError::Rejected(Rejection::Overloaded), 503, Some("1")),
            (UpstreamError::Tls(rustls::Error::General("x".into())), 502, None),
        ];
        for (e, status, retry_after) in cases {
            let text = e.to_string();
            let resp = refusal(&Refusal::from(e), false, "id");
            assert_eq!(resp.status().as_u16(), status, "{text}");
            let header = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap());
            assert_eq!(header, retry_after, "{text}");
        }
    }

    #[test]
    fn browsers_needing_a_session_are_redirected_to_login() {
        let r = Refusal::NeedsSession {
            login_path: "/.portcullis/login?rd=%2Fx".into(),
        };
        let resp = refusal(&r, true, "id");
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers()[header::LOCATION], "/.portcullis/login?rd=%2Fx");
    }

    #[test]
    fn pages_escape_their_text() {
        assert_eq!(
            escape_html("<img src=x onerror=\"a\">&'"),
            "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;"
        );
    }
}
