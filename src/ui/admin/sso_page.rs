//! The self-service SSO wizard's page, `/.portcullis/admin/sso`: the steps on one
//! server-rendered page (issuer and discovery, the URIs to register, client, claim
//! mapping with a preview, options, save; test sign-in in a new tab; activate; versions
//! with a roll-back), each form posting back to it with an `action` field. Every rule,
//! the discovery and the audit are `auth::sso_admin`'s, the same as the JSON API's in
//! `sso.rs`; this module only reads forms and renders. A tenant whose `[sso]` is in the
//! policy files sees its settings read-only.

use std::sync::LazyLock;

use askama::Template;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use sha2::Digest;

use super::sso::DraftBudget;
use super::{console_actor, page_admin};
use crate::auth::sso_admin::{
    self, DEFAULT_SCOPES, DiscoveryView, DraftInput, PolicySsoView, SsoAdminError, SsoView, TenantSso, TestView,
    VersionView,
};
use crate::records::SessionRecord;
use crate::secret::SecretBytes;
use crate::ui::error::PageError;
use crate::ui::readable::Moment;
use crate::ui::{Ctx, Portal, web};

/// The page's only script: the copy buttons, and reloading the wizard when its tab is
/// shown again after a test sign-in in another tab. Allowed by its hash alone.
const SCRIPT: &str = r#"
document.querySelectorAll('button[data-copy]').forEach(function (b) {
  b.addEventListener('click', function () {
    var field = document.getElementById(b.getAttribute('data-copy'));
    var status = document.getElementById('copy-status');
    var done = function () { status.textContent = 'Copied ' + b.getAttribute('data-what') + '.'; };
    var legacy = function () { field.select(); document.execCommand('copy'); done(); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, legacy);
    } else {
      legacy();
    }
  });
});
var test = document.getElementById('test-link');
if (test) {
  test.addEventListener('click', function () {
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'visible') { location.reload(); }
    });
  });
}
"#;

/// The gateway's CSP plus the hash of [`SCRIPT`]: no other script runs on the page.
static PAGE_CSP: LazyLock<Option<HeaderValue>> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(SCRIPT.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'self'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ))
    .ok()
});

/// The fields the wizard's forms send.
const FORM_FIELDS: &[&str] = &[
    "csrf",
    "action",
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "roles_claim",
    "admin_group",
    "mfa",
    "enforce",
    "break_glass",
];

/// The first field of a posted form that the wizard does not send, cut to 64 characters
/// (it is shown back).
fn unknown_field(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(name, _)| !FORM_FIELDS.contains(&name.as_ref()))
        .map(|(name, _)| name.chars().take(64).collect())
}

/// The values the form shows: what was just submitted, else the draft's, else the active
/// version's, else the defaults. Never the secret.
struct FormValues {
    issuer: String,
    client_id: String,
    scopes: String,
    roles_claim: String,
    admin_group: String,
    mfa: String,
    enforce: bool,
    break_glass: String,
}

impl FormValues {
    fn of(v: Option<&VersionView>) -> Self {
        match v {
            Some(v) => FormValues {
                issuer: v.issuer.clone(),
                client_id: v.client_id.clone(),
                scopes: v.scopes.join(" "),
                roles_claim: v.roles_claim.clone().unwrap_or_default(),
                admin_group: v.admin_group.clone().unwrap_or_default(),
                mfa: v.mfa.to_string(),
                enforce: v.enforce,
                break_glass: v.break_glass.join(", "),
            },
            None => FormValues {
                issuer: String::new(),
                client_id: String::new(),
                scopes: DEFAULT_SCOPES.join(" "),
                roles_claim: String::new(),
                admin_group: String::new(),
                mfa: "required".into(),
                enforce: false,
                break_glass: String::new(),
            },
        }
    }

    /// The submitted form's settings (the secret is read separately).
    fn read(body: &[u8]) -> Self {
        let field = |name: &str| web::form_field(body, name).unwrap_or_default();
        FormValues {
            issuer: field("issuer").trim().to_string(),
            client_id: field("client_id").trim().to_string(),
            scopes: field("scopes"),
            roles_claim: field("roles_claim").trim().to_string(),
            admin_group: field("admin_group").trim().to_string(),
            mfa: field("mfa"),
            enforce: web::form_field(body, "enforce").is_some(),
            break_glass: field("break_glass"),
        }
    }

