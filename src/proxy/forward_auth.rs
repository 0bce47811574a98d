//! Forward-auth (SPEC "Forward-auth"): `/.portcullis/auth` answers for a proxy the user
//! keeps (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`) whether the
//! request it is holding may pass, decided exactly as inline by the pipeline.
//!
//! This file owns what is particular to forward-auth: reading the original request from
//! the proxy's headers, and the answers. The decision itself (route rules, kill switches,
//! session) is the pipeline's, so the two can never drift apart.
//!
//! Which proxy asks decides the answer to a refusal. nginx takes only 2xx, 401 and 403
//! from a subrequest (anything else becomes a 500), so a request that names the original
//! URI as `X-Original-URI` (the nginx convention; see `deploy/`) gets 401 or 403 with the
//! reason in `X-Portcullis-Reason` and, for 401, the sign-in path in
//! `X-Portcullis-Login`. Caddy and Traefik send `X-Forwarded-Uri` and hand a refusal to
//! the client as it is, so they get the inline answer (a redirect to sign-in for a
//! browser, `423` for a kill switch, ...).

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Response, StatusCode};

use super::body::ProxyBody;
use super::respond::{self, Refusal};

/// The endpoint's path (matched exactly, like every reserved endpoint).
pub const PATH: &str = "/.portcullis/auth";

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_PORTCULLIS_REASON: HeaderName = HeaderName::from_static("x-portcullis-reason");
const X_PORTCULLIS_LOGIN: HeaderName = HeaderName::from_static("x-portcullis-login");

/// How a refusal is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// nginx `auth_request`: 401 or 403 only, the reason in headers.
    StatusOnly,
    /// Proxies that pass the answer to the client: the inline answer.
    Inline,
}

/// How the proxy that asks wants refusals: as nginx needs them when it names the original
/// URI as `X-Original-URI`, else inline.
pub fn answer_for(headers: &HeaderMap) -> Answer {
    if headers.contains_key(X_ORIGINAL_URI) {
        Answer::StatusOnly
    } else {
        Answer::Inline
    }
}

/// The request the proxy is holding, as its headers describe it.
#[derive(Debug, PartialEq, Eq)]
pub struct Original {
    /// Its method (`GET` when the proxy does not say).
    pub method: Method,
    /// Its path and query, origin-form.
    pub target: PathAndQuery,
}

impl Original {
    /// Reads the original request from `X-Forwarded-Method` and `X-Forwarded-Uri` (or
    /// `X-Original-URI`). Each must appear at most once; the URI must be origin-form
    /// (`/path?query`). Anything else is refused: the gateway never answers for a request
    /// it cannot see whole.
    ///
    /// Both URI headers at once are refused too: a proxy sets one of them and passes the
    /// client's other headers on (nginx does unless told not to), so the second one is
    /// the client's, naming a path of its choosing to be judged instead of the real one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, Refusal> {
        let forwarded = single(headers, &X_FORWARDED_URI)?;
        let original = single(headers, &X_ORIGINAL_URI)?;
        let uri = match (forwarded, original) {
            (Some(_), Some(_)) => {
                return Err(Refusal::BadRequest(
                    "The original request is named twice (X-Forwarded-Uri and X-Original-URI).",
                ));
            }
            (Some(uri), None) | (None, Some(uri)) => uri,
            (None, None) => {
                return Err(Refusal::BadRequest(
                    "Forward-auth needs the original request in X-Forwarded-Uri or X-Original-URI.",
                ));
            }
        };
        let bad_uri = Refusal::BadRequest("The original request's URI is not a path.");
        if !uri.as_bytes().starts_with(b"/") || uri.as_bytes().starts_with(b"//") {
            return Err(bad_uri);
        }
        let target = PathAndQuery::try_from(uri.as_bytes()).map_err(|_| bad_uri)?;
        let method = match single(headers, &X_FORWARDED_METHOD)? {
            None => Method::GET,
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| Refusal::BadRequest("The original request's method is not a method."))?,
        };
        if matches!(method, Method::TRACE | Method::CONNECT) {
            return Err(Refusal::MethodNotAllowed);
        }
        Ok(Original { method, target })
    }
}

/// The host a trusted proxy names in `X-Forwarded-Host`, if it sent exactly one.
pub fn forwarded_host(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    match single(headers, &X_FORWARDED_HOST)? {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| Refusal::BadRequest("Invalid X-Forwarded-Host header.")),
    }
}

