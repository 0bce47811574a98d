//! The tenant pages' one mapping from refusal to response, like the public listener's
//! (`proxy::respond`): every refusal of a page under `/.portcullis/` is a [`PageError`],
//! answered as the tenant's message page (the layout every gateway page shares) with a
//! status, a heading, a short text, the ways on, and the request id, on the page and
//! in `x-request-id`. A store's inner error is never shown (it is logged with the
//! request id where it was logged before).
//!
//! Pages compared across requests (to show that they leak nothing) differ only in
//! their request id; their texts are a contract.
//!
//! Forms that show themselves again with a message (sign-in, second factor, enrolment)
//! and the tenant admin page's notices take their status and text from the same table
//! ([`PageError::form`], [`PageError::notice`]). The status and text of a refused sign-in
//! step or password change are shared with the JSON API ([`login_refusal`],
//! [`password_refusal`], [`retry_after`]), whose twins say the same. Owns no rules: the handlers choose
//! the refusal.

use bytes::Bytes;
use http::{Response, StatusCode};

use super::admin::TripRefusal;
use super::pages::{self, Link};
use super::web;
use crate::auth::accounts::AccountError;
use crate::auth::login::LoginError;
use crate::config::TenantEntry;
use crate::killswitch::KillSwitchError;

/// Why a page refused.
#[derive(Debug)]
pub(super) enum PageError {
    /// The form expired or came from another site (403).
    BadForm,
    /// The store (or another dependency) cannot answer (503).
    Unavailable,
    /// Nothing at this address (404).
    NotFound,
    /// The page does not take this method (405); `allow` lists those it takes.
    WrongMethod { allow: &'static str },
    /// The account page names a session the user does not have (404).
    NoSuchSession,
    /// A sign-in step was refused, shown outside its form (enrolment).
    SignIn(LoginError),
    /// The tenant has no single sign-on (404).
    NoSso,
    /// Single sign-on failed.
    Sso(SsoFailure),
    /// A password change was refused.
    Password(AccountError),
    /// The tenant admin page, for someone who is not a tenant admin (403).
    NotTenantAdmin,
    /// A tenant admin's reset of their own second factor (403).
    SelfMfaReset,
    /// A tenant admin's trip or reset was refused (a notice on the admin page).
    Trip(TripRefusal),
}

/// Why single sign-on failed.
#[derive(Debug)]
pub(super) enum SsoFailure {
    /// No pending sign-in of this browser matches the callback's `state` (400).
    StateMismatch,
    /// The callback was used before (400).
    Replayed,
    /// The IdP answered with an error code (401); only `[A-Za-z0-9_]`, at most 64.
    IdpRefused(String),
    /// The callback carries no code (400).
    NoCode,
    /// The callback repeats `state`, `code`, `iss` or `error` (400).
    RepeatedParameter,
    /// The ID token or the code exchange was refused; the text says why (401).
    TokenRefused(String),
    /// The IdP cannot be reached or described itself badly (502).
    IdpUnavailable(String),
    /// The sign-in flow refused the IdP's account.
    Login(LoginError),
}

/// How a refusal reads on a page.
struct Answer {
    status: StatusCode,
    heading: &'static str,
    message: String,
    /// Where to go next; the first is the main action.
    links: &'static [Link],
}

/// The way back of a refused sign-in step.
const START_AGAIN: &[Link] = &[Link {
    href: "/.portcullis/login",
    text: "Start again",
}];

/// The way back to the account page.
const BACK: &[Link] = &[Link {
    href: "/.portcullis/account",
    text: "Back to your account",
}];

/// The tenant admin page's way back.
const BACK_TO_ADMIN: &[Link] = &[
    Link {
        href: "/.portcullis/admin",
        text: "Back to tenant admin",
    },
    pages::ACCOUNT,
];

impl PageError {
    /// The table every page refusal is answered from.
    fn answer(&self) -> Answer {
        let answer = |status, heading, message: &str, links| Answer {
            status,
            heading,
            message: message.to_string(),
            links,
        };
        match self {
            PageError::BadForm => answer(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form could not be accepted (it expired or came from another site). Reload the page and try again.",
                &[pages::SIGN_IN],
            ),
            PageError::Unavailable => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "This page is unavailable right now. Try again shortly.",
                &[pages::ACCOUNT],
            ),
            PageError::NotFound => answer(
                StatusCode::NOT_FOUND,
                "Not found",
                "Nothing here.",
                &[pages::START, pages::ACCOUNT],
            ),
            PageError::NoSuchSession => answer(StatusCode::NOT_FOUND, "Not found", "No such session.", BACK),
            PageError::WrongMethod { .. } => answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "This page cannot be used that way. Open it from a link or its form.",
                &[pages::START, pages::ACCOUNT],
            ),
            // A page says the wait in words; the JSON API keeps seconds.
            PageError::SignIn(LoginError::Throttled(secs)) => answer(
                StatusCode::TOO_MANY_REQUESTS,
                "Sign-in",
                &format!(
                    "Too many attempts. Try again in {}.",
                    super::readable::duration(u64::try_from(*secs).unwrap_or(0))
                ),
                START_AGAIN,
            ),
            PageError::SignIn(e) => {
                let (status, message) = login_refusal(e);
                answer(status, "Sign-in", &message, START_AGAIN)
            }
            PageError::NoSso => answer(
                StatusCode::NOT_FOUND,
                "Sign-in",
                "This organisation has no single sign-on.",
                &[pages::SIGN_IN],
            ),
            PageError::Sso(failure) => {
                let (status, message) = match failure {
                    SsoFailure::StateMismatch => (
                        StatusCode::BAD_REQUEST,
                        "This sign-in did not start in this browser, or it expired. Start again.".to_string(),
                    ),
                    SsoFailure::Replayed => (
                        StatusCode::BAD_REQUEST,
                        "This sign-in was already used. Start again.".to_string(),
                    ),
                    SsoFailure::IdpRefused(code) => (
                        StatusCode::UNAUTHORIZED,
                        format!("Your identity provider refused the sign-in ({code})."),
                    ),
                    SsoFailure::RepeatedParameter => (
                        StatusCode::BAD_REQUEST,
                        "The sign-in response names a parameter twice. Start again.".to_string(),
                    ),
                    SsoFailure::NoCode => (
                        StatusCode::BAD_REQUEST,
                        "The identity provider sent no code.".to_string(),
                    ),
                    SsoFailure::TokenRefused(why) => {
                        (StatusCode::UNAUTHORIZED, format!("Single sign-on failed: {why}."))
                    }
                    SsoFailure::IdpUnavailable(problem) => (
                        StatusCode::BAD_GATEWAY,
                        format!("Your organisation's identity provider cannot be used right now: {problem}."),
                    ),
                    SsoFailure::Login(e) => login_refusal(e),
                };
                answer(status, "Single sign-on", &message, START_AGAIN)
            }
            PageError::Password(e) => {
                let (status, message) = password_refusal(e);
                answer(status, "Password not changed", &message, BACK)
            }
            PageError::NotTenantAdmin => answer(
                StatusCode::FORBIDDEN,
                "Tenant admin",
                "Only tenant admins may open this page.",
                &[pages::ACCOUNT, pages::SIGN_OUT],
            ),
            PageError::SelfMfaReset => answer(
                StatusCode::FORBIDDEN,
                "Tenant admin",
                "You cannot reset your own MFA. Ask another tenant admin or an operator.",
                BACK_TO_ADMIN,
            ),
            PageError::Trip(TripRefusal::SelfLockout) => answer(
                StatusCode::CONFLICT,
                "Tenant admin",
                "You cannot trip the breaker of your own account.",
                BACK_TO_ADMIN,
            ),
            PageError::Trip(TripRefusal::Switch(e)) => {
                let (status, message) = match e {
                    KillSwitchError::Store(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The breaker store is unavailable. Try again shortly.".to_string(),
                    ),
                    KillSwitchError::UnknownTier | KillSwitchError::UnknownTenant => {
                        (StatusCode::NOT_FOUND, e.to_string())
                    }
                    KillSwitchError::IdempotencyConflict => (StatusCode::CONFLICT, e.to_string()),
                    KillSwitchError::Invalid(_) | KillSwitchError::Expiry(_) => {
                        (StatusCode::BAD_REQUEST, e.to_string())
                    }
                };
                answer(status, "Tenant admin", &message, BACK_TO_ADMIN)
            }
        }
    }

    /// Logs an inner error the page does not show, with the request id.
    fn log(&self, request_id: &str) {
        if let PageError::Trip(TripRefusal::Switch(KillSwitchError::Store(err))) = self {
            tracing::error!(request_id, error = %err, "kill switch store call failed");
        }
    }

    /// The tenant's message page for this refusal, with the request id.
    pub(super) fn into_response(self, entry: &TenantEntry, request_id: &str) -> Response<Bytes> {
        self.log(request_id);
        let a = self.answer();
        let view = pages::MessageView {
            heading: a.heading,
            message: &a.message,
            links: a.links,
            request_id: Some(request_id),
            ..Default::default()
        };
        let mut resp = pages::message(entry, a.status, view);
        web::set_request_id(&mut resp, request_id);
        if let PageError::WrongMethod { allow } = self {
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        resp
    }

    /// The text a form shows again when this refusal answers it.
    pub(super) fn message(&self) -> String {
        self.answer().message
    }

    /// A form shown again with [`PageError::message`]: this refusal's status, the request
    /// id, and `Retry-After` when trying again later helps.
    pub(super) fn form(&self, mut resp: Response<Bytes>, request_id: &str) -> Response<Bytes> {
        *resp.status_mut() = self.answer().status;
        web::set_request_id(&mut resp, request_id);
        if let PageError::SignIn(e) = self {
            retry_after(&mut resp, e);
        }
        resp
    }

    /// The tenant admin page's notice for this refusal (the page itself answers 200).
    pub(super) fn notice(&self, request_id: &str) -> String {
        self.log(request_id);
        self.message()
    }
}