    /// The service's input; an empty optional field is absent.
    fn input(&self, client_secret: Option<SecretBytes>) -> DraftInput {
        let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let scopes: Vec<String> = self.scopes.split_whitespace().map(str::to_string).collect();
        DraftInput {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            scopes: (!scopes.is_empty()).then_some(scopes),
            roles_claim: optional(&self.roles_claim),
            admin_group: optional(&self.admin_group),
            mfa: optional(&self.mfa),
            enforce: self.enforce,
            break_glass: self
                .break_glass
                .split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

/// A refusal shown on the page: the sentence, and the field it is about (if any).
struct Problem {
    field: Option<&'static str>,
    message: String,
}

impl Problem {
    fn of(e: &SsoAdminError) -> Self {
        use SsoAdminError as E;
        let field = match e {
            E::IssuerSyntax { .. }
            | E::AddressNotAllowed(_)
            | E::Unreachable(_)
            | E::InvalidDiscovery
            | E::IssuerMismatch(_)
            | E::NoPkceS256
            | E::NoCodeFlow => Some("issuer"),
            E::ClientId => Some("client_id"),
            E::SecretRequired | E::SecretSyntax => Some("client_secret"),
            E::Scopes => Some("scopes"),
            E::RolesClaim => Some("roles_claim"),
            E::AdminGroup => Some("admin_group"),
            E::Mfa => Some("mfa"),
            E::BreakGlass(_) => Some("break_glass"),
            _ => None,
        };
        let mut message = e.to_string();
        if let Some(first) = message.get(..1) {
            message = first.to_uppercase() + &message[1..];
        }
        Problem {
            field,
            message: format!("{message}."),
        }
    }
}

/// One claim of a test sign-in, as text.
struct ClaimRow {
    name: String,
    value: String,
}

/// The draft's test sign-in as the page shows it.
struct TestPanel {
    passed: bool,
    error: Option<String>,
    claims: Vec<ClaimRow>,
    roles: String,
    at: Moment,
}

impl TestPanel {
    fn of(t: &TestView, now: i64) -> Self {
        TestPanel {
            passed: t.passed,
            error: t.error.clone(),
            claims: t.claims.as_ref().map(|c| claim_rows(c, now)).unwrap_or_default(),
            roles: roles_text(&t.roles),
            at: Moment::at(t.at, now),
        }
    }
}

/// A version in the list.
struct VersionRow {
    version: u64,
    state: &'static str,
    issuer: String,
    client_id: String,
    mfa: &'static str,
    enforce: bool,
    created_by: String,
    created: Moment,
    /// Whether a roll-back restores this version.
    restorable: bool,
}

/// The mapping preview: the roles the last test sign-in's claims get under the form's
/// mapping, or why there are none to show.
enum Preview {
    Roles(String),
    Problem(String),
}

#[derive(Template)]
#[template(path = "admin_sso.html")]
struct SsoPage<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    /// Where the test sign-in starts, with this session's ticket.
    test_href: String,
    script: &'static str,
    notice: Option<String>,
    problem: Option<Problem>,
    /// The policy files' settings: the page is read-only.
    policy: Option<PolicySsoView>,
    redirect_uri: String,
    backchannel_logout_uri: String,
    form: FormValues,
    /// Whether a secret is stored (then the field may stay empty).
    secret_set: bool,
    discovery: Option<DiscoveryView>,
    preview: Option<Preview>,
    draft: Option<VersionView>,
    test: Option<TestPanel>,
    active: Option<VersionView>,
    versions: Vec<VersionRow>,
}

impl SsoPage<'_> {
    /// The problem's sentence when it is about `field`.
    fn field_problem(&self, field: &str) -> Option<&str> {
        self.problem
            .as_ref()
            .filter(|p| p.field == Some(field))
            .map(|p| p.message.as_str())
    }

    /// Whether Activate may be pressed: a draft with a passing test of its settings.
    fn can_activate(&self) -> bool {
        self.draft.is_some() && self.test.as_ref().is_some_and(|t| t.passed)
    }
}

impl Portal {
    /// `GET /.portcullis/admin/sso`.
    pub(in crate::ui) async fn admin_sso_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/sso") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let view = self.sso_view(ctx).await?;
        let form = FormValues::of(view.draft.as_ref().or(view.active.as_ref()));
        let mut page = sso_page(ctx, &session, view, form);
        page.notice = sso_notice(req.uri().query());
        Ok(respond(StatusCode::OK, &page))
    }

