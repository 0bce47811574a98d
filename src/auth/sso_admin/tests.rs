//! Tests of the wizard's state machine over a real SQLite store, with discovery against a
//! local HTTP server that serves named discovery documents: a well-behaved IdP and the
//! faults a real provider never serves on purpose (another issuer, no PKCE S256, no code
//! flow, not a discovery document).
// Test-only module: its parent declares it under #[cfg(test)], so unwrap/expect are fine here.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;
use crate::store::Stores;

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "client-secret-Zq81";

/// Serves `/<name>/.well-known/openid-configuration` for the issuer
/// `http://<addr>/<name>`: `good` is correct; `wrong-issuer`, `no-pkce`, `no-code` and
/// `garbage` each break one rule.
async fn discovery_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                let name = req
                    .uri()
                    .path()
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                let base = format!("http://{addr}/{name}");
                let mut doc = serde_json::json!({
                    "issuer": base,
                    "authorization_endpoint": format!("{base}/auth"),
                    "token_endpoint": format!("{base}/token"),
                    "jwks_uri": format!("{base}/jwks"),
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                });
                match name.as_str() {
                    "wrong-issuer" => doc["issuer"] = serde_json::json!(format!("http://{addr}/elsewhere")),
                    "no-pkce" => doc["code_challenge_methods_supported"] = serde_json::json!(["plain"]),
                    "no-code" => doc["response_types_supported"] = serde_json::json!(["id_token"]),
                    _ => {}
                }
                let body = if name == "garbage" {
                    "<html>not json</html>".to_string()
                } else {
                    doc.to_string()
                };
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

struct Fixture {
    _dir: tempfile::TempDir,
    admin: SsoAdmin,
    sessions: Arc<Sessions>,
    idp: SocketAddr,
    key: SecretBytes,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(&format!("sqlite:{}", dir.path().display()), ["staging"])
            .await
            .unwrap();
        let sessions = Sessions::new(stores);
        let admin = SsoAdmin::new(sessions.clone(), Arc::new(OidcClient::new()));
        Fixture {
            _dir: dir,
            admin,
            sessions,
            idp: discovery_server().await,
            key: SecretBytes::new(vec![7; 32]),
        }
    }

    fn tenant(&self) -> TenantSso<'_> {
        TenantSso {
            tenant: "acme",
            tier: "staging",
            production: false,
            cookie_key: &self.key,
            origin: "https://acme.example:8443",
            policy: None,
        }
    }

    fn issuer(&self, name: &str) -> String {
        format!("http://{}/{name}", self.idp)
    }

    fn input(&self, name: &str, secret: Option<&str>) -> DraftInput {
        DraftInput {
            issuer: self.issuer(name),
            client_id: "gateway".into(),
            client_secret: secret.map(|s| SecretBytes::new(s.as_bytes().to_vec())),
            roles_claim: Some("groups".into()),
            admin_group: Some("acme-admins".into()),
            ..DraftInput::default()
        }
    }

    async fn audit_actions(&self) -> Vec<String> {
        let store = self.sessions.store("staging").unwrap();
        store
            .audit_records(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.entry.action)
            .collect()
    }

    /// Saves a good draft and records a passing test of it.
    async fn tested_draft(&self, secret: Option<&str>) -> OpenedSso {
        let t = self.tenant();
        self.admin
            .save_draft(&t, self.input("good", secret), &alice(), NOW)
            .await
            .unwrap();
        let draft = self.admin.draft_for_test(&t).await.unwrap();
        self.admin
            .record_test(&t, &draft.digest, passed(), &alice(), NOW + 1)
            .await
            .unwrap();
        draft
    }
}

fn alice() -> Actor {
    Actor {
        name: "user:alice".into(),
        source_ip: "192.0.2.1".into(),
        system: "api".into(),
    }
}

fn passed() -> TestOutcome {
    TestOutcome::Passed {
        claims: serde_json::Map::from_iter([
            ("sub".to_string(), serde_json::json!("alice")),
            ("groups".to_string(), serde_json::json!(["acme-admins"])),
        ]),
        roles: mapped_roles(Some("acme-admins"), &["acme-admins".to_string()]),
    }
}

