//! HTTP plumbing of the gateway's own pages and APIs: cookies, bodies, CSRF and origin
//! checks, redirect-target validation, client identification, response builders, and the
//! hardening headers every gateway-made answer carries.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

/// Largest body accepted by the gateway's own forms and APIs (login, MFA, ...).
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Longest the gateway waits for the whole of such a body. At most 64 KiB arrive in far
/// less on any real network; a body trickled in one byte at a time (slow POST) would
/// otherwise hold the request for as long as the client likes, since a trickle never
/// looks idle to the connection watchdog.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Result of looking up one cookie by name.
#[derive(Debug, PartialEq, Eq)]
pub enum CookieLookup<'a> {
    /// Not sent.
    Missing,
    /// Sent exactly once.
    One(&'a str),
    /// Sent more than once: treated as absent (an attacker may have planted one).
    Ambiguous,
}

/// Finds a cookie by exact name across every `Cookie` header.
///
/// Every line is read: a line skipped as unreadable could hide a second cookie of the
/// same name, and two count as none. Lines are UTF-8 (browsers send cookie values set by
/// scripts as UTF-8, so ASCII-only would skip real traffic); a line that is not UTF-8
/// makes the lookup [`CookieLookup::Ambiguous`]. The public listener refuses such lines
/// before any lookup (see [`cookie_lines_are_utf8`]); this is the second line of defence.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> CookieLookup<'a> {
    let mut found = CookieLookup::Missing;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            return CookieLookup::Ambiguous;
        };
        for pair in text.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n.trim() == name {
                found = match found {
                    CookieLookup::Missing => CookieLookup::One(v.trim()),
                    _ => return CookieLookup::Ambiguous,
                };
            }
        }
    }
    found
}

/// Whether every `Cookie` line is UTF-8. The gateway cannot tell which cookies a line it
/// cannot decode holds, so it cannot tell whether the request carries one session cookie
/// or two, nor promise the upstream that no gateway cookie is in it: such a request is
/// refused (400) rather than read one way here and another way upstream.
pub fn cookie_lines_are_utf8(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .all(|v| std::str::from_utf8(v.as_bytes()).is_ok())
}

/// The one value of a cookie, or None when missing or sent twice.
pub fn single_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    match cookie(headers, name) {
        CookieLookup::One(v) => Some(v),
        _ => None,
    }
}

/// `Set-Cookie` for a gateway cookie: always `__Host-` style (Secure, Path=/, no Domain),
/// HttpOnly and SameSite=Lax. `max_age` None ends the cookie now.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let text = match max_age {
        Some(age) => format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={age}"),
        None => format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("portcullis-invalid=; Max-Age=0"))
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than [`MAX_FORM_BYTES`].
    TooLarge,
    /// Not readable or not of the expected type.
    Invalid,
}

/// Reads a small body completely, refusing more than [`MAX_FORM_BYTES`] (checked on the
/// declared length first, then while reading) and one that takes longer than
/// [`BODY_READ_TIMEOUT`] (as [`BodyError::Invalid`]).
pub async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FORM_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, MAX_FORM_BYTES).collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) | Err(_) => Err(BodyError::Invalid),
    }
}

/// True when the body's media type is `mime` (parameters ignored).
pub fn content_type_is(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(mime))
}

/// State-changing calls: an `Origin`, when sent, must be this host (any scheme, any
/// port the client used). No CORS is ever granted.
///
/// Browsers send `Origin: null` on their own same-origin form posts when the page says
/// `Referrer-Policy: no-referrer` (as ours do); such a `null` is accepted only together
/// with `Sec-Fetch-Site: same-origin`, which pages cannot forge.
///
/// Two `Origin` lines are refused: the check must not read the first while something
/// downstream reads the last.
pub fn origin_allowed(headers: &HeaderMap, host: &str) -> bool {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return true;
    };
    if origins.next().is_some() {
        return false;
    }
    if origin.as_bytes() == b"null" {
        return headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin");
    }
    origin_names_host(origin, host)
}

/// Whether an `Origin` value names `host` (any scheme, any port); `null` and anything
/// unparsable never do.
pub fn origin_names_host(origin: &HeaderValue, host: &str) -> bool {
    let Ok(origin) = origin.to_str() else { return false };
    let Ok(uri) = origin.parse::<http::Uri>() else {
        return false;
    };
    let origin_host = uri
        .authority()
        .map(|a| a.as_str())
        .and_then(crate::tenancy::normalise_request_host);
    origin_host.as_deref() == Some(host)
}

/// Constant-time comparison of two CSRF tokens (empty never matches).
pub fn tokens_match(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A redirect target is a same-host path or it is `/`: anything that a browser could read
/// as another host, scheme or header is replaced.
pub fn safe_redirect(rd: Option<&str>) -> String {
    let Some(rd) = rd else { return "/".into() };
    let ok = |s: &str| {
        s.starts_with('/')
            && !s.starts_with("//")
            && !s.contains('\\')
            && s.len() <= 2048
            && s.bytes().all(|b| b.is_ascii_graphic())
    };
    if !ok(rd) {
        return "/".into();
    }
    // Decoded readings must not turn into another host either (`/%2F%2Fevil`, `/%5Cevil`).
    let once = percent_encoding::percent_decode_str(rd)
        .decode_utf8_lossy()
        .into_owned();
    let twice = percent_encoding::percent_decode_str(&once)
        .decode_utf8_lossy()
        .into_owned();
    if ok(&once) && ok(&twice) && !once.contains("/\\") {
        rd.to_string()
    } else {
        "/".into()
    }
}

/// Query parameter by name (first occurrence), percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Parses a form body into (name, value) pairs; the first occurrence of a name wins.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    respond(status, "application/json", value.to_string())
}