    /// `POST /.portcullis/admin/sso`: the wizard's forms, told apart by `action`:
    /// `discover` (check the issuer), `preview` (roles under the entered mapping), `save`
    /// (the draft), `activate` and `rollback`. Changes answer 303 back to the page with a
    /// fixed notice; a refusal renders the page with the entered values and the problem
    /// tied to its field.
    pub(in crate::ui) async fn admin_sso_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/sso") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let (_, body, _) = self.session_form(req, ctx, &session).await?;
        let action = web::form_field(&body, "action").unwrap_or_default();
        let t = TenantSso::of(ctx.entry, &ctx.origin);
        let actor = console_actor(ctx, &session);
        let admin = &self.sso_admin;
        let entered = FormValues::read(&body);
        // As the JSON twin refuses unknown fields: a field the wizard does not show (such
        // as a redirect URI, which is always the tenant's own) is refused, not ignored.
        if let Some(unknown) = unknown_field(&body) {
            let mut page = sso_page(ctx, &session, self.sso_view(ctx).await?, entered);
            page.problem = Some(Problem {
                field: None,
                message: format!(
                    "The form has a field the wizard does not take: `{unknown}`. The redirect and logout URIs are always this host's own."
                ),
            });
            return Ok(respond(StatusCode::BAD_REQUEST, &page));
        }
        let refused = |view, form, e: &SsoAdminError| {
            let status = if e.is_conflict() {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            let mut page = sso_page(ctx, &session, view, form);
            page.problem = Some(Problem::of(e));
            respond(status, &page)
        };
        match action.as_str() {
            "discover" => {
                let view = self.sso_view(ctx).await?;
                if let Err(e) = sso_admin::check_issuer(&entered.issuer, t.production) {
                    return Ok(refused(view, entered, &e));
                }
                if let Some(answer) = self.over_budget(ctx, &session, entered.issuer.clone()).await? {
                    return Ok(answer);
                }
                match admin.check_discovery(&t, &entered.issuer).await {
                    Ok(found) => {
                        let mut page = sso_page(ctx, &session, view, entered);
                        page.discovery = Some(found);
                        Ok(respond(StatusCode::OK, &page))
                    }
                    Err(e) => Ok(refused(view, entered, &e)),
                }
            }
            "preview" => {
                let view = self.sso_view(ctx).await?;
                let claims = [view.draft.as_ref(), view.active.as_ref()]
                    .into_iter()
                    .flatten()
                    .find_map(|v| v.test.as_ref().and_then(|t| t.claims.clone()));
                let preview = match claims {
                    None => Preview::Problem(
                        "There is no test sign-in to preview with yet: save the draft and run a test sign-in, then the preview applies the mapping to the claims your identity provider sent."
                            .into(),
                    ),
                    Some(claims) => {
                        let optional = |s: &str| (!s.is_empty()).then_some(s.to_string());
                        match sso_admin::preview_roles(
                            &claims,
                            optional(&entered.roles_claim).as_deref(),
                            optional(&entered.admin_group).as_deref(),
                        ) {
                            Ok(roles) => Preview::Roles(roles_text(&roles)),
                            Err(why) => Preview::Problem(format!("No preview: {why}.")),
                        }
                    }
                };
                let mut page = sso_page(ctx, &session, view, entered);
                page.preview = Some(preview);
                Ok(respond(StatusCode::OK, &page))
            }
            "save" => {
                let secret = web::form_field(&body, "client_secret")
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretBytes::new(s.into_bytes()));
                let input = entered.input(secret);
                // Only a draft that can be saved spends the discovery budget.
                if t.policy.is_none()
                    && let Err(e) = sso_admin::check_draft(&input, t.production)
                {
                    return Ok(refused(self.sso_view(ctx).await?, entered, &e));
                }
                if let Some(answer) = self.over_budget(ctx, &session, entered.issuer.clone()).await? {
                    return Ok(answer);
                }
                match admin.save_draft(&t, input, &actor, ctx.now).await {
                    Ok(saved) => Ok(web::see_other(&format!(
                        "/.portcullis/admin/sso?done=saved&version={}",
                        saved.draft.version
                    ))),
                    Err(e) if matches!(e, SsoAdminError::Store(_) | SsoAdminError::Seal(_)) => {
                        Err(unavailable(ctx, &e))
                    }
                    Err(e) => Ok(refused(self.sso_view(ctx).await?, entered, &e)),
                }
            }
            "activate" | "rollback" => {
                let done = if action == "activate" {
                    admin.activate(&t, &actor, ctx.now).await
                } else {
                    admin.rollback(&t, &actor, ctx.now).await
                };
                match done {
                    Ok(active) => Ok(web::see_other(&format!(
                        "/.portcullis/admin/sso?done={}&version={}",
                        if action == "activate" {
                            "activated"
                        } else {
                            "rolled_back"
                        },
                        active.version
                    ))),
                    Err(e) if matches!(e, SsoAdminError::Store(_) | SsoAdminError::Seal(_)) => {
                        Err(unavailable(ctx, &e))
                    }
                    Err(e) => {
                        let view = self.sso_view(ctx).await?;
                        let form = FormValues::of(view.draft.as_ref().or(view.active.as_ref()));
                        Ok(refused(view, form, &e))
                    }
                }
            }
            _ => Err(PageError::BadForm),
        }
    }

    /// The wizard's state, or 503.
    async fn sso_view(&self, ctx: &Ctx<'_>) -> Result<SsoView, PageError> {
        let t = TenantSso::of(ctx.entry, &ctx.origin);
        self.sso_admin.view(&t).await.map_err(|e| unavailable(ctx, &e))
    }

    /// When the tenant has used up its discovery budget (shared with the JSON API), the
    /// page saying so (429), with the entered issuer kept.
    async fn over_budget(
        &self,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
        issuer: String,
    ) -> Result<Option<Response<Bytes>>, PageError> {
        // A tenant managed by the policy files makes no outbound request.
        if ctx.entry.tenant.sso.is_some() {
            return Ok(None);
        }
        match self.draft_budget(ctx).await {
            Ok(()) => Ok(None),
            Err(DraftBudget::Unavailable) => Err(PageError::Unavailable),
            Err(DraftBudget::Spent(wait)) => {
                let view = self.sso_view(ctx).await?;
                let mut form = FormValues::of(view.draft.as_ref().or(view.active.as_ref()));
                form.issuer = issuer;
                let mut page = sso_page(ctx, session, view, form);
                page.problem = Some(Problem {
                    field: None,
                    message: format!(
                        "Too many discovery checks for this tenant. Try again in {}.",
                        crate::ui::readable::duration(u64::try_from(wait).unwrap_or(1))
                    ),
                });
                let mut resp = respond(StatusCode::TOO_MANY_REQUESTS, &page);
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
                Ok(Some(resp))
            }
        }
    }
}

