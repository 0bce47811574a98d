//! Policy reloads: SIGHUP and `POST /v1/reload` apply a valid policy atomically and
//! refuse a broken one while the old policy keeps serving (SPEC "Provisioning ..." and
//! "Operator console").

use std::time::Duration;

use crate::harness::*;

const SECRET_AUTHENTICATED: &str = "[[routes]]\nprefix = \"/secret/\"\naccess = \"authenticated\"\n\n";
const SECRET_PUBLIC: &str = "[[routes]]\nprefix = \"/secret/\"\naccess = \"public\"\n\n";

async fn status_of(gw: &Gateway, path: &str) -> u16 {
    raw_get(gw.public, "acme.test", path).await.status
}

/// SIGHUP applies a changed route; a broken policy is refused with file:line in
/// `/readyz` and the previous policy keeps serving. If reloads broke, operators could not
/// change policy without a restart, or a typo would take every tenant down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_policy_and_refuses_a_broken_one() {
    let ups = Upstreams::start().await;
    let mut fixture = PolicyFixture::for_upstreams(&ups);
    fixture.tenant_mut("acme").routes = format!("{SECRET_AUTHENTICATED}{DEFAULT_ROUTES}");
    let gw = Gateway::start(&fixture).await;
    assert_eq!(status_of(&gw, "/secret/x").await, 401);
    let digest_before = gw.readyz().await["policy"]["digest"].clone();

    // Make /secret/ public and reload.
    fixture.tenant_mut("acme").routes = format!("{SECRET_PUBLIC}{DEFAULT_ROUTES}");
    let acme_path = gw.policy_dir.join("tenants/acme.toml");
    std::fs::write(&acme_path, PolicyFixture::tenant_toml(&fixture.tenants[0])).unwrap();
    gw.signal("HUP");
    let applied = eventually(Duration::from_secs(10), || async {
        (status_of(&gw, "/secret/x").await == 200).then_some(())
    })
    .await;
    assert!(applied.is_some(), "the new route did not apply after SIGHUP");
    assert_eq!(ups.acme.requests().last().unwrap().target, "/secret/x");
    let ready = gw.readyz().await;
    assert_eq!(ready["policy"]["last_reload"]["ok"], true, "{ready}");
    assert_ne!(ready["policy"]["digest"], digest_before);
    let digest_good = ready["policy"]["digest"].clone();

    // A broken policy: unknown key at a known line.
    let good = std::fs::read_to_string(&acme_path).unwrap();
    let broken = good.replace("tier = \"prod\"\n", "tier = \"prod\"\nbogus_key = 1\n");
    let bad_line = line_of(&broken, "bogus_key");
    std::fs::write(&acme_path, &broken).unwrap();
    gw.signal("HUP");
    let ready = eventually(Duration::from_secs(10), || async {
        let r = gw.readyz().await;
        (r["policy"]["last_reload"]["ok"] == false).then_some(r)
    })
    .await
    .expect("/readyz never reported the failed reload");
    let errors: Vec<String> = ready["policy"]["last_reload"]["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    let want = format!("acme.toml:{bad_line}:");
    assert!(
        errors.iter().any(|e| e.contains(&want) && e.contains("bogus_key")),
        "expected `{want}` in {errors:?}"
    );
    assert_eq!(
        ready["policy"]["digest"], digest_good,
        "a refused reload changed the serving digest"
    );
    assert_eq!(ready["ready"], true);
    // Old (reloaded) policy still serves.
    assert_eq!(status_of(&gw, "/secret/y").await, 200);
    assert_eq!(status_of(&gw, "/admin/y").await, 401);
}

