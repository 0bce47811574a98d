//! The console's one mapping from refusal to response: a console page with a status, a
//! short message and a request id; never an inner error's text (that goes to the log,
//! with the same request id). Also the middleware that gives every console answer the
//! tenant pages' hardening headers (defined once, in `ui::web`).

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::changes::ChangeError;
use crate::killswitch::KillSwitchError;
use crate::store::StoreError;

/// Why the console refused a request. Messages are safe to show the operator.
#[derive(Debug)]
pub enum ConsoleError {
    /// The form or query is malformed; the text says what (400).
    BadRequest(String),
    /// No console session, or it ended (401; pages redirect to the sign-in page instead).
    SignedOut,
    /// The CSRF token is missing or wrong, or the `Origin` is foreign (403).
    Forged,
    /// The operator may not do this; the text says why (403).
    Forbidden(String),
    /// Nothing of that name in the operator's tier (404).
    NotFound(&'static str),
    /// The state changed or the action no longer applies (409).
    Conflict(String),
    /// A store or another service failed (503); the cause goes to the log only.
    Unavailable(String),
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::SignedOut => StatusCode::UNAUTHORIZED,
            ConsoleError::Forged | ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn heading_and_message(&self) -> (&'static str, String) {
        match self {
            ConsoleError::BadRequest(m) => ("Check the form", m.clone()),
            ConsoleError::SignedOut => ("Signed out", "Your console session ended; sign in again.".into()),
            ConsoleError::Forged => (
                "Refused",
                "The form did not come from this console session. Reload the page and try again.".into(),
            ),
            ConsoleError::Forbidden(m) => ("Not allowed", m.clone()),
            ConsoleError::NotFound(what) => ("Not found", format!("No such {what} in your tier.")),
            ConsoleError::Conflict(m) => ("Not done", m.clone()),
            ConsoleError::Unavailable(_) => (
                "Unavailable",
                "A store or service the console needs did not answer; nothing was changed. Try again shortly.".into(),
            ),
        }
    }

    /// A store failure.
    pub fn store(e: &StoreError) -> Self {
        ConsoleError::Unavailable(e.to_string())
    }
}

impl From<KillSwitchError> for ConsoleError {
    fn from(e: KillSwitchError) -> Self {
        match e {
            KillSwitchError::UnknownTier => ConsoleError::NotFound("tier"),
            KillSwitchError::UnknownTenant => ConsoleError::NotFound("tenant"),
            KillSwitchError::Invalid(m) => ConsoleError::BadRequest(format!("{m}.")),
            KillSwitchError::Expiry(e) => ConsoleError::BadRequest(format!("{e}.")),
            KillSwitchError::IdempotencyConflict => ConsoleError::Conflict(e.to_string()),
            KillSwitchError::Store(s) => ConsoleError::store(&s),
        }
    }
}

impl From<ChangeError> for ConsoleError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Invalid(m) => ConsoleError::BadRequest(format!("{m}.")),
            ChangeError::NotFound(what) => ConsoleError::NotFound(what),
            ChangeError::CrossTier { what, .. } => ConsoleError::NotFound(what),
            ChangeError::SamePerson => ConsoleError::Forbidden(
                "You proposed or edited this change: a different operator must approve it.".into(),
            ),
            ChangeError::Conflict(m) => ConsoleError::Conflict(format!("{m}.")),
            ChangeError::InvalidPolicy { errors, .. } => ConsoleError::Conflict(format!(
                "The resulting policy would be invalid; nothing was changed: {}",
                errors.join("; ")
            )),
            ChangeError::Apply(m) => ConsoleError::Unavailable(m),
            ChangeError::Store(s) => ConsoleError::store(&s),
        }
    }
}

#[derive(Template)]
#[template(path = "console_message.html")]
struct MessagePage<'a> {
    header: super::PageHeader<'a>,
    heading: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let request_id = format!("{:016x}", rand::random::<u64>());
        if let ConsoleError::Unavailable(cause) = &self {
            tracing::error!(request_id = %request_id, error = %cause, "console request failed");
        }
        let (heading, message) = self.heading_and_message();
        let page = MessagePage {
            header: super::PageHeader::signed_out(),
            heading,
            message: &message,
            request_id: &request_id,
        };
        let mut resp = match page.render() {
            Ok(html) => (self.status(), Html(html)).into_response(),
            Err(_) => (self.status(), message.clone()).into_response(),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(
                axum::http::HeaderName::from_static(crate::telemetry::REQUEST_ID_HEADER),
                v,
            );
        }
        resp
    }
}

/// Middleware: the headers of every console answer, the tenant pages' own
/// ([`crate::ui::web::security_headers`]: no caching, no framing, no sniffing, no
/// referrer, a CSP that allows nothing foreign).
pub async fn harden(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    crate::ui::web::security_headers(resp.headers_mut());
    resp
}
