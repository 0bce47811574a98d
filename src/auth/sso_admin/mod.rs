//! The self-service SSO wizard's service: a tenant admin's draft of the tenant's OIDC
//! settings, its test sign-in result, activation and roll-back, over the tier's
//! [`SsoStore`]. One service for every interface (the wizard pages and their JSON API):
//! interfaces parse requests and render [`SsoView`]; this module checks the rules,
//! discovers the IdP, seals the client secret, writes the store and audits.
//!
//! The state machine: `save_draft` (validated, discovery checked, any test cleared) →
//! a test sign-in against [`SsoAdmin::draft_for_test`] → `record_test` (kept only if the
//! draft is still the one tested) → `activate` (refused without a passing test of exactly
//! the current draft) → `rollback` (the version active before comes back). A tenant
//! whose `[sso]` is in the policy files is managed there: every change is refused.
//!
//! Knows nothing of HTTP; the clock is passed in. The client secret is sealed at once
//! ([`sealing`]) and never leaves except opened for a sign-in; views only say whether
//! one is set, audit records never hold it.
//!
//! # Layout
//! - this file: [`SsoAdmin`], its input, errors and views.
//! - [`sealing`]: the at-rest encryption of client secrets.

pub mod sealing;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use self::sealing::{SealError, SecretSealer};
use crate::audit::{Actor, AuditEntry};
use crate::auth::oidc::ROLE_MAX_CHARS;
use crate::auth::oidc_client::{DiscoveryError, OidcClient, Provider};
use crate::config::{Config, MfaPolicy, SsoConfig, TenantEntry};
use crate::records::{SsoMfa, SsoState, SsoTest, SsoVersion};
use crate::secret::SecretBytes;
use crate::session::Sessions;
use crate::store::{SsoActivation, SsoRollback, StoreError, TierStore};

/// The role a user gets when the roles claim holds the version's admin group.
pub use crate::account::TENANT_ADMIN_ROLE;

/// Scopes of a draft that names none (the policy files' default too).
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// Most scopes a draft may request.
pub const SCOPES_MAX: usize = 32;

/// Longest issuer URL, client id, scope or claim name accepted.
pub const FIELD_MAX_CHARS: usize = 512;

/// Why a wizard step was refused. Each text says the problem in plain words and is safe
/// to show the admin (never the secret); interfaces choose the status
/// ([`SsoAdminError::is_conflict`] → 409, the input problems → 400).
#[derive(Debug, thiserror::Error)]
pub enum SsoAdminError {
    /// The tenant's `[sso]` is set in the policy files; the wizard is read-only.
    #[error("this tenant's single sign-on is set in the policy files; change it there")]
    ManagedByPolicy,
    /// The issuer is not a usable URL for this tier.
    #[error(
        "the issuer must be an https URL{} with a host and no query or fragment",
        if *.production { "" } else { " (or http, outside production)" }
    )]
    IssuerSyntax {
        /// Whether the tier is a production one (http is refused there).
        production: bool,
    },
    /// The issuer or a URL its discovery names breaks the address rules (scheme, or a
    /// non-public address in production), or its host does not resolve.
    #[error("the identity provider's URL cannot be used: {0}")]
    AddressNotAllowed(String),
    /// The discovery document could not be fetched.
    #[error("discovery failed: {0}")]
    Unreachable(String),
    /// The answer at the discovery URL is not a discovery document.
    #[error("discovery failed: the answer at /.well-known/openid-configuration is not an OpenID discovery document")]
    InvalidDiscovery,
    /// The discovery document names another issuer than the one entered.
    #[error(
        "issuer mismatch: the discovery document names another issuer than `{0}` (check the exact URL, including any trailing slash)"
    )]
    IssuerMismatch(String),
    /// The IdP does not offer PKCE with S256, which the gateway always uses.
    #[error("the identity provider does not support PKCE with S256 (code_challenge_methods_supported)")]
    NoPkceS256,
    /// The IdP does not offer the authorization code flow.
    #[error("the identity provider does not support the authorization code flow (response type `code`)")]
    NoCodeFlow,
    /// The client id is empty, too long or has control characters.
    #[error("the client id must be 1 to 512 characters without control characters")]
    ClientId,
    /// No client secret was given and no earlier version has one.
    #[error("a client secret is required")]
    SecretRequired,
    /// The client secret is too long or has control characters.
    #[error("the client secret must be at most 512 characters without control characters")]
    SecretSyntax,
    /// A scope breaks RFC 6749's scope-token rule, or there are too many.
    #[error("scopes must be 1 to 32 names of printable characters without spaces, quotes or backslashes")]
    Scopes,
    /// The roles claim name is empty, too long or has control characters.
    #[error("the roles claim must be a claim name of 1 to 512 characters without control characters")]
    RolesClaim,
    /// The admin group cannot be a role, or there is no roles claim to find it in.
    #[error("the admin group must be a role value (1 to 128 characters, no comma) and needs a roles claim")]
    AdminGroup,
    /// The MFA policy is not one of the three.
    #[error("mfa must be one of required, gateway, idp")]
    Mfa,
    /// A break-glass name is not a local account name.
    #[error("break-glass accounts must be local user names: {0}")]
    BreakGlass(#[from] crate::account::LocalNameError),
    /// There is no draft to test or activate.
    #[error("there is no draft; save the settings first")]
    NoDraft,
    /// The draft has no passing test of its current settings.
    #[error("the draft has no passing test sign-in; run the test after the last change")]
    NotTested,
    /// The test result is for settings the draft no longer has.
    #[error("the draft changed while the test ran; run the test again")]
    StaleTest,
    /// No version was active before the current one.
    #[error("there is no earlier version to roll back to")]
    NothingToRollBack,
    /// Sealing or opening the client secret failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The store failed; nothing or all of the step happened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SsoAdminError {
    /// The refusals that are about the state, not the input (the API's 409).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            SsoAdminError::ManagedByPolicy
                | SsoAdminError::NoDraft
                | SsoAdminError::NotTested
                | SsoAdminError::StaleTest
                | SsoAdminError::NothingToRollBack
        )
    }
}