/// `POST /v1/reload` needs an operator token; with one it reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_api_requires_an_operator_token() {
    let token = random_hex(24);
    let ups = Upstreams::start().await;
    let mut fixture = PolicyFixture::for_upstreams(&ups);
    fixture.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))];
    let gw = Gateway::start(&fixture).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = gw.admin_url("/v1/reload");

    let r = c.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(&url).bearer_auth("not-the-token").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "only a Bearer token counts");
    let ready = gw.readyz().await;
    assert!(
        ready["policy"]["last_reload"].is_null(),
        "an unauthenticated call reloaded: {ready}"
    );

    // Change a route, then reload with the token.
    assert_eq!(status_of(&gw, "/secret/x").await, 401);
    fixture.tenant_mut("acme").routes = format!("{SECRET_PUBLIC}{DEFAULT_ROUTES}");
    std::fs::write(
        gw.policy_dir.join("tenants/acme.toml"),
        PolicyFixture::tenant_toml(&fixture.tenants[0]),
    )
    .unwrap();
    let r = c.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "applied", "{body}");
    assert_eq!(
        status_of(&gw, "/secret/x").await,
        200,
        "the reloaded route is not in force after 200"
    );
    let ready = gw.readyz().await;
    assert_eq!(ready["policy"]["last_reload"]["ok"], true);
    assert!(
        ready["policy"]["last_reload"]["trigger"]
            .as_str()
            .unwrap_or_default()
            .contains("olivia"),
        "{ready}"
    );
}

/// SPEC "Tiers and isolation": an operator token of one tier is refused on another. If a
/// reload through the API were not limited to the caller's tiers, a staging operator
/// could put an unreviewed or half-edited prod policy in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_needs_an_operator_of_every_tier_it_changes() {
    let (prod_token, staging_token) = (random_hex(24), random_hex(24));
    let ups = Upstreams::start().await;
    let mut fixture = PolicyFixture::for_upstreams(&ups);
    fixture.prod_operators = vec![("olivia".into(), sha256_hex(prod_token.as_bytes()))];
    fixture.staging_operators = vec![("sam".into(), sha256_hex(staging_token.as_bytes()))];
    let gw = Gateway::start(&fixture).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = gw.admin_url("/v1/reload");
    let digest_before = gw.readyz().await["policy"]["digest"].clone();

    // A prod change, reloaded by the staging operator: refused, nothing applied.
    assert_eq!(status_of(&gw, "/secret/x").await, 401);
    fixture.tenant_mut("acme").routes = format!("{SECRET_PUBLIC}{DEFAULT_ROUTES}");
    std::fs::write(
        gw.policy_dir.join("tenants/acme.toml"),
        PolicyFixture::tenant_toml(&fixture.tenants[0]),
    )
    .unwrap();
    let r = c.post(&url).bearer_auth(&staging_token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body.to_string().contains("prod"), "the refusal names the tier: {body}");
    assert_eq!(status_of(&gw, "/secret/x").await, 401, "the prod change applied");
    assert_eq!(gw.readyz().await["policy"]["digest"], digest_before);

    // The prod operator may: applied, and in prod's audit log.
    let r = c.post(&url).bearer_auth(&prod_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status_of(&gw, "/secret/x").await, 200);
    let r = c
        .get(gw.admin_url("/v1/audit?action=policy.reload"))
        .bearer_auth(&prod_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let records: serde_json::Value = r.json().await.unwrap();
    let records = records.as_array().expect("audit array");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["actor"], "operator:olivia");
    assert_eq!(records[0]["tier"], "prod");
    // Staging did not change: nothing in its log.
    let r = c
        .get(gw.admin_url("/v1/audit?action=policy.reload"))
        .bearer_auth(&staging_token)
        .send()
        .await
        .unwrap();
    let records: serde_json::Value = r.json().await.unwrap();
    assert_eq!(records.as_array().map(Vec::len), Some(0), "{records}");

    // A staging-only change is the staging operator's to reload.
    fixture.tenant_mut("initech").routes = format!("{SECRET_PUBLIC}{DEFAULT_ROUTES}");
    std::fs::write(
        gw.policy_dir.join("tenants/initech.toml"),
        PolicyFixture::tenant_toml(fixture.tenant_mut("initech")),
    )
    .unwrap();
    let r = c.post(&url).bearer_auth(&staging_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(raw_get(gw.public, "initech.test", "/secret/x").await.status, 200);
}
