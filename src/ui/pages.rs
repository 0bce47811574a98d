//! Server-rendered pages (askama templates in `templates/`, autoescaped).

use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};

use super::web;
use crate::auth::login::Enrolment;
use crate::config::TenantEntry;
use crate::records::{LoginEvent, SessionRecord};

/// The pages' stylesheet (CSP allows only same-origin styles).
pub const STYLE: &str = include_str!("../../templates/style.css");

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    rd: &'a str,
    error: Option<&'a str>,
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

#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    tenant_name: &'a str,
    heading: &'a str,
    message: &'a str,
    link: Option<&'a str>,
    link_text: &'a str,
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
    created: String,
    last_seen: String,
    current: bool,
}

struct HistoryRow {
    time: String,
    outcome: String,
    reason: Option<String>,
    method: String,
    ip: String,
    device: String,
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

/// The sign-in form (200; a refusal that shows it again sets its own status).
pub fn login(entry: &TenantEntry, csrf: &str, rd: &str, error: Option<&str>) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Login {
            tenant_name: &entry.tenant.name,
            csrf,
            rd,
            error,
            sso_href: entry.tenant.sso.as_ref().map(|_| {
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

/// A short message page: a notice, or a refusal (see `ui::error`).
pub fn message(
    entry: &TenantEntry,
    status: StatusCode,
    heading: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response<Bytes> {
    let page = Message {
        tenant_name: &entry.tenant.name,
        heading,
        message: text,
        link: link.map(|l| l.0),
        link_text: link.map_or("", |l| l.1),
    };
    html(status, &page)
}

pub fn account(
    entry: &TenantEntry,
    session: &SessionRecord,
    sessions: &[SessionRecord],
    history: &[LoginEvent],
    notice: Option<&str>,
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
                created: web::time(s.created_at),
                last_seen: web::time(s.last_seen),
                current: s.id_hash == session.id_hash,
            })
            .collect(),
        history: history
            .iter()
            .map(|e| HistoryRow {
                time: web::time(e.time),
                outcome: e.outcome.clone(),
                reason: e.reason.clone(),
                method: e.method.clone(),
                ip: e.ip.clone(),
                device: web::device(&e.user_agent),
            })
            .collect(),
        next_page: (history.len() == 20).then(|| history.last().map(|e| e.seq)).flatten(),
    };
    html(StatusCode::OK, &page)
}

/// One row of the tenant admin's account table.
pub struct AdminAccountRow {
    pub subject: String,
    pub display_name: String,
    pub roles: String,
    /// Reason and expiry when a switch covers the account.
    pub suspended: Option<String>,
    pub is_self: bool,
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

pub fn admin(entry: &TenantEntry, csrf: &str, notice: Option<&str>, accounts: Vec<AdminAccountRow>) -> Response<Bytes> {
    html(
        StatusCode::OK,
        &Admin {
            tenant_name: &entry.tenant.name,
            csrf,
            notice,
            accounts,
            has_sso: entry.tenant.sso.is_some(),
        },
    )
}