/// The tenant the wizard acts on, with what the service needs of its tier.
#[derive(Clone, Copy)]
pub struct TenantSso<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Its tier's name (the store and the sealing key's binding).
    pub tier: &'a str,
    /// Production tier: https and public addresses only.
    pub production: bool,
    /// The tier's cookie key, from which the sealing key is derived.
    pub cookie_key: &'a SecretBytes,
    /// The tenant's canonical origin (`https://host[:port]`), for the URIs to copy.
    pub origin: &'a str,
    /// The `[sso]` of the policy files, when set: then the wizard is read-only.
    pub policy: Option<&'a SsoConfig>,
}

impl std::fmt::Debug for TenantSso<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSso")
            .field("tenant", &self.tenant)
            .field("tier", &self.tier)
            .field("origin", &self.origin)
            .field("managed_by_policy", &self.policy.is_some())
            .finish()
    }
}

impl<'a> TenantSso<'a> {
    /// The tenant of `entry` seen from `origin` (its canonical origin).
    pub fn of(entry: &'a TenantEntry, origin: &'a str) -> Self {
        TenantSso {
            tenant: &entry.tenant.id,
            tier: &entry.tier.name,
            production: entry.tier.production,
            cookie_key: &entry.tier.keys.cookie,
            origin,
            policy: entry.tenant.sso.as_ref(),
        }
    }

    /// Where the IdP sends the browser back: register this at the IdP.
    pub fn redirect_uri(&self) -> String {
        format!("{}/.portcullis/callback", self.origin)
    }

    /// Where the IdP posts logout tokens: register this at the IdP.
    pub fn backchannel_logout_uri(&self) -> String {
        format!("{}/.portcullis/backchannel-logout", self.origin)
    }
}

/// What an admin submits for the draft (the JSON API's `PUT` body and the wizard's
/// forms). Absent optional settings take their defaults; an absent or empty secret keeps
/// the one of the current draft or active version.
#[derive(Default)]
pub struct DraftInput {
    /// Issuer URL.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret, if (re)entered.
    pub client_secret: Option<SecretBytes>,
    /// Scopes; [`DEFAULT_SCOPES`] when absent.
    pub scopes: Option<Vec<String>>,
    /// Claim whose values become roles.
    pub roles_claim: Option<String>,
    /// Roles-claim value that makes a user `tenant-admin`.
    pub admin_group: Option<String>,
    /// `required` (default), `gateway` or `idp`.
    pub mfa: Option<String>,
    /// SSO only (local passwords off except `break_glass`).
    pub enforce: bool,
    /// Local accounts that keep their password under `enforce`.
    pub break_glass: Vec<String>,
}