/// Names the request on a refusal (`x-request-id`, as in the access log), so a user or
/// script can quote it and an operator find the request's log lines.
pub fn set_request_id(resp: &mut Response<Bytes>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(crate::telemetry::REQUEST_ID_HEADER), v);
    }
}

/// The hardening headers of every page and answer the gateway makes itself, on the public
/// listener (tenant pages, refusals) and on the operator console alike: no caching, no
/// framing, no sniffing, no referrer, and a CSP that allows nothing foreign unless the
/// response brings a stricter-scoped one of its own (the SSO wizard's, which adds its
/// script's hash, keeps it).
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    );
}

/// 303 See Other to a validated same-host path.
pub fn see_other(location: &str) -> Response<Bytes> {
    let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A short device description from a user agent ("Firefox on Linux").
pub fn device(user_agent: &str) -> String {
    let ua = user_agent;
    let browser = if ua.contains("Edg/") {
        "Edge"
    } else if ua.contains("Firefox/") {
        "Firefox"
    } else if ua.contains("Chrome/") || ua.contains("Chromium/") {
        "Chrome"
    } else if ua.contains("Safari/") {
        "Safari"
    } else if ua.starts_with("curl/") {
        "curl"
    } else if ua.is_empty() {
        "Unknown browser"
    } else {
        "Other client"
    };
    let os = if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        Some("iOS")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("Linux") || ua.contains("X11") {
        Some("Linux")
    } else {
        None
    };
    match os {
        Some(os) => format!("{browser} on {os}"),
        None => browser.to_string(),
    }
}

/// RFC 3339 UTC time of unix seconds.
pub fn time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, the tenant pages or the console (both call this) would lose a
    /// hardening header, or the SSO wizard's page would lose the CSP that lets its own
    /// script run.
    #[test]
    fn hardening_headers_are_set_and_a_pages_own_csp_is_kept() {
        let mut headers = HeaderMap::new();
        security_headers(&mut headers);
        let get = |h: &HeaderMap, name: HeaderName| h.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get(&headers, header::CACHE_CONTROL).as_deref(), Some("no-store"));
        assert_eq!(
            get(&headers, header::X_CONTENT_TYPE_OPTIONS).as_deref(),
            Some("nosniff")
        );
        assert_eq!(get(&headers, header::REFERRER_POLICY).as_deref(), Some("no-referrer"));
        assert_eq!(get(&headers, header::X_FRAME_OPTIONS).as_deref(), Some("DENY"));
        let csp = get(&headers, header::CONTENT_SECURITY_POLICY).unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

        let mut own = HeaderMap::new();
        own.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("script-src 'sha256-x'"),
        );
        security_headers(&mut own);
        assert_eq!(
            get(&own, header::CONTENT_SECURITY_POLICY).as_deref(),
            Some("script-src 'sha256-x'")
        );
        assert_eq!(get(&own, header::X_FRAME_OPTIONS).as_deref(), Some("DENY"));
    }

    #[test]
    fn redirect_targets_stay_on_this_host() {
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "/\\evil.example",
            "/%5Cevil.example",
            "\\\\evil.example",
            "/\\/evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%0d/evil.example",
            "/ /evil.example",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "/ok%0d%0aSet-Cookie:%20a=b",
            "",
            "evil.example",
        ] {
            assert_eq!(safe_redirect(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_redirect(Some("/app/x?y=1")), "/app/x?y=1");
        assert_eq!(safe_redirect(None), "/");
    }

    #[test]
    fn a_cookie_sent_twice_counts_as_absent() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; s=x"));
        assert_eq!(cookie(&h, "s"), CookieLookup::One("x"));
        h.append(header::COOKIE, HeaderValue::from_static("s=y"));
        assert_eq!(cookie(&h, "s"), CookieLookup::Ambiguous);
        assert_eq!(cookie(&h, "zz"), CookieLookup::Missing);
    }

    #[test]
    fn no_cookie_line_is_skipped() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("s=x"));
        assert!(cookie_lines_are_utf8(&h));
        // UTF-8 beyond ASCII is read, so its second `s` is seen.
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes("p=Jos\u{e9}; s=y".as_bytes()).unwrap(),
        );
        assert!(cookie_lines_are_utf8(&h));
        assert_eq!(cookie(&h, "s"), CookieLookup::Ambiguous);
        // A line that is not UTF-8 may hide anything: no cookie is trusted.
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("s=x"));
        h.append(header::COOKIE, HeaderValue::from_bytes(b"q=\xff").unwrap());
        assert!(!cookie_lines_are_utf8(&h));
        assert_eq!(cookie(&h, "s"), CookieLookup::Ambiguous);
    }

    #[test]
    fn two_origins_are_never_this_host() {
        let mut h = HeaderMap::new();
        h.append(header::ORIGIN, HeaderValue::from_static("http://acme.localhost"));
        h.append(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!origin_allowed(&h, "acme.localhost"));
    }

    #[test]
    fn origins_must_be_this_host() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h, "acme.localhost"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://acme.localhost:8080"));
        assert!(origin_allowed(&h, "acme.localhost"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!origin_allowed(&h, "acme.localhost"));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_allowed(&h, "acme.localhost"));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!origin_allowed(&h, "acme.localhost"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(
            origin_allowed(&h, "acme.localhost"),
            "a browser's own form post under no-referrer"
        );
    }

    #[test]
    fn devices_are_named_from_user_agents() {
        assert_eq!(
            device("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"),
            "Chrome on Linux"
        );
        assert_eq!(device("curl/7.88.1"), "curl");
    }
}
