//! The public listener's one mapping from refusal to response (and the one from an
//! upstream failure to a refusal), with the security headers every gateway-made response
//! carries (`ui::web::security_headers`, shared with the operator console).
//!
//! Clients see a status, a short message and a request id; never inner error text,
//! upstream addresses or versions. JSON for API clients; browsers get the pages' shared
//! layout (`ui::pages`, with the tenant's name when the host names one) saying what
//! happened and what to do next. Pages are rendered only here, on refusals: a request
//! that is forwarded pays nothing for them.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::ui::pages::{self, Link, MessageView};
use crate::ui::readable::{self, Moment};
use crate::upstream::guard::Rejection;
use crate::upstream::{ClientBodyFault, UpstreamError};

/// The `Allow` of a 405 for a method the gateway never passes on: the standard methods
/// it does forward (RFC 9110 §15.5.6 wants `Allow` on every 405).
pub const PROXIED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

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
    /// Method never allowed through the gateway (TRACE, CONNECT): 405 with
    /// [`PROXIED_METHODS`] in `Allow`.
    MethodNotAllowed,
    /// A gateway endpoint (such as `/.portcullis/status`) takes only these methods
    /// (405 with them in `Allow`, e.g. `"GET, HEAD"`).
    OnlyMethods(&'static str),
    /// Declared body larger than the route allows (413).
    PayloadTooLarge,
    /// The request head is larger than `limits.max_header_bytes` (431).
    HeadersTooLarge,
    /// The upstream could not be reached or answered badly (502).
    BadGateway,
    /// The upstream did not answer in time (504).
    GatewayTimeout,
    /// The gateway cannot serve this yet (503).
    Unavailable(&'static str),
    /// The upstream's circuit breaker is open or its bulkhead is full (503 with Retry-After).
    UpstreamUnavailable { retry_after_secs: u64, overloaded: bool },
    /// A kill switch covers the tenant or account (423); `message` is the one chosen
    /// for users when the switch was tripped, `since` when (unix seconds), `account`
    /// whether it covers one account rather than the whole tenant or tier.
    Locked { message: String, since: i64, account: bool },
    /// `/favicon.ico` without a session: browsers ask for it on every page, so it is
    /// answered with the gateway's icon (200) rather than a sign-in refusal.
    Icon,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::NeedsSession { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed | Refusal::OnlyMethods(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::BadGateway => StatusCode::BAD_GATEWAY,
            Refusal::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Locked { .. } => StatusCode::LOCKED,
            Refusal::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Icon => StatusCode::OK,
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
            Refusal::MethodNotAllowed | Refusal::OnlyMethods(_) => ("method_not_allowed", "Method not allowed."),
            Refusal::PayloadTooLarge => ("payload_too_large", "Request body too large."),
            Refusal::HeadersTooLarge => ("headers_too_large", "Request headers too large."),
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
            Refusal::Icon => ("icon", "The gateway's icon."),
        }
    }

    /// How the refusal reads on a browser's page: heading, what to do next, and where
    /// to go (the first link is the main action). The message is
    /// [`Refusal::code_and_message`]'s (or the kill switch's).
    fn guidance(&self, tenant_known: bool) -> (&'static str, Option<String>, &'static [Link]) {
        const START_AND_ACCOUNT: &[Link] = &[pages::START, pages::ACCOUNT, pages::SIGN_OUT];
        const START: &[Link] = &[pages::START];
        let try_again = |secs: u64| Some(format!("Try again in {}.", readable::duration(secs)));
        let (heading, next, links): (_, Option<String>, &'static [Link]) = match self {
            Refusal::BadRequest(_) => (
                "Request not understood",
                Some("Go back and try again; if this keeps happening, quote the request id below.".into()),
                START,
            ),
            Refusal::UnknownHost => (
                "Unknown site",
                Some("Check the address you typed or followed.".into()),
                &[],
            ),
            Refusal::NeedsSession { .. } => ("Sign-in required", None, &[pages::SIGN_IN]),
            Refusal::Forbidden(_) => (
                "No access",
                Some("Your account may not open this page. Ask your organisation's administrator, or sign in with another account.".into()),
                START_AND_ACCOUNT,
            ),
            Refusal::NotFound => (
                "Not found",
                Some("Check the address, or start again from the start page.".into()),
                &[pages::START, pages::ACCOUNT],
            ),
            Refusal::MethodNotAllowed | Refusal::OnlyMethods(_) => ("Not allowed", None, START),
            Refusal::PayloadTooLarge => ("Too much data", Some("Send less data at once.".into()), START),
            Refusal::HeadersTooLarge => (
                "Request too large",
                Some("Your browser sent more header data than this site accepts, often too many or too large cookies. Clear this site's cookies, then try again.".into()),
                START,
            ),
            Refusal::BadGateway | Refusal::GatewayTimeout => (
                "Application unavailable",
                Some("Reload the page in a moment to try again.".into()),
                START_AND_ACCOUNT,
            ),
            Refusal::Unavailable(_) => (
                "Unavailable",
                Some("Reload the page shortly to try again.".into()),
                START,
            ),
            Refusal::UpstreamUnavailable { retry_after_secs, .. } => (
                "Application unavailable",
                try_again((*retry_after_secs).max(1)),
                START_AND_ACCOUNT,
            ),
            Refusal::Locked { account: true, .. } => (
                "Access suspended",
                Some("Your organisation suspended this account and ended its sessions. Ask your organisation's administrator; until then you may sign in with another account.".into()),
                &[pages::SIGN_IN],
            ),
            Refusal::Locked { .. } => (
                "Access suspended",
                Some("Try again later: the sign-in page shows when access is back.".into()),
                &[pages::SIGN_IN],
            ),
            Refusal::Icon => ("Icon", None, &[]),
        };
        // Without a tenant there is no site to go to.
        (heading, next, if tenant_known { links } else { &[] })
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
            UpstreamError::ClientBody(ClientBodyFault::Malformed) => {
                Refusal::BadRequest("Malformed or incomplete request body.")
            }
            UpstreamError::ClientBody(ClientBodyFault::TooLarge) => Refusal::PayloadTooLarge,
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

/// Builds the response for a refusal. `tenant` is the display name of the host's
/// tenant, when the host names one (pages show it in their header).
pub fn refusal(refusal: &Refusal, html: bool, request_id: &str, tenant: Option<&str>) -> Response<ProxyBody> {
    let status = refusal.status();
    if let Refusal::Icon = refusal {
        return icon();
    }
    if let Refusal::NeedsSession { login_path } = refusal
        && html
    {
        let view = MessageView {
            heading: "Sign-in required",
            message: "Redirecting to sign-in.",
            links: &[pages::SIGN_IN],
            ..Default::default()
        };
        let mut resp = page(StatusCode::FOUND, view, tenant, request_id);
        if let Ok(loc) = HeaderValue::from_str(login_path) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        return resp;
    }
    let (code, message) = refusal.code_and_message();
    let message = match refusal {
        Refusal::Locked { message, .. } => message.as_str(),
        _ => message,
    };
    let mut resp = if html {
        let now = crate::clock::unix_now();
        let (heading, next, links) = refusal.guidance(tenant.is_some());
        let since = match refusal {
            Refusal::Locked { since, .. } => Some(Moment::at(*since, now)),
            _ => None,
        };
        let view = MessageView {
            heading,
            message,
            since,
            next,
            links,
            ..Default::default()
        };
        page(status, view, tenant, request_id)
    } else if let Refusal::Locked { since, .. } = refusal {
        // API clients get the time the status endpoint and the page show.
        let body = serde_json::json!({
            "error": code,
            "message": message,
            "since": crate::ui::web::time(*since),
            "request_id": request_id,
        });
        json(status, &body)
    } else {
        json_error(status, code, message, request_id)
    };
    if let Refusal::UpstreamUnavailable { retry_after_secs, .. } = refusal
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    let allow = match refusal {
        Refusal::MethodNotAllowed => Some(PROXIED_METHODS),
        Refusal::OnlyMethods(methods) => Some(*methods),
        _ => None,
    };
    if let Some(allow) = allow
        && let Ok(v) = HeaderValue::from_str(allow)
    {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    if status == StatusCode::BAD_REQUEST || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
        // A malformed request may have left the connection's framing unknown: close it.
        // (An oversized head is not read again on this connection either.)
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The gateway's icon (SVG), cacheable: it is the same for every tenant and user.
fn icon() -> Response<ProxyBody> {
    let mut resp = static_file(pages::ICON, "image/svg+xml");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    resp
}

/// The pages' stylesheet and icon for a host that names no tenant, so that the 421
/// page is styled like every other (they hold nothing of any tenant). None for any
/// other path.
pub fn unknown_host_asset(path: &str) -> Option<Response<ProxyBody>> {
    match path {
        "/.portcullis/style.css" => Some(static_file(pages::STYLE, "text/css; charset=utf-8")),
        "/.portcullis/favicon.svg" => Some(static_file(pages::ICON, "image/svg+xml")),
        _ => None,
    }
}

fn static_file(body: &'static str, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(resp.headers_mut());
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

/// A page in the layout every gateway page shares (`templates/message.html`, escaped
/// by askama), with the request id on the page and in `x-request-id`.
pub fn page(status: StatusCode, view: MessageView<'_>, tenant: Option<&str>, request_id: &str) -> Response<ProxyBody> {
    let view = MessageView {
        tenant_name: tenant.unwrap_or_default(),
        request_id: Some(request_id),
        ..view
    };
    let (status, content_type, body) = match pages::message_html(view) {
        Ok(body) => (status, "text/html; charset=utf-8", body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "page could not be rendered".to_string(),
        ),
    };
    let mut resp = Response::new(ProxyBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut()
            .insert(http::HeaderName::from_static(crate::telemetry::REQUEST_ID_HEADER), v);
    }
    security_headers(resp.headers_mut());
    resp
}

/// The hardening headers every gateway-made response carries; defined beside the other
/// page plumbing so the operator console sends the very same ones.
pub use crate::ui::web::security_headers;

/// HSTS on every answer over TLS: the gateway's own pages and refusals, and proxied
/// answers unless the app sent its own (it may preload, or widen the age). A year, with
/// subdomains: a tenant host is never meant to be reached over plain HTTP. Never sent
/// over plaintext, where browsers ignore it (RFC 6797 §7.2).
pub fn strict_transport_security(headers: &mut HeaderMap) {
    headers
        .entry(header::STRICT_TRANSPORT_SECURITY)
        .or_insert(HeaderValue::from_static("max-age=31536000; includeSubDomains"));
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
            assert_eq!(refusal(&r, false, "id", None).status().as_u16(), status, "{r:?}");
        }
    }

    /// If this broke, a 405 would not say which methods work (RFC 9110 §15.5.6), on a
    /// page or in JSON.
    #[test]
    fn a_405_names_the_allowed_methods() {
        for html in [false, true] {
            let resp = refusal(&Refusal::MethodNotAllowed, html, "id", Some("Acme"));
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(resp.headers()[header::ALLOW], PROXIED_METHODS);
            let resp = refusal(&Refusal::OnlyMethods("GET, HEAD"), html, "id", Some("Acme"));
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
        }
        assert!(
            !refusal(&Refusal::NotFound, false, "id", None)
                .headers()
                .contains_key(header::ALLOW)
        );
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
            let resp = refusal(&Refusal::from(e), false, "id", None);
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
        let resp = refusal(&r, true, "id", Some("Acme"));
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(resp.headers()[header::LOCATION], "/.portcullis/login?rd=%2Fx");
    }

    fn body_text(resp: Response<ProxyBody>) -> String {
        let ProxyBody::Local { body } = resp.into_body() else {
            panic!("not a local body")
        };
        let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
            .unwrap()
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// If this broke, a browser's refusal page would lose the tenant's layout, its
    /// request id or its next step, or show a kill switch's text unescaped.
    #[test]
    fn browsers_get_the_shared_layout_with_the_next_step() {
        let since = crate::clock::unix_now() - 300;
        let locked = Refusal::Locked {
            message: "<b>Suspended</b> by IT".into(),
            since,
            account: false,
        };
        let resp = refusal(&locked, true, "0123abcd", Some("Acme & Co"));
        assert_eq!(resp.status(), StatusCode::LOCKED);
        assert_eq!(resp.headers()["x-request-id"], "0123abcd");
        assert!(
            resp.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("style-src 'self'")
        );
        let page = body_text(resp);
        for part in [
            "/.portcullis/style.css",
            "Acme &#38; Co",
            "&#60;b&#62;Suspended&#60;/b&#62; by IT",
            "5 minutes ago",
            "Request id: <code>0123abcd</code>",
            "href=\"/.portcullis/login\"",
        ] {
            assert!(page.contains(part), "{part} missing: {page}");
        }
        assert!(!page.contains("<b>"), "{page}");
        // The exact time, as the status endpoint gives it, is on the page too.
        let at = Moment::at(since, since);
        assert!(
            page.contains(&format!("<time datetime=\"{}\">{}</time>", at.iso, at.utc)),
            "{page}"
        );

        let busy = Refusal::UpstreamUnavailable {
            retry_after_secs: 30,
            overloaded: false,
        };
        let page = body_text(refusal(&busy, true, "r", Some("Acme")));
        assert!(page.contains("Try again in 30 seconds."), "{page}");
        assert!(page.contains("href=\"/.portcullis/logout\""), "{page}");

        // No tenant: no tenant name, no links into a site that is not there.
        let page = body_text(refusal(&Refusal::UnknownHost, true, "r", None));
        assert!(page.contains("Unknown site") && !page.contains("<a "), "{page}");
    }

    /// If this broke, scripts would get a page, or the JSON contract would change.
    #[test]
    fn scripts_keep_the_json_answer() {
        let resp = refusal(&Refusal::HeadersTooLarge, false, "r1", Some("Acme"));
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let v: serde_json::Value = serde_json::from_str(&body_text(resp)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "headers_too_large", "message": "Request headers too large.", "request_id": "r1"})
        );
    }
}