/// The page for `view`, with `form` in the fields.
fn sso_page<'a>(ctx: &'a Ctx<'_>, session: &'a SessionRecord, view: SsoView, form: FormValues) -> SsoPage<'a> {
    let restorable = view.active.as_ref().and_then(|a| a.replaced);
    SsoPage {
        tenant_name: &ctx.entry.tenant.name,
        csrf: &session.csrf_token,
        test_href: super::sso::test_start_path(ctx, session),
        script: SCRIPT,
        notice: None,
        problem: None,
        secret_set: view
            .draft
            .as_ref()
            .or(view.active.as_ref())
            .is_some_and(|v| v.client_secret_set),
        test: view.test.as_ref().map(|t| TestPanel::of(t, ctx.now)),
        versions: view
            .versions
            .iter()
            .map(|v| VersionRow {
                version: v.version,
                state: match v.state {
                    "active" => "Active",
                    "draft" => "Draft",
                    _ => "Earlier",
                },
                issuer: v.issuer.clone(),
                client_id: v.client_id.clone(),
                mfa: v.mfa,
                enforce: v.enforce,
                created_by: v.created_by.clone(),
                created: Moment::at(v.created_at, ctx.now),
                restorable: Some(v.version) == restorable,
            })
            .collect(),
        policy: view.policy,
        redirect_uri: view.redirect_uri,
        backchannel_logout_uri: view.backchannel_logout_uri,
        form,
        discovery: None,
        preview: None,
        draft: view.draft,
        active: view.active,
    }
}