impl std::fmt::Debug for DraftInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftInput")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("scopes", &self.scopes)
            .field("roles_claim", &self.roles_claim)
            .field("admin_group", &self.admin_group)
            .field("mfa", &self.mfa)
            .field("enforce", &self.enforce)
            .field("break_glass", &self.break_glass)
            .finish()
    }
}

/// How a test sign-in against the draft ended, as the sign-in flow saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum TestOutcome {
    /// Signed in: the validated ID token's claims and the roles they map to
    /// ([`mapped_roles`]).
    Passed {
        /// Every claim, for the admin to see.
        claims: Map<String, Value>,
        /// The roles the gateway would give.
        roles: Vec<String>,
    },
    /// Refused; why, in plain words (never token content).
    Failed {
        /// Safe to show.
        error: String,
    },
}

/// A version with its secret opened: what a sign-in (the test one against the draft, or
/// a real one against the active version) needs. `Debug` hides the secret.
pub struct OpenedSso {
    /// The version's number.
    pub version: u64,
    /// [`SsoVersion::digest`]: a test records it, so its result only counts for this content.
    pub digest: String,
    /// Issuer URL.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret, opened.
    pub client_secret: SecretBytes,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// Claim whose values become roles.
    pub roles_claim: Option<String>,
    /// Roles-claim value that makes a user `tenant-admin`.
    pub admin_group: Option<String>,
    /// MFA policy of the sign-in.
    pub mfa: MfaPolicy,
    /// SSO only.
    pub enforce: bool,
    /// Local accounts that keep their password under `enforce`.
    pub break_glass: Vec<String>,
}

impl std::fmt::Debug for OpenedSso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSso")
            .field("version", &self.version)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl OpenedSso {
    /// The settings as the sign-in pages take them from the policy files, for a tenant
    /// whose SSO comes from the wizard. `admin_group` has no place there: the sign-in
    /// applies it with [`mapped_roles`].
    pub fn into_sso_config(self) -> SsoConfig {
        SsoConfig {
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: self.client_secret,
            scopes: self.scopes,
            roles_claim: self.roles_claim,
            mfa: self.mfa,
            enforce: self.enforce,
            break_glass: self.break_glass,
        }
    }
}

/// The roles a sign-in gets from the IdP's role values: those values, plus `tenant-admin`
/// when one of them is the version's admin group.
pub fn mapped_roles(admin_group: Option<&str>, idp_roles: &[String]) -> Vec<String> {
    let mut roles = idp_roles.to_vec();
    if admin_group.is_some_and(|g| idp_roles.iter().any(|r| r == g)) && !roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
        roles.push(TENANT_ADMIN_ROLE.to_string());
    }
    roles
}

/// The roles a sign-in with `claims` (a test sign-in's) would get under the mapping
/// `roles_claim` / `admin_group`: the wizard's preview. `Err` says in plain words why the
/// claim cannot be read as roles.
pub fn preview_roles(
    claims: &Map<String, Value>,
    roles_claim: Option<&str>,
    admin_group: Option<&str>,
) -> Result<Vec<String>, String> {
    let idp_roles = match roles_claim {
        Some(claim) if !claims.contains_key(claim) => {
            return Err(format!("the test sign-in's claims have no `{claim}`"));
        }
        Some(claim) => crate::auth::oidc::roles_of(claims, claim)
            .map_err(|_| format!("the claim `{claim}` is not a list of role names"))?,
        None => Vec::new(),
    };
    Ok(mapped_roles(admin_group, &idp_roles))
}

/// The issuer of `tenant`'s identity provider: what `idp=sso` names wherever an account
/// is named (`crate::account::named`: the operator API, the CLI, the tenant admin's
/// breakers). The policy files' `[sso]` first, else the wizard's active version, as the
/// sign-in pages choose; `None` when the tenant has neither or is not in `config`.
pub async fn tenant_issuer(config: &Config, sessions: &Sessions, tenant: &str) -> Result<Option<String>, StoreError> {
    if let Some(issuer) = config.sso_issuer(tenant) {
        return Ok(Some(issuer.to_string()));
    }
    let Some(t) = config.tenants.iter().find(|t| t.id == tenant) else {
        return Ok(None);
    };
    let active = sessions.store(&t.tier)?.get_sso_active(tenant).await?;
    Ok(active.map(|v| v.issuer))
}