#[tokio::test]
async fn a_draft_is_discovered_sealed_and_shown_without_its_secret() {
    let f = Fixture::new().await;
    let t = f.tenant();
    let saved = f
        .admin
        .save_draft(&t, f.input("good", Some(SECRET)), &alice(), NOW)
        .await
        .unwrap();
    assert_eq!(saved.status, "draft");
    assert_eq!(saved.redirect_uri, "https://acme.example:8443/.portcullis/callback");
    assert_eq!(
        saved.backchannel_logout_uri,
        "https://acme.example:8443/.portcullis/backchannel-logout"
    );
    assert_eq!(saved.discovery.issuer, f.issuer("good"));
    assert_eq!(saved.discovery.token_endpoint, format!("{}/token", f.issuer("good")));
    assert_eq!(saved.draft.scopes, DEFAULT_SCOPES.map(String::from).to_vec());
    assert!(saved.draft.client_secret_set);
    // Sealed at rest: the stored record never holds the plaintext.
    let store = f.sessions.store("staging").unwrap();
    let stored = store.get_sso_draft("acme").await.unwrap().unwrap();
    let json = serde_json::to_string(&stored).unwrap();
    assert!(!json.contains(SECRET), "{json}");
    // Opened for the sign-in, it is the secret entered.
    let opened = f.admin.draft_for_test(&t).await.unwrap();
    assert_eq!(opened.client_secret.expose_secret(), SECRET.as_bytes());
    assert_eq!(opened.digest, stored.digest());
    // The view, the audit log and every Debug leave it out.
    let view = f.admin.view(&t).await.unwrap();
    assert_eq!(view.status, "draft");
    let shown = format!(
        "{} {:?} {opened:?} {:?}",
        serde_json::to_string(&view).unwrap(),
        view,
        f.input("good", Some(SECRET))
    );
    assert!(!shown.contains(SECRET), "{shown}");
    let audit = store.audit_records(0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].entry.action, "sso.update");
    assert_eq!(audit[0].entry.target, "tenant:acme");
    assert!(!serde_json::to_string(&audit).unwrap().contains(SECRET));
}