/// The page with its script's CSP, or a plain 500 if the template cannot render.
fn respond(status: StatusCode, page: &SsoPage<'_>) -> Response<Bytes> {
    let mut resp = match page.render() {
        Ok(body) => web::respond(status, "text/html; charset=utf-8", body),
        Err(_) => {
            return web::respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "page could not be rendered",
            );
        }
    };
    if let Some(csp) = PAGE_CSP.as_ref() {
        resp.headers_mut()
            .insert(http::header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    resp
}

fn unavailable(ctx: &Ctx<'_>, e: &SsoAdminError) -> PageError {
    tracing::error!(organization.id = %ctx.entry.tenant.id, request_id = ctx.request_id, error = %e, "single sign-on wizard unavailable");
    PageError::Unavailable
}

/// Claims that hold a time (unix seconds), shown with the UTC time too.
const TIME_CLAIMS: [&str; 4] = ["exp", "iat", "auth_time", "nbf"];

/// The claims as name/value text, names sorted; strings unquoted, times readable, other
/// values as JSON.
fn claim_rows(claims: &serde_json::Map<String, Value>, now: i64) -> Vec<ClaimRow> {
    let mut rows: Vec<ClaimRow> = claims
        .iter()
        .map(|(name, value)| ClaimRow {
            name: name.clone(),
            value: match value {
                Value::String(s) => s.clone(),
                Value::Number(n) if TIME_CLAIMS.contains(&name.as_str()) => match n.as_i64() {
                    Some(secs) => {
                        let at = Moment::at(secs, now);
                        format!("{} ({}, {secs})", at.utc, at.relative)
                    }
                    None => n.to_string(),
                },
                other => other.to_string(),
            },
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// `a, b` or "none".
fn roles_text(roles: &[String]) -> String {
    if roles.is_empty() {
        "none".into()
    } else {
        roles.join(", ")
    }
}

/// The notice of `?done=saved|activated|rolled_back&version=N`: a fixed sentence.
fn sso_notice(query: Option<&str>) -> Option<String> {
    let version = web::query_param(query, "version").and_then(|n| n.parse::<u64>().ok())?;
    match web::query_param(query, "done")?.as_str() {
        "saved" => Some(format!(
            "Draft saved as version {version}. The identity provider's discovery document was checked. Run a test sign-in next; sign-ins do not change until you activate."
        )),
        "activated" => Some(format!(
            "Version {version} is active: the tenant's users now sign in with it."
        )),
        "rolled_back" => Some(format!("Rolled back: version {version} is active again.")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, a page a change lands on would say nothing, or show what a crafted
    /// link puts in it.
    #[test]
    fn a_change_reads_as_a_fixed_sentence() {
        assert_eq!(
            sso_notice(Some("done=activated&version=3")).as_deref(),
            Some("Version 3 is active: the tenant's users now sign in with it.")
        );
        for bad in ["done=activated", "done=other&version=1", "done=saved&version=x<b>"] {
            assert_eq!(sso_notice(Some(bad)), None, "{bad}");
        }
    }

    /// If this broke, a form naming a redirect URI (or any field the wizard does not
    /// send) would be saved with that field silently dropped, unlike its JSON twin.
    #[test]
    fn a_field_the_wizard_does_not_send_is_found() {
        let form = b"csrf=x&action=save&issuer=https%3A%2F%2Fidp&enforce=on&mfa=idp";
        assert_eq!(unknown_field(form), None);
        let form = b"csrf=x&action=save&redirect_uri=https%3A%2F%2Fevil.example%2Fcb";
        assert_eq!(unknown_field(form).as_deref(), Some("redirect_uri"));
        let long = format!("csrf=x&{}=1", "a".repeat(300));
        assert_eq!(unknown_field(long.as_bytes()).map(|f| f.len()), Some(64));
    }

    /// If this broke, a refusal would not point at its field (the page ties the message
    /// to the input through aria-describedby), or would start in lower case.
    #[test]
    fn each_refusal_names_its_field() {
        let p = Problem::of(&SsoAdminError::IssuerMismatch("https://idp.example".into()));
        assert_eq!(p.field, Some("issuer"));
        assert!(p.message.starts_with("Issuer mismatch"), "{}", p.message);
        assert_eq!(Problem::of(&SsoAdminError::SecretRequired).field, Some("client_secret"));
        assert_eq!(Problem::of(&SsoAdminError::NotTested).field, None);
    }

    /// If this broke, the form would lose the admin's break-glass names or scopes, or
    /// send empty optional settings as values.
    #[test]
    fn the_form_reads_into_the_services_input() {
        let body = b"issuer=https%3A%2F%2Fidp.example&client_id=gw&scopes=openid++email&roles_claim=&admin_group=&mfa=gateway&enforce=on&break_glass=root%2C+ops";
        let input = FormValues::read(body).input(None);
        assert_eq!(input.scopes, Some(vec!["openid".to_string(), "email".to_string()]));
        assert_eq!((input.roles_claim, input.admin_group), (None, None));
        assert_eq!(input.mfa.as_deref(), Some("gateway"));
        assert!(input.enforce);
        assert_eq!(input.break_glass, ["root", "ops"]);
    }

    /// If this broke, the script would be refused by the page's own CSP (or any other
    /// script allowed).
    #[test]
    fn the_csp_allows_the_pages_script_by_its_hash_only() {
        let csp = PAGE_CSP.as_ref().expect("valid header").to_str().expect("ascii");
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(SCRIPT.as_bytes()));
        let scripts: Vec<&str> = csp
            .split(';')
            .map(str::trim)
            .filter(|d| d.starts_with("script-src") || d.starts_with("default-src"))
            .collect();
        assert_eq!(
            scripts,
            ["default-src 'none'", &format!("script-src 'sha256-{hash}'")],
            "{csp}"
        );
    }
}