/// The discovery result shown when a draft is saved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveryView {
    /// The issuer, as the IdP names itself.
    pub issuer: String,
    /// Where browsers sign in.
    pub authorization_endpoint: String,
    /// Where the gateway exchanges codes.
    pub token_endpoint: String,
    /// Where the IdP's keys are.
    pub jwks_uri: String,
    /// Where the IdP ends sessions, if it says.
    pub end_session_endpoint: Option<String>,
}

impl DiscoveryView {
    fn of(p: &Provider) -> Self {
        DiscoveryView {
            issuer: p.issuer.clone(),
            authorization_endpoint: p.authorization_endpoint.clone(),
            token_endpoint: p.token_endpoint.clone(),
            jwks_uri: p.jwks_uri.clone(),
            end_session_endpoint: p.end_session_endpoint.clone(),
        }
    }
}

/// One version as the wizard shows it: every setting, never the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionView {
    /// Its number.
    pub version: u64,
    /// `draft`, `active` or `superseded`.
    pub state: &'static str,
    /// Issuer URL.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// Whether a client secret is set (it is never shown again).
    pub client_secret_set: bool,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Claim whose values become roles.
    pub roles_claim: Option<String>,
    /// Roles-claim value that makes a user `tenant-admin`.
    pub admin_group: Option<String>,
    /// `required`, `gateway` or `idp`.
    pub mfa: &'static str,
    /// SSO only.
    pub enforce: bool,
    /// Local accounts that keep their password under `enforce`.
    pub break_glass: Vec<String>,
    /// When saved.
    pub created_at: i64,
    /// Who saved it.
    pub created_by: String,
    /// The version it replaced when activated (what a roll-back restores).
    pub replaced: Option<u64>,
    /// Its test sign-in, if any.
    pub test: Option<TestView>,
}

impl VersionView {
    fn of(v: &SsoVersion) -> Self {
        VersionView {
            version: v.version,
            state: v.state.as_str(),
            issuer: v.issuer.clone(),
            client_id: v.client_id.clone(),
            client_secret_set: !v.client_secret.0.is_empty(),
            scopes: v.scopes.clone(),
            roles_claim: v.roles_claim.clone(),
            admin_group: v.admin_group.clone(),
            mfa: v.mfa.as_str(),
            enforce: v.enforce,
            break_glass: v.break_glass.clone(),
            created_at: v.created_at,
            created_by: v.created_by.clone(),
            replaced: v.replaced,
            test: v.test.as_ref().map(|t| TestView::of(t, &v.digest())),
        }
    }
}

/// A test sign-in as the API shows it under `"test"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestView {
    /// Whether it passed against the version's current settings.
    pub passed: bool,
    /// The ID token's claims (passed tests).
    pub claims: Option<Map<String, Value>>,
    /// The roles they map to (passed tests).
    pub roles: Vec<String>,
    /// Why it failed (failed tests).
    pub error: Option<String>,
    /// When (unix seconds).
    pub at: i64,
}

impl TestView {
    fn of(t: &SsoTest, digest: &str) -> Self {
        match t {
            SsoTest::Passed { claims, roles, at, .. } => TestView {
                passed: t.passed_for(digest),
                claims: Some(claims.clone()),
                roles: roles.clone(),
                error: None,
                at: *at,
            },
            SsoTest::Failed { error, at, .. } => TestView {
                passed: false,
                claims: None,
                roles: Vec::new(),
                error: Some(error.clone()),
                at: *at,
            },
        }
    }
}

/// The `[sso]` of the policy files as the read-only wizard shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySsoView {
    /// Issuer URL.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Claim whose values become roles.
    pub roles_claim: Option<String>,
    /// `required`, `gateway` or `idp`.
    pub mfa: &'static str,
    /// SSO only.
    pub enforce: bool,
    /// Local accounts that keep their password under `enforce`.
    pub break_glass: Vec<String>,
}

