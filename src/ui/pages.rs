//! Server-rendered pages (askama templates in `templates/`, autoescaped).

use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};

use super::readable::{self, Moment};
use super::web;
use crate::auth::login::Enrolment;
use crate::config::TenantEntry;
use crate::records::{LoginEvent, SessionRecord};

/// The pages' stylesheet (CSP allows only same-origin styles).
pub const STYLE: &str = include_str!("../../templates/style.css");

/// The gateway's icon, linked from every page and answered for `/favicon.ico` to
/// browsers without a session (so a page load does not end in a 401 for it).
pub const ICON: &str = include_str!("../../templates/favicon.svg");

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    rd: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
    sso_href: Option<String>,
}

#[derive(Template)]
#[template(path = "mfa.html")]
struct Mfa<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "enrol.html")]
struct Enrol<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    secret: &'a str,
    uri: &'a str,
    qr_svg: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "codes.html")]
struct Codes<'a> {
    tenant_name: &'a str,
    codes: &'a [String],
    rd: &'a str,
}

/// A way on from a message page: a same-host link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Same-host path.
    pub href: &'static str,
    /// What the link says.
    pub text: &'static str,
}

/// The tenant's sign-in page.
pub const SIGN_IN: Link = Link {
    href: "/.portcullis/login",
    text: "Sign in",
};
/// The user's account page (sessions, history).
pub const ACCOUNT: Link = Link {
    href: "/.portcullis/account",
    text: "Your account",
};
/// The sign-out page (a confirm button: signing out is a form post).
pub const SIGN_OUT: Link = Link {
    href: "/.portcullis/logout",
    text: "Sign out",
};
/// The tenant app's start page.
pub const START: Link = Link {
    href: "/",
    text: "Go to the start page",
};

/// What a message page says: every refusal (the listener's and the pages') and every
/// short notice is one of these, in the shared layout.
#[derive(Debug, Default)]
pub struct MessageView<'a> {
    /// The tenant's display name; empty when the host names no tenant.
    pub tenant_name: &'a str,
    /// The page's heading (and title).
    pub heading: &'a str,
    /// What happened, for users.
    pub message: &'a str,
    /// Since when (a kill switch's trip time).
    pub since: Option<Moment>,
    /// What to do next, in words ("Try again in 30 seconds.").
    pub next: Option<String>,
    /// Where to go next; the first is the main action.
    pub links: &'a [Link],
    /// The request's id, for support (refusals only).
    pub request_id: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    tenant_name: &'a str,
    heading: &'a str,
    message: &'a str,
    since: Option<Moment>,
    next: Option<String>,
    links: &'a [Link],
    request_id: Option<&'a str>,
}

/// Renders a message page's HTML (the listener wraps it in its own response type).
pub fn message_html(view: MessageView<'_>) -> Result<String, askama::Error> {
    Message {
        tenant_name: view.tenant_name,
        heading: view.heading,
        message: view.message,
        since: view.since,
        next: view.next,
        links: view.links,
        request_id: view.request_id,
    }
    .render()
}

#[derive(Template)]
#[template(path = "logout.html")]
struct Logout<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
}

struct SessionRow {
    id: String,
    device: String,
    ip: String,
    created: Moment,
    last_seen: Moment,
    current: bool,
}

/// One sign-in attempt as the history tables show it (the user's own on the account
/// page, the tenant's on the admin page).
pub(super) struct HistoryRow {
    pub(super) time: Moment,
    /// Who tried (the subject of the account key).
    pub(super) subject: String,
    /// The result in plain words ("Wrong code").
    pub(super) result: &'static str,
    /// Whether the attempt failed (styled apart).
    pub(super) failed: bool,
    pub(super) method: &'static str,
    pub(super) ip: String,
    pub(super) device: String,
}

impl HistoryRow {
    /// `e` as read at `now`.
    pub(super) fn of(e: &LoginEvent, now: i64) -> Self {
        HistoryRow {
            time: Moment::at(e.time, now),
            subject: crate::account::sub_of(&e.subject).to_string(),
            result: readable::attempt_result(&e.outcome, e.reason.as_deref()),
            failed: e.outcome != "success",
            method: readable::method(&e.method),
            ip: e.ip.clone(),
            device: web::device(&e.user_agent),
        }
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct Account<'a> {
    tenant_name: &'a str,
    display_name: &'a str,
    subject: &'a str,
    csrf: &'a str,
    notice: Option<&'a str>,
    sessions: Vec<SessionRow>,
    history: Vec<HistoryRow>,
    next_page: Option<i64>,
}

fn html(status: StatusCode, page: &impl Template) -> Response<Bytes> {
    match page.render() {
        Ok(body) => web::respond(status, "text/html; charset=utf-8", body),
        Err(_) => web::respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "page could not be rendered",
        ),
    }
}