/// The answer to an allowed request: `200` with the identity headers (none for a public
/// route or a request without a session), no body.
pub fn allowed(identity: HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(String::new()));
    *resp.status_mut() = StatusCode::OK;
    *resp.headers_mut() = identity;
    respond::security_headers(resp.headers_mut());
    resp
}

/// The nginx answer to a refusal: `401` when signing in would help (with the sign-in path
/// in `X-Portcullis-Login`), else `403`; the inline reason code in `X-Portcullis-Reason`
/// and the usual JSON body with the request id.
pub fn status_only(refusal: &Refusal, request_id: &str) -> Response<ProxyBody> {
    let (code, message) = refusal.code_and_message();
    let status = match refusal {
        Refusal::NeedsSession { .. } => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    let mut resp = respond::json_error(status, code, message, request_id);
    resp.headers_mut()
        .insert(X_PORTCULLIS_REASON, HeaderValue::from_static(code));
    if let Refusal::NeedsSession { login_path } = refusal
        && let Ok(v) = HeaderValue::from_str(login_path)
    {
        resp.headers_mut().insert(X_PORTCULLIS_LOGIN, v);
    }
    resp
}

/// The value of a header that must appear at most once; two are ambiguous.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a HeaderValue>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Refusal::BadRequest("A forward-auth header appears twice."));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_original_request_comes_from_the_proxys_headers() {
        let caddy = headers(&[("x-forwarded-method", "POST"), ("x-forwarded-uri", "/reports/q3?x=1")]);
        let o = Original::from_headers(&caddy).unwrap();
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.target.as_str(), "/reports/q3?x=1");
        assert_eq!(answer_for(&caddy), Answer::Inline);

        let nginx_headers = headers(&[("x-original-uri", "/admin/")]);
        let nginx = Original::from_headers(&nginx_headers).unwrap();
        assert_eq!(nginx.method, Method::GET);
        assert_eq!(answer_for(&nginx_headers), Answer::StatusOnly);
    }

    #[test]
    fn a_request_that_cannot_be_seen_whole_is_refused() {
        for bad in [
            vec![],
            vec![("x-forwarded-uri", "reports")],
            vec![("x-forwarded-uri", "http://evil.example/admin")],
            vec![("x-forwarded-uri", "//evil.example/admin")],
            vec![("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")],
            vec![("x-original-uri", "/a"), ("x-original-uri", "/b")],
            // A client's X-Forwarded-Uri passed on by nginx beside the one it set.
            vec![("x-original-uri", "/reports"), ("x-forwarded-uri", "/public/x")],
            vec![
                ("x-forwarded-uri", "/a"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "POST"),
            ],
            vec![("x-forwarded-uri", "/a"), ("x-forwarded-method", "G E T")],
        ] {
            let got = Original::from_headers(&headers(&bad));
            assert!(matches!(got, Err(Refusal::BadRequest(_))), "{bad:?}: {got:?}");
        }
        let trace = Original::from_headers(&headers(&[("x-forwarded-uri", "/"), ("x-forwarded-method", "TRACE")]));
        assert!(matches!(trace, Err(Refusal::MethodNotAllowed)));
    }

    #[test]
    fn nginx_gets_401_or_403_with_the_reason() {
        let login = Refusal::NeedsSession {
            login_path: "/.portcullis/login?rd=%2Fa".into(),
        };
        let resp = status_only(&login, "r1");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["x-portcullis-reason"], "unauthenticated");
        assert_eq!(resp.headers()["x-portcullis-login"], "/.portcullis/login?rd=%2Fa");
        for (refusal, reason) in [
            (Refusal::Forbidden("no"), "forbidden"),
            (
                Refusal::Locked {
                    message: "m".into(),
                    since: 0,
                    account: false,
                },
                "suspended",
            ),
            (Refusal::Unavailable("down"), "unavailable"),
            (Refusal::NotFound, "not_found"),
            (Refusal::BadRequest("bad"), "bad_request"),
        ] {
            let resp = status_only(&refusal, "r1");
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{reason}");
            assert_eq!(resp.headers()["x-portcullis-reason"], reason);
            assert!(resp.headers().get("x-portcullis-login").is_none());
        }
    }
}