/// Everything the wizard and `GET /.portcullis/api/admin/sso` show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SsoView {
    /// `policy` (read-only, set in the policy files), `draft` (a draft exists),
    /// `active` (no draft, a version is active) or `none`.
    pub status: &'static str,
    /// To register at the IdP.
    pub redirect_uri: String,
    /// To register at the IdP.
    pub backchannel_logout_uri: String,
    /// The policy files' settings, for a tenant managed there.
    pub policy: Option<PolicySsoView>,
    /// The draft being edited.
    pub draft: Option<VersionView>,
    /// The draft's test sign-in (same as `draft.test`), where the API shows it.
    pub test: Option<TestView>,
    /// What sign-ins use now.
    pub active: Option<VersionView>,
    /// Every version, newest first.
    pub versions: Vec<VersionView>,
}

/// What saving a draft answers: the draft, the discovery summary and the URIs to copy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavedDraft {
    /// Always `draft`.
    pub status: &'static str,
    /// To register at the IdP.
    pub redirect_uri: String,
    /// To register at the IdP.
    pub backchannel_logout_uri: String,
    /// The IdP as discovered.
    pub discovery: DiscoveryView,
    /// The draft as stored.
    pub draft: VersionView,
}

/// The wizard's service, shared by every tenant of every tier.
#[derive(Clone)]
pub struct SsoAdmin {
    /// The stores of every tier (through the session service that owns them).
    sessions: Arc<Sessions>,
    /// Discovery, with the address rules of the tiers.
    oidc: Arc<OidcClient>,
}

impl SsoAdmin {
    /// The service over the tiers' stores and the shared IdP client.
    pub fn new(sessions: Arc<Sessions>, oidc: Arc<OidcClient>) -> Self {
        SsoAdmin { sessions, oidc }
    }

    fn store(&self, t: &TenantSso<'_>) -> Result<Arc<dyn TierStore>, SsoAdminError> {
        Ok(self.sessions.store(t.tier)?)
    }

    /// What the wizard shows: the policy's settings (read-only) or the stored versions.
    pub async fn view(&self, t: &TenantSso<'_>) -> Result<SsoView, SsoAdminError> {
        let mut view = SsoView {
            status: "none",
            redirect_uri: t.redirect_uri(),
            backchannel_logout_uri: t.backchannel_logout_uri(),
            policy: None,
            draft: None,
            test: None,
            active: None,
            versions: Vec::new(),
        };
        if let Some(p) = t.policy {
            view.status = "policy";
            view.policy = Some(PolicySsoView {
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                scopes: p.scopes.clone(),
                roles_claim: p.roles_claim.clone(),
                mfa: mfa_name(p.mfa),
                enforce: p.enforce,
                break_glass: p.break_glass.clone(),
            });
            return Ok(view);
        }
        let versions = self.store(t)?.list_sso_versions(t.tenant).await?;
        view.versions = versions.iter().map(VersionView::of).collect();
        view.draft = view.versions.iter().find(|v| v.state == "draft").cloned();
        view.active = view.versions.iter().find(|v| v.state == "active").cloned();
        view.test = view.draft.as_ref().and_then(|d| d.test.clone());
        view.status = match (&view.draft, &view.active) {
            (Some(_), _) => "draft",
            (None, Some(_)) => "active",
            (None, None) => "none",
        };
        Ok(view)
    }

    /// Step 1 of the wizard on its own: checks `issuer` against the tier's rules and
    /// fetches its discovery document, storing nothing. Each problem is named exactly
    /// (syntax, address, unreachable, not a discovery document, issuer mismatch, no
    /// code flow, no PKCE S256).
    pub async fn check_discovery(&self, t: &TenantSso<'_>, issuer: &str) -> Result<DiscoveryView, SsoAdminError> {
        if t.policy.is_some() {
            return Err(SsoAdminError::ManagedByPolicy);
        }
        check_issuer(issuer, t.production)?;
        Ok(DiscoveryView::of(&*self.discover(issuer, t.production).await?))
    }