/// Status and text of a refused sign-in step, on the pages and in the JSON API.
pub(super) fn login_refusal(e: &LoginError) -> (StatusCode, String) {
    match e {
        LoginError::BadCredentials => (StatusCode::UNAUTHORIZED, "Wrong user name or password.".into()),
        LoginError::BadCode => (
            StatusCode::UNAUTHORIZED,
            "That code is not valid. Codes work once; wait for the next one.".into(),
        ),
        LoginError::Throttled(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Try again in {secs} s."),
        ),
        LoginError::NoPendingLogin => (StatusCode::UNAUTHORIZED, "Your sign-in expired. Start again.".into()),
        LoginError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is busy. Try again in a moment.".into(),
        ),
        LoginError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now. Try again shortly.".into(),
        ),
        LoginError::Suspended(message) => (StatusCode::LOCKED, message.clone()),
        LoginError::SsoRequired => (
            StatusCode::FORBIDDEN,
            "This organisation signs in through its identity provider. Use \"Sign in with SSO\".".into(),
        ),
        LoginError::IdpMfaRequired => (
            StatusCode::FORBIDDEN,
            "Your identity provider did not confirm a second factor, which this organisation requires. Sign in again with multi-factor authentication at your identity provider.".into(),
        ),
    }
}

/// `Retry-After` of a refused sign-in step, on the pages and in the JSON API: when the
/// throttle lifts, or a second for a busy hasher.
pub(super) fn retry_after(resp: &mut Response<Bytes>, e: &LoginError) {
    let secs = match e {
        LoginError::Throttled(secs) => *secs,
        LoginError::Busy => 1,
        _ => return,
    };
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
}