/// The sign-in form (200; a refusal that shows it again sets its own status), with a
/// fixed notice such as "You are signed out." when one is due, and the way to the IdP
/// when the tenant has single sign-on (`sso`: from the policy files or the wizard).
pub fn login(
    entry: &TenantEntry,
    sso: bool,
    csrf: &str,
    rd: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Login {
            tenant_name: &entry.tenant.name,
            csrf,
            rd,
            error,
            notice,
            sso_href: sso.then(|| {
                format!(
                    "/.portcullis/login/sso?rd={}",
                    percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
                )
            }),
        },
    )
}

/// The second-factor form (200; a refusal that shows it again sets its own status).
pub fn mfa(entry: &TenantEntry, csrf: &str, error: Option<&str>) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Mfa {
            tenant_name: &entry.tenant.name,
            csrf,
            error,
        },
    )
}

pub fn enrol(entry: &TenantEntry, csrf: &str, e: &Enrolment, error: Option<&str>) -> Response<Bytes> {
    let page = Enrol {
        tenant_name: &entry.tenant.name,
        csrf,
        secret: &e.secret,
        uri: &e.uri,
        qr_svg: &e.qr_svg,
        error,
    };
    html(StatusCode::OK, &page)
}

pub fn codes(entry: &TenantEntry, codes: &[String], rd: &str) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Codes {
            tenant_name: &entry.tenant.name,
            codes,
            rd,
        },
    )
}

pub fn logout(entry: &TenantEntry, csrf: &str) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Logout {
            tenant_name: &entry.tenant.name,
            csrf,
        },
    )
}

/// A short message page of the tenant: a notice, or a refusal (see `ui::error`).
pub fn message(entry: &TenantEntry, status: StatusCode, view: MessageView<'_>) -> Response<Bytes> {
    let view = MessageView {
        tenant_name: &entry.tenant.name,
        ..view
    };
    match message_html(view) {
        Ok(body) => web::respond(status, "text/html; charset=utf-8", body),
        Err(_) => web::respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "page could not be rendered",
        ),
    }
}

pub fn account(
    entry: &TenantEntry,
    session: &SessionRecord,
    sessions: &[SessionRecord],
    history: &[LoginEvent],
    notice: Option<&str>,
    now: i64,
) -> Response<Bytes> {
    let page = Account {
        tenant_name: &entry.tenant.name,
        display_name: &session.display_name,
        subject: session.sub(),
        csrf: &session.csrf_token,
        notice,
        sessions: sessions
            .iter()
            .map(|s| SessionRow {
                id: s.public_id(),
                device: web::device(&s.user_agent),
                ip: s.ip.clone(),
                created: Moment::at(s.created_at, now),
                last_seen: Moment::at(s.last_seen, now),
                current: s.id_hash == session.id_hash,
            })
            .collect(),
        history: history.iter().map(|e| HistoryRow::of(e, now)).collect(),
        next_page: (history.len() == 20).then(|| history.last().map(|e| e.seq)).flatten(),
    };
    html(StatusCode::OK, &page)
}

/// One row of the tenant admin's account table.
pub struct AdminAccountRow {
    pub subject: String,
    pub display_name: String,
    pub roles: String,
    /// When a switch covers the account: its reason and expiry.
    pub suspended: Option<AdminSwitch>,
    pub is_self: bool,
}

/// The switch covering an account on the tenant admin page.
pub struct AdminSwitch {
    pub reason: String,
    pub expires: Option<Moment>,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct Admin<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    notice: Option<&'a str>,
    accounts: Vec<AdminAccountRow>,
    /// Whether the "any account" form offers the tenant's identity provider.
    has_sso: bool,
}

pub fn admin(
    entry: &TenantEntry,
    csrf: &str,
    notice: Option<&str>,
    accounts: Vec<AdminAccountRow>,
    has_sso: bool,
) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Admin {
            tenant_name: &entry.tenant.name,
            csrf,
            notice,
            accounts,
            has_sso,
        },
    )
}