    /// Validates `input`, discovers the IdP (fresh, with the tier's address rules), seals
    /// the secret (or keeps the draft's or active version's) and stores the draft,
    /// replacing any draft and clearing its test; audited as `sso.update`.
    pub async fn save_draft(
        &self,
        t: &TenantSso<'_>,
        input: DraftInput,
        actor: &Actor,
        now: i64,
    ) -> Result<SavedDraft, SsoAdminError> {
        if t.policy.is_some() {
            return Err(SsoAdminError::ManagedByPolicy);
        }
        let checked = check_input(&input, t.production)?;
        let store = self.store(t)?;
        let before = store.get_sso_draft(t.tenant).await?;
        let client_secret = match &input.client_secret {
            Some(s) if !s.expose_secret().is_empty() => {
                SecretSealer::new(t.tier, t.cookie_key)?.seal(t.tenant, s.expose_secret())?
            }
            _ => {
                let kept = match &before {
                    Some(d) => Some(d.client_secret.clone()),
                    None => store.get_sso_active(t.tenant).await?.map(|a| a.client_secret),
                };
                kept.filter(|s| !s.0.is_empty()).ok_or(SsoAdminError::SecretRequired)?
            }
        };
        let provider = self.discover(&input.issuer, t.production).await?;
        let draft = SsoVersion {
            tenant: t.tenant.to_string(),
            version: 0,
            issuer: input.issuer,
            client_id: input.client_id,
            client_secret,
            scopes: checked.scopes,
            roles_claim: input.roles_claim,
            admin_group: input.admin_group,
            mfa: checked.mfa,
            enforce: input.enforce,
            break_glass: input.break_glass,
            created_at: now,
            created_by: actor.name.clone(),
            state: SsoState::Draft,
            test: None,
            replaced: None,
        };
        let stored = store.put_sso_draft(&draft).await?;
        audit(
            &*store,
            t,
            actor,
            "sso.update",
            before.as_ref().map(VersionView::of),
            Some(VersionView::of(&stored)),
            now,
        )
        .await?;
        Ok(SavedDraft {
            status: "draft",
            redirect_uri: t.redirect_uri(),
            backchannel_logout_uri: t.backchannel_logout_uri(),
            discovery: DiscoveryView::of(&provider),
            draft: VersionView::of(&stored),
        })
    }

    /// The draft with its secret opened, for the test sign-in; pass its `digest` back to
    /// [`Self::record_test`].
    pub async fn draft_for_test(&self, t: &TenantSso<'_>) -> Result<OpenedSso, SsoAdminError> {
        if t.policy.is_some() {
            return Err(SsoAdminError::ManagedByPolicy);
        }
        let draft = self
            .store(t)?
            .get_sso_draft(t.tenant)
            .await?
            .ok_or(SsoAdminError::NoDraft)?;
        opened(t, &draft)
    }

    /// The active version with its secret opened, for real sign-ins; `None` when the
    /// tenant has none (or is managed by the policy files).
    pub async fn active_for_sign_in(&self, t: &TenantSso<'_>) -> Result<Option<OpenedSso>, SsoAdminError> {
        if t.policy.is_some() {
            return Ok(None);
        }
        match self.store(t)?.get_sso_active(t.tenant).await? {
            Some(active) => opened(t, &active).map(Some),
            None => Ok(None),
        }
    }

    /// Records how the test sign-in against the draft whose digest was `digest` ended;
    /// refused with [`SsoAdminError::StaleTest`] when the draft changed since. Audited as
    /// `sso.test` (result, roles and error; not the claims, which are personal data).
    pub async fn record_test(
        &self,
        t: &TenantSso<'_>,
        digest: &str,
        outcome: TestOutcome,
        actor: &Actor,
        now: i64,
    ) -> Result<TestView, SsoAdminError> {
        if t.policy.is_some() {
            return Err(SsoAdminError::ManagedByPolicy);
        }
        let test = match outcome {
            TestOutcome::Passed { claims, roles } => SsoTest::Passed {
                claims,
                roles,
                at: now,
                draft_digest: digest.to_string(),
            },
            TestOutcome::Failed { error } => SsoTest::Failed {
                error,
                at: now,
                draft_digest: digest.to_string(),
            },
        };
        let store = self.store(t)?;
        if !store.record_sso_test(t.tenant, &test).await? {
            return Err(SsoAdminError::StaleTest);
        }
        let view = TestView::of(&test, digest);
        let after = serde_json::json!({
            "passed": view.passed,
            "roles": view.roles,
            "error": view.error,
        });
        let entry = AuditEntry {
            target: format!("tenant:{}", t.tenant),
            tenant: Some(t.tenant.to_string()),
            tier: t.tier.to_string(),
            after: crate::audit::redact(&after),
            ..AuditEntry::by(actor, "sso.test", now)
        };
        store.append_audit(&entry).await?;
        Ok(view)
    }