/// Status and text of a refused password change, on the page and in the JSON API.
pub(super) fn password_refusal(e: &AccountError) -> (StatusCode, String) {
    match e {
        AccountError::SsoAccount => (
            StatusCode::BAD_REQUEST,
            "This account signs in through single sign-on.".into(),
        ),
        AccountError::Policy(e) => (StatusCode::BAD_REQUEST, e.to_string()),
        AccountError::Throttled(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Try again in {secs} s."),
        ),
        AccountError::WrongFactors => (
            StatusCode::FORBIDDEN,
            "The current password or the code is wrong.".to_string(),
        ),
        // The signed-in account vanished, hashing is saturated, or the store failed.
        AccountError::Name(_) | AccountError::NotFound | AccountError::Hash(_) | AccountError::Store(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Try again shortly.".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn store() -> StoreError {
        StoreError::Unavailable("sqlite: DatabaseBusy at /var/lib/portcullis".into())
    }

    /// If this broke, a page refusal would get another status than before, or show a
    /// store's inner error.
    #[test]
    fn each_page_refusal_has_its_status_and_shows_no_inner_error() {
        let cases = [
            (PageError::BadForm, 403),
            (PageError::Unavailable, 503),
            (PageError::NotFound, 404),
            (PageError::NoSuchSession, 404),
            (PageError::WrongMethod { allow: "GET" }, 405),
            (PageError::SignIn(LoginError::Throttled(30)), 429),
            (PageError::SignIn(LoginError::Store(store())), 503),
            (PageError::NoSso, 404),
            (PageError::Sso(SsoFailure::StateMismatch), 400),
            (PageError::Sso(SsoFailure::RepeatedParameter), 400),
            (PageError::Sso(SsoFailure::IdpUnavailable("x".into())), 502),
            (PageError::Sso(SsoFailure::Login(LoginError::IdpMfaRequired)), 403),
            (PageError::Password(AccountError::WrongFactors), 403),
            (PageError::Password(AccountError::Store(store())), 503),
            (PageError::NotTenantAdmin, 403),
            (PageError::SelfMfaReset, 403),
            (PageError::Trip(TripRefusal::SelfLockout), 409),
            (
                PageError::Trip(TripRefusal::Switch(KillSwitchError::Store(store()))),
                503,
            ),
        ];
        for (e, status) in cases {
            let a = e.answer();
            assert_eq!(a.status.as_u16(), status, "{e:?}");
            assert!(!a.message.contains("sqlite"), "{e:?}: {}", a.message);
        }
    }

    /// If this broke, a tenant admin would read the store's internal error.
    #[test]
    fn store_errors_are_not_shown_to_tenant_admins() {
        let e = PageError::Trip(TripRefusal::Switch(KillSwitchError::Store(store())));
        assert_eq!(e.notice("id"), "The breaker store is unavailable. Try again shortly.");
        let e = PageError::Trip(TripRefusal::Switch(KillSwitchError::Invalid(
            "reason is required".into(),
        )));
        assert_eq!(e.notice("id"), "reason is required");
    }

    /// If this broke, a throttled sign-in form would no longer say when to try again.
    #[test]
    fn a_throttled_form_says_when_to_try_again() {
        let resp = PageError::SignIn(LoginError::Throttled(42)).form(Response::new(Bytes::new()), "0123abcd");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "42");
        assert_eq!(resp.headers()["x-request-id"], "0123abcd");
    }

    /// If this broke, a refused page would no longer name its request (for support), or
    /// its text would change.
    #[test]
    fn a_refused_page_names_its_request() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            (
                "gateway.toml",
                "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nplaintext = true\n",
            ),
            (
                "tiers/staging.toml",
                "name = \"staging\"\nupstream_allowlist = [\"127.0.0.1\"]\n\n[keys]\ncookie = \"inline:staging-cookie-key-0123456789abcdef-xyz\"\n",
            ),
            (
                "tenants/acme.toml",
                "id = \"acme\"\ntier = \"staging\"\nhosts = [\"acme.test\"]\nupstream = \"http://127.0.0.1:3000\"\n",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let env = std::collections::HashMap::<String, String>::new();
        let config = crate::config::load(dir.path(), &env, &crate::config::Overrides::default()).unwrap();
        let entry = config.host_map().get("acme.test").unwrap().clone();
        let resp = PageError::NoSuchSession.into_response(&entry, "0123abcd");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["x-request-id"], "0123abcd");
        let page = String::from_utf8_lossy(resp.body());
        assert!(
            page.contains("No such session.") && page.contains("Request id: <code>0123abcd</code>"),
            "{page}"
        );
    }
}