/// If one of these broke, the wizard would save settings the sign-in cannot work with,
/// or tell the admin the wrong problem.
#[tokio::test]
async fn discovery_problems_each_have_their_own_error_and_save_nothing() {
    let f = Fixture::new().await;
    let t = f.tenant();
    let actor = alice();
    let save = |name: &str| f.admin.save_draft(&t, f.input(name, Some(SECRET)), &actor, NOW);
    assert!(matches!(
        save("wrong-issuer").await,
        Err(SsoAdminError::IssuerMismatch(_))
    ));
    assert!(matches!(save("no-pkce").await, Err(SsoAdminError::NoPkceS256)));
    assert!(matches!(save("no-code").await, Err(SsoAdminError::NoCodeFlow)));
    assert!(matches!(save("garbage").await, Err(SsoAdminError::InvalidDiscovery)));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut unreachable = f.input("good", Some(SECRET));
    unreachable.issuer = format!("http://{closed}/gone");
    let err = f.admin.save_draft(&t, unreachable, &alice(), NOW).await.unwrap_err();
    assert!(matches!(err, SsoAdminError::Unreachable(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "discovery failed: the identity provider cannot be reached"
    );
    // A production tier refuses loopback before connecting, and http outright.
    let prod = TenantSso { production: true, ..t };
    let mut loopback = f.input("good", Some(SECRET));
    loopback.issuer = format!("https://{}/good", f.idp);
    let err = f.admin.save_draft(&prod, loopback, &alice(), NOW).await.unwrap_err();
    assert!(matches!(err, SsoAdminError::AddressNotAllowed(_)), "{err}");
    assert!(matches!(
        f.admin
            .save_draft(&prod, f.input("good", Some(SECRET)), &alice(), NOW)
            .await,
        Err(SsoAdminError::IssuerSyntax { production: true })
    ));
    assert!(f.admin.view(&t).await.unwrap().versions.is_empty());
    assert!(f.audit_actions().await.is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_before_any_connection() {
    let f = Fixture::new().await;
    let t = f.tenant();
    type Case = (Box<dyn Fn(&mut DraftInput)>, fn(&SsoAdminError) -> bool);
    let cases: Vec<Case> = vec![
        (Box::new(|i| i.issuer = "idp.example".into()), |e| {
            matches!(e, SsoAdminError::IssuerSyntax { .. })
        }),
        (Box::new(|i| i.issuer = "ftp://idp.example".into()), |e| {
            matches!(e, SsoAdminError::IssuerSyntax { .. })
        }),
        (Box::new(|i| i.issuer.push_str("?x=1")), |e| {
            matches!(e, SsoAdminError::IssuerSyntax { .. })
        }),
        (Box::new(|i| i.client_id = String::new()), |e| {
            matches!(e, SsoAdminError::ClientId)
        }),
        (Box::new(|i| i.client_id = "a\nb".into()), |e| {
            matches!(e, SsoAdminError::ClientId)
        }),
        (Box::new(|i| i.scopes = Some(vec![])), |e| {
            matches!(e, SsoAdminError::Scopes)
        }),
        (Box::new(|i| i.scopes = Some(vec!["open id".into()])), |e| {
            matches!(e, SsoAdminError::Scopes)
        }),
        (Box::new(|i| i.roles_claim = Some(String::new())), |e| {
            matches!(e, SsoAdminError::RolesClaim)
        }),
        (Box::new(|i| i.admin_group = Some("a,b".into())), |e| {
            matches!(e, SsoAdminError::AdminGroup)
        }),
        (Box::new(|i| i.roles_claim = None), |e| {
            matches!(e, SsoAdminError::AdminGroup)
        }),
        (Box::new(|i| i.mfa = Some("sometimes".into())), |e| {
            matches!(e, SsoAdminError::Mfa)
        }),
        (Box::new(|i| i.break_glass = vec!["a|b".into()]), |e| {
            matches!(e, SsoAdminError::BreakGlass(_))
        }),
        (
            Box::new(|i| i.client_secret = Some(SecretBytes::new(b"a\nb".to_vec()))),
            |e| matches!(e, SsoAdminError::SecretSyntax),
        ),
        // The first draft needs a secret.
        (Box::new(|i| i.client_secret = None), |e| {
            matches!(e, SsoAdminError::SecretRequired)
        }),
    ];
    for (i, (edit, expected)) in cases.iter().enumerate() {
        let mut input = f.input("good", Some(SECRET));
        edit(&mut input);
        let err = f.admin.save_draft(&t, input, &alice(), NOW).await.unwrap_err();
        assert!(expected(&err), "case {i}: {err}");
        assert!(!err.to_string().contains(SECRET));
    }
    assert!(f.admin.view(&t).await.unwrap().versions.is_empty());
}

/// If this broke, an admin changing the scopes would have to paste the secret again, or
/// (worse) an omitted secret would be stored as empty.
#[tokio::test]
async fn an_omitted_secret_is_kept_from_the_draft_or_the_active_version() {
    let f = Fixture::new().await;
    let t = f.tenant();
    f.admin
        .save_draft(&t, f.input("good", Some(SECRET)), &alice(), NOW)
        .await
        .unwrap();
    let mut edit = f.input("good", None);
    edit.scopes = Some(vec!["openid".into()]);
    f.admin.save_draft(&t, edit, &alice(), NOW).await.unwrap();
    assert_eq!(
        f.admin.draft_for_test(&t).await.unwrap().client_secret.expose_secret(),
        SECRET.as_bytes()
    );
    let d = f.admin.draft_for_test(&t).await.unwrap();
    f.admin
        .record_test(&t, &d.digest, passed(), &alice(), NOW)
        .await
        .unwrap();
    f.admin.activate(&t, &alice(), NOW).await.unwrap();
    // No draft now: the next one takes the active version's secret; an empty one too.
    f.admin
        .save_draft(&t, f.input("good", Some("")), &alice(), NOW)
        .await
        .unwrap();
    assert_eq!(
        f.admin.draft_for_test(&t).await.unwrap().client_secret.expose_secret(),
        SECRET.as_bytes()
    );
    f.admin
        .save_draft(&t, f.input("good", Some("rotated")), &alice(), NOW)
        .await
        .unwrap();
    assert_eq!(
        f.admin.draft_for_test(&t).await.unwrap().client_secret.expose_secret(),
        b"rotated"
    );
}

#[tokio::test]
async fn activation_needs_a_passing_test_of_the_current_draft() {
    let f = Fixture::new().await;
    let t = f.tenant();
    assert!(matches!(
        f.admin.activate(&t, &alice(), NOW).await,
        Err(SsoAdminError::NoDraft)
    ));
    f.admin
        .save_draft(&t, f.input("good", Some(SECRET)), &alice(), NOW)
        .await
        .unwrap();
    let err = f.admin.activate(&t, &alice(), NOW).await.unwrap_err();
    assert!(matches!(err, SsoAdminError::NotTested) && err.is_conflict(), "{err}");
    // A failed test shows under "test" and does not allow activation.
    let d = f.admin.draft_for_test(&t).await.unwrap();
    let failed = TestOutcome::Failed {
        error: "the token was not issued for this gateway".into(),
    };
    f.admin.record_test(&t, &d.digest, failed, &alice(), NOW).await.unwrap();
    let view = f.admin.view(&t).await.unwrap();
    let test = view.test.unwrap();
    assert!(!test.passed);
    assert_eq!(test.error.as_deref(), Some("the token was not issued for this gateway"));
    assert!(matches!(
        f.admin.activate(&t, &alice(), NOW).await,
        Err(SsoAdminError::NotTested)
    ));
    // A pass, then an edit: the edit cleared the test, and the late result of the old
    // draft is refused.
    f.admin
        .record_test(&t, &d.digest, passed(), &alice(), NOW)
        .await
        .unwrap();
    assert!(f.admin.view(&t).await.unwrap().test.unwrap().passed);
    let mut edit = f.input("good", None);
    edit.mfa = Some("idp".into());
    f.admin.save_draft(&t, edit, &alice(), NOW).await.unwrap();
    assert_eq!(f.admin.view(&t).await.unwrap().test, None);
    assert!(matches!(
        f.admin.record_test(&t, &d.digest, passed(), &alice(), NOW).await,
        Err(SsoAdminError::StaleTest)
    ));
    assert!(matches!(
        f.admin.activate(&t, &alice(), NOW).await,
        Err(SsoAdminError::NotTested)
    ));
    // Tested as it is now: activated, with the roles the test showed.
    let d2 = f.admin.draft_for_test(&t).await.unwrap();
    let shown = f
        .admin
        .record_test(&t, &d2.digest, passed(), &alice(), NOW)
        .await
        .unwrap();
    assert_eq!(shown.roles, vec!["acme-admins".to_string(), "tenant-admin".to_string()]);
    let active = f.admin.activate(&t, &alice(), NOW + 5).await.unwrap();
    assert_eq!((active.version, active.state, active.mfa), (1, "active", "idp"));
    let view = f.admin.view(&t).await.unwrap();
    assert_eq!((view.status, view.draft.is_none()), ("active", true));
    let live = f.admin.active_for_sign_in(&t).await.unwrap().unwrap();
    assert_eq!(
        (live.mfa, live.client_secret.expose_secret()),
        (MfaPolicy::Idp, SECRET.as_bytes())
    );
    let config = live.into_sso_config();
    assert_eq!(
        (
            config.issuer.as_str(),
            config.client_id.as_str(),
            config.roles_claim.as_deref()
        ),
        (f.issuer("good").as_str(), "gateway", Some("groups"))
    );
    assert_eq!(
        (config.mfa, config.client_secret.expose_secret()),
        (MfaPolicy::Idp, SECRET.as_bytes())
    );
    assert_eq!(
        f.audit_actions().await,
        [
            "sso.update",
            "sso.test",
            "sso.test",
            "sso.update",
            "sso.test",
            "sso.activate"
        ]
    );
    // The audit log keeps the result, never the claims (personal data).
    let records = f
        .sessions
        .store("staging")
        .unwrap()
        .audit_records(0, 100)
        .await
        .unwrap();
    assert!(!serde_json::to_string(&records).unwrap().contains("\"sub\""));
}

#[tokio::test]
async fn rollback_restores_the_version_active_before() {
    let f = Fixture::new().await;
    let t = f.tenant();
    assert!(matches!(
        f.admin.rollback(&t, &alice(), NOW).await,
        Err(SsoAdminError::NothingToRollBack)
    ));
    f.tested_draft(Some(SECRET)).await;
    f.admin.activate(&t, &alice(), NOW).await.unwrap();
    assert!(matches!(
        f.admin.rollback(&t, &alice(), NOW).await,
        Err(SsoAdminError::NothingToRollBack)
    ));
    f.tested_draft(Some("second-secret")).await;
    let second = f.admin.activate(&t, &alice(), NOW).await.unwrap();
    assert_eq!((second.version, second.replaced), (2, Some(1)));
    let restored = f.admin.rollback(&t, &alice(), NOW + 9).await.unwrap();
    assert_eq!((restored.version, restored.state), (1, "active"));
    let live = f.admin.active_for_sign_in(&t).await.unwrap().unwrap();
    assert_eq!(live.client_secret.expose_secret(), SECRET.as_bytes());
    let view = f.admin.view(&t).await.unwrap();
    let states: Vec<(u64, &str)> = view.versions.iter().map(|v| (v.version, v.state)).collect();
    assert_eq!(states, vec![(2, "superseded"), (1, "active")]);
    assert_eq!(f.audit_actions().await.last().map(String::as_str), Some("sso.rollback"));
}

/// If this broke, the wizard could overwrite what the operators manage in the policy files.
#[tokio::test]
async fn a_tenant_managed_by_the_policy_files_is_read_only() {
    let f = Fixture::new().await;
    let policy = SsoConfig {
        issuer: "https://idp.example".into(),
        client_id: "from-policy".into(),
        client_secret: SecretBytes::new(b"policy-secret".to_vec()),
        scopes: vec!["openid".into()],
        roles_claim: None,
        mfa: MfaPolicy::Gateway,
        enforce: true,
        break_glass: vec!["root".into()],
    };
    let t = TenantSso {
        policy: Some(&policy),
        ..f.tenant()
    };
    let err = f
        .admin
        .save_draft(&t, f.input("good", Some(SECRET)), &alice(), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, SsoAdminError::ManagedByPolicy) && err.is_conflict());
    assert!(matches!(
        f.admin.activate(&t, &alice(), NOW).await,
        Err(SsoAdminError::ManagedByPolicy)
    ));
    assert!(matches!(
        f.admin.rollback(&t, &alice(), NOW).await,
        Err(SsoAdminError::ManagedByPolicy)
    ));
    assert!(matches!(
        f.admin.record_test(&t, "x", passed(), &alice(), NOW).await,
        Err(SsoAdminError::ManagedByPolicy)
    ));
    assert!(f.admin.active_for_sign_in(&t).await.unwrap().is_none());
    let view = f.admin.view(&t).await.unwrap();
    assert_eq!(view.status, "policy");
    let shown = view.policy.unwrap();
    assert_eq!(
        (shown.client_id.as_str(), shown.mfa, shown.enforce),
        ("from-policy", "gateway", true)
    );
    assert!(
        !serde_json::to_string(&f.admin.view(&t).await.unwrap())
            .unwrap()
            .contains("policy-secret")
    );
    assert!(f.audit_actions().await.is_empty());
}

/// A secret sealed for one tenant does not open as another's, even in one store.
#[tokio::test]
async fn a_draft_moved_to_another_tenant_does_not_open() {
    let f = Fixture::new().await;
    f.admin
        .save_draft(&f.tenant(), f.input("good", Some(SECRET)), &alice(), NOW)
        .await
        .unwrap();
    let store = f.sessions.store("staging").unwrap();
    let mut moved = store.get_sso_draft("acme").await.unwrap().unwrap();
    moved.tenant = "globex".into();
    store.put_sso_draft(&moved).await.unwrap();
    let globex = TenantSso {
        tenant: "globex",
        ..f.tenant()
    };
    let err = f.admin.draft_for_test(&globex).await.unwrap_err();
    assert!(matches!(err, SsoAdminError::Seal(SealError::Open)), "{err}");
}

#[test]
fn the_admin_group_adds_tenant_admin_once() {
    let roles = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(mapped_roles(Some("ops"), &roles(&["dev"])), roles(&["dev"]));
    assert_eq!(
        mapped_roles(Some("ops"), &roles(&["ops"])),
        roles(&["ops", "tenant-admin"])
    );
    assert_eq!(mapped_roles(None, &roles(&["ops"])), roles(&["ops"]));
    assert_eq!(
        mapped_roles(Some("ops"), &roles(&["ops", "tenant-admin"])),
        roles(&["ops", "tenant-admin"])
    );
}