    /// Makes the draft the active version, only with a passing test of exactly its
    /// current settings ([`SsoAdminError::NotTested`] otherwise); audited as `sso.activate`.
    pub async fn activate(&self, t: &TenantSso<'_>, actor: &Actor, now: i64) -> Result<VersionView, SsoAdminError> {
        if t.policy.is_some() {
            return Err(SsoAdminError::ManagedByPolicy);
        }
        let store = self.store(t)?;
        let before = store.get_sso_active(t.tenant).await?;
        let active = match store.activate_sso(t.tenant).await? {
            SsoActivation::Activated(v) => *v,
            SsoActivation::NoDraft => return Err(SsoAdminError::NoDraft),
            SsoActivation::NotTested => return Err(SsoAdminError::NotTested),
        };
        let view = VersionView::of(&active);
        audit(
            &*store,
            t,
            actor,
            "sso.activate",
            before.as_ref().map(VersionView::of),
            Some(view.clone()),
            now,
        )
        .await?;
        Ok(view)
    }

    /// Restores the version that was active before the current one; audited as
    /// `sso.rollback`.
    pub async fn rollback(&self, t: &TenantSso<'_>, actor: &Actor, now: i64) -> Result<VersionView, SsoAdminError> {
        if t.policy.is_some() {
            return Err(SsoAdminError::ManagedByPolicy);
        }
        let store = self.store(t)?;
        let before = store.get_sso_active(t.tenant).await?;
        let restored = match store.rollback_sso(t.tenant).await? {
            SsoRollback::RolledBack(v) => *v,
            SsoRollback::NothingToRestore => return Err(SsoAdminError::NothingToRollBack),
        };
        let view = VersionView::of(&restored);
        audit(
            &*store,
            t,
            actor,
            "sso.rollback",
            before.as_ref().map(VersionView::of),
            Some(view.clone()),
            now,
        )
        .await?;
        Ok(view)
    }

    /// Fresh discovery of `issuer` with the tier's rules, plus what the gateway's
    /// sign-in needs of the IdP (code flow, PKCE S256).
    async fn discover(&self, issuer: &str, production: bool) -> Result<Arc<Provider>, SsoAdminError> {
        let provider = self.oidc.discover(issuer, production).await.map_err(|e| match e {
            DiscoveryError::Address(why) => SsoAdminError::AddressNotAllowed(why),
            DiscoveryError::Unreachable(why) => SsoAdminError::Unreachable(why),
            DiscoveryError::Invalid => SsoAdminError::InvalidDiscovery,
            DiscoveryError::IssuerMismatch => SsoAdminError::IssuerMismatch(issuer.to_string()),
        })?;
        if !provider.response_types_supported.iter().any(|r| r == "code") {
            return Err(SsoAdminError::NoCodeFlow);
        }
        if !provider.code_challenge_methods_supported.iter().any(|m| m == "S256") {
            return Err(SsoAdminError::NoPkceS256);
        }
        Ok(provider)
    }
}

/// The settings of an input that pass their rules, normalised.
struct CheckedInput {
    scopes: Vec<String>,
    mfa: SsoMfa,
}

/// The rules on a draft that need no I/O (the first problem is reported): callers run
/// them before spending a tenant's discovery budget on a draft that cannot be saved.
pub fn check_draft(input: &DraftInput, production: bool) -> Result<(), SsoAdminError> {
    check_input(input, production).map(|_| ())
}

