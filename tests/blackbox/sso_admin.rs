//! The SSO wizard's service (`auth::sso_admin`, library code with no HTTP of its own yet)
//! against the real `oidc-provider` of [`crate::idp`]: a draft naming the real IdP passes
//! discovery (code flow, PKCE S256 advertised), and a test sign-in run with the draft's
//! opened settings (authorization request, login at the IdP, code exchange with the
//! sealed-then-opened secret, ID token checks) records a passing test that allows
//! activation. The wizard's pages and API will drive the same calls.

use std::sync::Arc;

use portcullis::audit::Actor;
use portcullis::auth::oidc;
use portcullis::auth::oidc_client::OidcClient;
use portcullis::auth::sso_admin::{DraftInput, SsoAdmin, SsoAdminError, TenantSso, TestOutcome, mapped_roles};
use portcullis::secret::SecretBytes;
use portcullis::session::Sessions;
use portcullis::store::Stores;

use crate::idp::{Account, Idp, IdpClient};

const ORIGIN: &str = "http://acme.test:9";

fn admin_actor() -> Actor {
    Actor {
        name: "user:alice".into(),
        source_ip: "192.0.2.1".into(),
        system: "api".into(),
    }
}

/// If this failed, the wizard would refuse a standard provider, or a draft that signs in
/// at the real IdP could not be activated.
#[tokio::test]
async fn a_draft_of_a_real_idp_is_tested_by_signing_in_and_activated() {
    let mut idp = Idp::bind(&[Account::new("alice", "alice-pw").groups(&["acme-admins"])]);
    let redirect_uri = format!("{ORIGIN}/.portcullis/callback");
    idp.register(&[IdpClient::new("gw", "gw-secret", &redirect_uri)]);

    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(&format!("sqlite:{}", dir.path().display()), ["staging"])
        .await
        .unwrap();
    let sessions = Sessions::new(stores);
    let oidc_client = Arc::new(OidcClient::new());
    let admin = SsoAdmin::new(sessions, oidc_client.clone());
    let key = SecretBytes::new(vec![3; 32]);
    let t = TenantSso {
        tenant: "acme",
        tier: "staging",
        production: false,
        cookie_key: &key,
        origin: ORIGIN,
        policy: None,
    };
    let input = DraftInput {
        issuer: idp.issuer(),
        client_id: "gw".into(),
        client_secret: Some(SecretBytes::new(b"gw-secret".to_vec())),
        scopes: Some(vec!["openid".into(), "profile".into()]),
        roles_claim: Some("groups".into()),
        admin_group: Some("acme-admins".into()),
        ..DraftInput::default()
    };
    let saved = admin
        .save_draft(&t, input, &admin_actor(), 1)
        .await
        .unwrap_or_else(|e| {
            panic!("{e}\n{}", idp.logs());
        });
    assert_eq!(saved.redirect_uri, redirect_uri);
    assert_eq!(saved.discovery.issuer, idp.issuer());

    // The test sign-in, as the wizard's "Test sign-in" will run it.
    let draft = admin.draft_for_test(&t).await.unwrap();
    let provider = oidc_client.provider(&draft.issuer, false).await.unwrap();
    let (state, nonce, pkce) = (oidc::random_value(), oidc::random_value(), oidc::Pkce::new());
    let url = oidc::authorize_url(&oidc::AuthorizeRequest {
        authorization_endpoint: &provider.authorization_endpoint,
        client_id: &draft.client_id,
        redirect_uri: &redirect_uri,
        scopes: &draft.scopes,
        state: &state,
        nonce: &nonce,
        code_challenge: &pkce.challenge,
    });
    let back = idp.login(&url, "alice", "alice-pw").await.unwrap();
    let back = reqwest::Url::parse(&back).unwrap();
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no code in {back}\n{}", idp.logs()));
    let id_token = oidc_client
        .exchange(
            &provider,
            &draft.client_id,
            draft.client_secret.expose_secret(),
            &code,
            &redirect_uri,
            &pkce.verifier,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", idp.logs()))
        .id_token;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = oidc_client
        .validate_with_keys(&provider, |jwks| {
            oidc::validate_id_token(
                &id_token,
                jwks,
                &provider.issuer,
                &draft.client_id,
                &nonce,
                draft.roles_claim.as_deref(),
                now,
            )
        })
        .await
        .unwrap();
    assert_eq!(claims.sub, "alice");
    let outcome = TestOutcome::Passed {
        roles: mapped_roles(draft.admin_group.as_deref(), &claims.roles),
        claims: claims.raw,
    };
    let shown = admin
        .record_test(&t, &draft.digest, outcome, &admin_actor(), 2)
        .await
        .unwrap();
    assert!(shown.passed);
    assert_eq!(shown.roles, ["acme-admins", "tenant-admin"]);

    let active = admin.activate(&t, &admin_actor(), 3).await.unwrap();
    assert_eq!((active.version, active.state), (1, "active"));
    let live = admin.active_for_sign_in(&t).await.unwrap().unwrap();
    assert_eq!(live.client_secret.expose_secret(), b"gw-secret");
    // With no other version, there is nothing to roll back to.
    assert!(matches!(
        admin.rollback(&t, &admin_actor(), 4).await,
        Err(SsoAdminError::NothingToRollBack)
    ));
}