/// Every rule on the input that needs no I/O; the first problem is reported.
fn check_input(input: &DraftInput, production: bool) -> Result<CheckedInput, SsoAdminError> {
    check_issuer(&input.issuer, production)?;
    if !plain_text(&input.client_id) {
        return Err(SsoAdminError::ClientId);
    }
    if let Some(secret) = &input.client_secret {
        let ok = std::str::from_utf8(secret.expose_secret()).is_ok_and(|s| s.is_empty() || plain_text(s));
        if !ok {
            return Err(SsoAdminError::SecretSyntax);
        }
    }
    let scopes = match &input.scopes {
        None => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        Some(scopes) => {
            let token = |s: &String| {
                !s.is_empty()
                    && s.len() <= FIELD_MAX_CHARS
                    && s.bytes()
                        .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            };
            if scopes.is_empty() || scopes.len() > SCOPES_MAX || !scopes.iter().all(token) {
                return Err(SsoAdminError::Scopes);
            }
            scopes.clone()
        }
    };
    if input.roles_claim.as_deref().is_some_and(|c| !plain_text(c)) {
        return Err(SsoAdminError::RolesClaim);
    }
    if let Some(group) = &input.admin_group {
        let role = !group.is_empty()
            && group.chars().count() <= ROLE_MAX_CHARS
            && !group.contains(',')
            && !group.chars().any(char::is_control);
        if !role || input.roles_claim.is_none() {
            return Err(SsoAdminError::AdminGroup);
        }
    }
    let mfa = match input.mfa.as_deref() {
        None => SsoMfa::Required,
        Some(name) => SsoMfa::parse(name).ok_or(SsoAdminError::Mfa)?,
    };
    for name in &input.break_glass {
        crate::account::check_local_name(name)?;
    }
    Ok(CheckedInput { scopes, mfa })
}

/// 1 to [`FIELD_MAX_CHARS`] characters, none of them a control character.
fn plain_text(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= FIELD_MAX_CHARS && !s.chars().any(char::is_control)
}

/// The issuer must be an absolute https URL (http outside production) with a host and
/// without query or fragment (OpenID Connect Discovery 1.0, section 3).
pub fn check_issuer(issuer: &str, production: bool) -> Result<(), SsoAdminError> {
    let bad = SsoAdminError::IssuerSyntax { production };
    if !plain_text(issuer) || issuer.contains(['?', '#']) {
        return Err(bad);
    }
    let uri: http::Uri = issuer.parse().map_err(|_| SsoAdminError::IssuerSyntax { production })?;
    let scheme_ok = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => !production,
        _ => false,
    };
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(bad);
    }
    Ok(())
}

fn mfa_name(m: MfaPolicy) -> &'static str {
    match m {
        MfaPolicy::Required => "required",
        MfaPolicy::Gateway => "gateway",
        MfaPolicy::Idp => "idp",
    }
}

fn mfa_policy(m: SsoMfa) -> MfaPolicy {
    match m {
        SsoMfa::Required => MfaPolicy::Required,
        SsoMfa::Gateway => MfaPolicy::Gateway,
        SsoMfa::Idp => MfaPolicy::Idp,
    }
}

/// `v` with its secret opened for `t`.
fn opened(t: &TenantSso<'_>, v: &SsoVersion) -> Result<OpenedSso, SsoAdminError> {
    let client_secret = SecretSealer::new(t.tier, t.cookie_key)?.open(t.tenant, &v.client_secret)?;
    Ok(OpenedSso {
        version: v.version,
        digest: v.digest(),
        issuer: v.issuer.clone(),
        client_id: v.client_id.clone(),
        client_secret,
        scopes: v.scopes.clone(),
        roles_claim: v.roles_claim.clone(),
        admin_group: v.admin_group.clone(),
        mfa: mfa_policy(v.mfa),
        enforce: v.enforce,
        break_glass: v.break_glass.clone(),
    })
}

/// Appends one `sso.*` record for the tenant; views never hold the secret, and
/// [`crate::audit::redact`] runs over them all the same.
async fn audit(
    store: &dyn TierStore,
    t: &TenantSso<'_>,
    actor: &Actor,
    action: &str,
    before: Option<VersionView>,
    after: Option<VersionView>,
    now: i64,
) -> Result<(), SsoAdminError> {
    // The test's claims are personal data of whoever signed in: not for the audit log.
    let json = |v: Option<VersionView>| {
        let v = v.map(|v| VersionView { test: None, ..v });
        serde_json::to_value(v).unwrap_or(Value::Null)
    };
    let entry = AuditEntry {
        target: format!("tenant:{}", t.tenant),
        tenant: Some(t.tenant.to_string()),
        tier: t.tier.to_string(),
        before: crate::audit::redact(&json(before)),
        after: crate::audit::redact(&json(after)),
        ..AuditEntry::by(actor, action, now)
    };
    store.append_audit(&entry).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
