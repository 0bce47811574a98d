//! Four-eyes change requests through the real binary (SPEC "Changes, audit, four eyes"):
//! a second, different operator of the owning tier approves the exact content (digest)
//! before an isolation change applies; applied changes edit the policy files and survive
//! restarts; invalid results, expired, rejected or other-tier requests change nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;

const PUBLIC: &str = "/public/ping";

/// A gateway whose prod tier has operators `olivia` (two tokens), `oscar` and `paula`,
/// and whose staging tier has `sven`.
struct Env {
    ups: Upstreams,
    gw: Gateway,
    /// `olivia`'s first token (prod).
    olivia: String,
    /// `olivia`'s second token: the same person.
    olivia2: String,
    /// `oscar` (prod).
    oscar: String,
    /// `paula` (prod).
    paula: String,
    /// `sven` (staging).
    sven: String,
    /// `stella` (staging).
    stella: String,
    client: reqwest::Client,
}

async fn env_with(tweak: impl FnOnce(&mut PolicyFixture)) -> Env {
    let [olivia, olivia2, oscar, paula, sven, stella] = std::array::from_fn(|_| random_hex(24));
    let (ups, gw) = start_with(|f| {
        f.prod_operators = operators(&[
            ("olivia", &olivia),
            ("olivia", &olivia2),
            ("oscar", &oscar),
            ("paula", &paula),
        ]);
        f.staging_operators = operators(&[("sven", &sven), ("stella", &stella)]);
        tweak(f);
    })
    .await;
    let client = admin_client();
    Env {
        ups,
        gw,
        olivia,
        olivia2,
        oscar,
        paula,
        sven,
        stella,
        client,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> AdminAnswer {
        admin_call(&self.client, self.gw.admin, method, path, token, body).await
    }

    /// Proposes a change as `token`; panics unless 201.
    async fn propose(&self, token: &str, kind: &str, target: &str, change: Value) -> Value {
        let r = self
            .call(
                Method::POST,
                "/v1/changes",
                token,
                Some(json!({"kind": kind, "target": target, "change": change, "reason": "ticket OPS-7"})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["status"], "pending", "{:?}", r.body);
        r.body
    }

    async fn approve(&self, token: &str, id: &str, digest: &str) -> AdminAnswer {
        self.call(
            Method::POST,
            &format!("/v1/changes/{id}/approve"),
            token,
            Some(json!({ "digest": digest })),
        )
        .await
    }

    async fn get_change(&self, token: &str, id: &str) -> Value {
        let r = self.call(Method::GET, &format!("/v1/changes/{id}"), token, None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    /// Audit records of tier prod with this action.
    async fn audit(&self, action: &str) -> Vec<Value> {
        let r = self
            .call(Method::GET, &format!("/v1/audit?action={action}"), &self.oscar, None)
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_array().expect("audit array").clone()
    }

    fn tenant_file(&self, id: &str) -> String {
        std::fs::read_to_string(self.gw.policy_dir.join(format!("tenants/{id}.toml"))).expect("tenant file")
    }
}

/// If this broke, one person (with one token or two) could change where a tenant's
/// traffic goes, an approver could approve something other than what they reviewed, or an
/// approved change would not actually take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_approves_an_upstream_change_and_it_applies_at_once() {
    let env = env().await;
    let moved_to = RecordingUpstream::start().await;
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!(env.ups.acme.count(), 1);

    let cr = env
        .propose(
            &env.olivia,
            "tenant.update",
            "acme",
            json!({"upstream": moved_to.url()}),
        )
        .await;
    let (id, digest) = (json_str(&cr["id"]), json_str(&cr["digest"]));
    assert_eq!(digest.len(), 64, "{cr}");
    assert_eq!(cr["proposed_by"], "olivia");
    // Nothing applies while pending.
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!((env.ups.acme.count(), moved_to.count()), (2, 0));

    let listed = env.call(Method::GET, "/v1/changes", &env.oscar, None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body[0]["id"], id.as_str(), "{:?}", listed.body);

    // The proposer, with either of her tokens, is one person.
    for token in [&env.olivia, &env.olivia2] {
        let r = env.approve(token, &id, &digest).await;
        assert_eq!(r.status, 403, "{:?}", r.body);
        assert_eq!(r.body["error"], "same_person", "{:?}", r.body);
    }
    assert_eq!(
        env.audit("change.approve_denied").await.len(),
        2,
        "self-approvals are audited"
    );
    // Another tier's operator cannot approve, and that is a security event; to it the
    // change does not exist.
    let r = env.approve(&env.sven, &id, &digest).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["message"], "Unknown change request.", "{:?}", r.body);
    env.gw
        .await_security_event("cross_tier", |e| {
            e["user.id"] == "operator:sven" && e["portcullis.tier"] == "prod"
        })
        .await;
    // An approval of other content is refused.
    let r = env.approve(&env.oscar, &id, &"0".repeat(64)).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(env.get_change(&env.oscar, &id).await["status"], "pending");

    let r = env.approve(&env.oscar, &id, &digest).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "applied", "{:?}", r.body);
    assert_eq!(r.body["decided_by"], "oscar");

    // Traffic goes to the new upstream at once, and the policy file says so (comments kept).
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!(moved_to.count(), 1, "the new upstream got nothing");
    assert_eq!(env.ups.acme.count(), 2, "the old upstream still got traffic");
    let file = env.tenant_file("acme");
    assert!(file.contains(&format!("upstream = \"{}\"", moved_to.url())), "{file}");
    assert!(file.starts_with("# Tenant \"acme\""), "comments were lost:\n{file}");

    // Decided once.
    let r = env.approve(&env.paula, &id, &digest).await;
    assert_eq!(r.status, 409, "{:?}", r.body);

    // Every step is audited with the operator, the source and the change.
    let propose = env.audit("change.propose").await;
    assert_eq!(propose.len(), 1, "{propose:?}");
    assert_eq!(propose[0]["actor"], "operator:olivia");
    assert_eq!(propose[0]["system"], "api");
    assert_eq!(propose[0]["source_ip"], "127.0.0.1");
    assert_eq!(propose[0]["target"], "tenant:acme");
    assert_eq!(propose[0]["before"]["upstream"], env.ups.acme.url().as_str());
    let approve = env.audit("change.approve").await;
    assert_eq!(approve.len(), 1, "{approve:?}");
    assert_eq!(approve[0]["actor"], "operator:oscar");
    let apply = env.audit("change.apply").await;
    assert_eq!(apply.len(), 1, "{apply:?}");
    assert_eq!(apply[0]["after"]["upstream"], moved_to.url().as_str());
    assert_eq!(apply[0]["before"]["upstream"], env.ups.acme.url().as_str());
}

/// If this broke, an approved change that breaks the policy (two tenants claiming one
/// host) would be written and either take a tenant's traffic or leave a policy that no
/// longer loads at the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_makes_the_policy_invalid_fails_and_changes_nothing() {
    let env = env().await;
    let before = env.tenant_file("acme");
    let cr = env
        .propose(
            &env.olivia,
            "tenant.update",
            "acme",
            json!({"hosts": ["acme.test", "globex.test"]}),
        )
        .await;
    let r = env
        .approve(&env.oscar, &json_str(&cr["id"]), &json_str(&cr["digest"]))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["status"], "failed", "{:?}", r.body);
    let errors = r.body["errors"].to_string();
    assert!(errors.contains("globex.test"), "{errors}");
    let real = env.gw.policy_dir.join("tenants").display().to_string();
    assert!(errors.contains(&real), "errors name the real files: {errors}");
    assert!(
        !errors.contains("portcullis-change-"),
        "errors name the scratch copy: {errors}"
    );
    assert_eq!(env.tenant_file("acme"), before, "the policy file changed");
    assert_eq!(
        env.get_change(&env.oscar, &json_str(&cr["id"])).await["status"],
        "failed"
    );
    assert_eq!(raw_get(env.gw.public, "globex.test", PUBLIC).await.status, 200);
    assert_eq!((env.ups.globex.count(), env.ups.acme.count()), (1, 0));
    assert_eq!(
        env.gw.readyz().await["policy"]["last_reload"],
        Value::Null,
        "a reload happened"
    );
    assert_eq!(env.audit("change.failed").await.len(), 1);
    assert!(env.audit("change.apply").await.is_empty());
}

/// If this broke, a proposer could slip different content past an approver by editing
/// after review, an editor could approve their own edit, a rejected change could still
/// apply, or an operator could act on another tier's tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_rejections_and_refusals() {
    let env = env().await;
    let before = env.tenant_file("acme");
    let cr = env
        .propose(
            &env.olivia,
            "tenant.update",
            "acme",
            json!({"hosts": ["acme.test", "www.acme.test"]}),
        )
        .await;
    let (id, old_digest) = (json_str(&cr["id"]), json_str(&cr["digest"]));

    // oscar edits: new digest; the reviewed (old) digest no longer approves; oscar, now an
    // author, cannot approve.
    let r = env
        .call(
            Method::PATCH,
            &format!("/v1/changes/{id}"),
            &env.oscar,
            Some(json!({"change": {"hosts": ["acme.test", "app.acme.test"]}})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new_digest = json_str(&r.body["digest"]);
    assert_ne!(new_digest, old_digest);
    assert_eq!(r.body["edited_by"], json!(["oscar"]));
    assert_eq!(env.approve(&env.paula, &id, &old_digest).await.status, 409);
    assert_eq!(env.approve(&env.oscar, &id, &new_digest).await.status, 403);
    // Bad edits are refused.
    for body in [
        json!({"change": {"colour": "red"}}),
        json!({}),
        json!({"change": {"hosts": []}}),
    ] {
        let r = env
            .call(
                Method::PATCH,
                &format!("/v1/changes/{id}"),
                &env.olivia,
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
    }

    // The proposer withdraws it; it never applies.
    let r = env
        .call(Method::POST, &format!("/v1/changes/{id}/reject"), &env.olivia, None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "rejected");
    assert_eq!(env.approve(&env.paula, &id, &new_digest).await.status, 409);
    let r = env
        .call(
            Method::PATCH,
            &format!("/v1/changes/{id}"),
            &env.olivia,
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(env.tenant_file("acme"), before);
    assert_eq!(env.audit("change.reject").await.len(), 1);
    assert_eq!(env.audit("change.edit").await.len(), 1);

    // Another tier's operator proposes nothing on prod tenants, and sees no prod changes.
    let r = env
        .call(
            Method::POST,
            "/v1/changes",
            &env.sven,
            Some(json!({"kind": "tenant.update", "target": "acme", "change": {"upstream": "http://127.0.0.1:1"}, "reason": "r"})),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["message"], "Unknown tenant.", "{:?}", r.body);
    let r = env.call(Method::GET, "/v1/changes", &env.sven, None).await;
    assert_eq!((r.status, r.body.clone()), (200, json!([])));
    let r = env
        .call(Method::GET, &format!("/v1/changes/{id}"), &env.sven, None)
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    // Malformed proposals.
    let cases = [
        (
            json!({"kind": "tenant.delete", "target": "acme", "change": {}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tenant.update", "target": "acme", "change": {"name": "x"}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tenant.update", "target": "acme", "change": {}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tenant.update", "target": "acme", "change": {"hosts": "a"}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tenant.update", "target": "acme", "change": {"tier": "prod"}}),
            400,
        ),
        (
            json!({"kind": "tenant.update", "target": "acme", "change": {"tier": "prod"}, "reason": "r", "x": 1}),
            400,
        ),
        (
            json!({"kind": "tier.credentials", "target": "prod", "change": {"cookie": "hunter2hunter2"}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tier.credentials", "target": "prod", "change": {"cookie": "inline:hunter2"}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tier.breaker_reset", "target": "prod", "change": {"now": true}, "reason": "r"}),
            400,
        ),
        (
            json!({"kind": "tenant.update", "target": "nobody", "change": {"tier": "prod"}, "reason": "r"}),
            404,
        ),
        (
            json!({"kind": "tier.credentials", "target": "qa", "change": {"cookie": "env:X"}, "reason": "r"}),
            404,
        ),
    ];
    for (body, want) in cases {
        let r = env
            .call(Method::POST, "/v1/changes", &env.olivia, Some(body.clone()))
            .await;
        assert_eq!(r.status, want, "{body}: {:?}", r.body);
        assert!(r.body["error"].is_string(), "{body}: {:?}", r.body);
        assert!(
            !r.body.to_string().contains("hunter2"),
            "a secret was echoed: {:?}",
            r.body
        );
    }
    let r = env.call(Method::GET, "/v1/changes", &env.olivia, None).await;
    assert_eq!(
        r.body.as_array().map(Vec::len),
        Some(1),
        "a refused proposal was stored"
    );

    // A credential change is by reference, and a well-formed one is accepted as pending.
    let cr = env
        .propose(
            &env.olivia,
            "tier.credentials",
            "prod",
            json!({"upstream_token": "env:PROD_UPSTREAM_TOKEN"}),
        )
        .await;
    assert_eq!(cr["change"]["upstream_token"], "env:PROD_UPSTREAM_TOKEN");
}

/// If this broke, a change proposed long ago (reviewed against an old state of the world)
/// could still be approved and applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_change_cannot_be_applied() {
    let env = env_with(|f| {
        f.gateway_env = vec![("PORTCULLIS_CHANGE_TTL_SECS".into(), "1".into())];
    })
    .await;
    let before = env.tenant_file("acme");
    let moved_to = RecordingUpstream::start().await;
    let cr = env
        .propose(
            &env.olivia,
            "tenant.update",
            "acme",
            json!({"upstream": moved_to.url()}),
        )
        .await;
    assert!(
        cr["expires_at"].as_i64().unwrap() - cr["created_at"].as_i64().unwrap() == 1,
        "{cr}"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        env.get_change(&env.oscar, &json_str(&cr["id"])).await["status"],
        "expired"
    );
    let r = env
        .approve(&env.oscar, &json_str(&cr["id"]), &json_str(&cr["digest"]))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(env.tenant_file("acme"), before);
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!((env.ups.acme.count(), moved_to.count()), (1, 0));
}

/// Free text is judged as sent, the way `/v1/openapi.json` states it: a reason or message
/// with a control character at either end (or a given but blank reason) is refused with
/// 400 on every call that takes one, and nothing is tripped, reset, proposed or rejected.
/// Found by schemathesis: a tier reset with a reason ending in a form feed was accepted,
/// the form feed trimmed away. If this broke, the API would accept what its own document
/// refuses, and a line break could slip into the audit log's free text unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_text_with_control_characters_at_either_end_is_refused_everywhere() {
    let env = env().await;
    let bad_texts = ["ticket 42\n", "\tticket 42", "ticket 42\u{c}", "\u{85}ticket 42"];
    for bad in bad_texts {
        for body in [json!({"reason": bad}), json!({"reason": "stuffing", "message": bad})] {
            let r = env
                .call(Method::PUT, "/v1/tenants/acme/breaker", &env.olivia, Some(body.clone()))
                .await;
            assert_eq!(r.status, 400, "trip with {body}: {:?}", r.body);
        }
        let r = env
            .call(
                Method::POST,
                "/v1/changes",
                &env.olivia,
                Some(json!({"kind": "tier.breaker_reset", "target": "prod", "change": {}, "reason": bad})),
            )
            .await;
        assert_eq!(r.status, 400, "proposal with {bad:?}: {:?}", r.body);
    }
    assert_eq!(
        raw_get(env.gw.public, "acme.test", PUBLIC).await.status,
        200,
        "nothing tripped"
    );

    // With switches in force: the resets refuse the same texts and keep them in force.
    for path in ["/v1/tenants/acme/breaker", "/v1/tiers/prod/breaker"] {
        let r = env
            .call(Method::PUT, path, &env.olivia, Some(json!({"reason": "drill"})))
            .await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    }
    for bad in bad_texts {
        for path in ["/v1/tenants/acme/breaker", "/v1/tiers/prod/breaker"] {
            let r = env
                .call(Method::DELETE, path, &env.olivia, Some(json!({"reason": bad})))
                .await;
            assert_eq!(r.status, 400, "reset of {path} with {bad:?}: {:?}", r.body);
        }
    }
    let r = env
        .call(
            Method::DELETE,
            "/v1/tiers/prod/breaker",
            &env.olivia,
            Some(json!({"reason": "  "})),
        )
        .await;
    assert_eq!(r.status, 400, "a blank reason given: {:?}", r.body);
    let r = env.call(Method::GET, "/v1/breakers", &env.oscar, None).await;
    assert_eq!(r.body["breakers"].as_array().map(Vec::len), Some(2), "{:?}", r.body);
    let r = env.call(Method::GET, "/v1/changes", &env.oscar, None).await;
    assert_eq!(r.body, json!([]), "no change was proposed");

    // A pending change is not rejected with such a reason either.
    let r = env
        .call(Method::DELETE, "/v1/tiers/prod/breaker", &env.olivia, None)
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let id = json_str(&r.body["id"]);
    let r = env
        .call(
            Method::POST,
            &format!("/v1/changes/{id}/reject"),
            &env.oscar,
            Some(json!({"reason": "not now\n"})),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(env.get_change(&env.oscar, &id).await["status"], "pending");
    // Spaces around a clean text are still trimmed.
    let r = env
        .call(
            Method::POST,
            &format!("/v1/changes/{id}/reject"),
            &env.oscar,
            Some(json!({"reason": "  not now  "})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "rejected", "{:?}", r.body);
}

/// If this broke, one operator alone could lift a tier-wide emergency stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_breaker_reset_needs_a_second_operator() {
    let env = env().await;
    let r = env
        .call(Method::DELETE, "/v1/tiers/prod/breaker", &env.olivia, None)
        .await;
    assert_eq!(r.status, 404, "nothing tripped: {:?}", r.body);
    let r = env
        .call(
            Method::PUT,
            "/v1/tiers/prod/breaker",
            &env.olivia,
            Some(json!({"reason": "incident 9"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 423);

    let r = env
        .call(Method::DELETE, "/v1/tiers/prod/breaker", &env.sven, None)
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = env
        .call(
            Method::DELETE,
            "/v1/tiers/prod/breaker",
            &env.olivia,
            Some(json!({"reason": "incident over"})),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["kind"], "tier.breaker_reset");
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/v1/changes/{}", json_str(&r.body["id"])).as_str())
    );
    let (id, digest) = (json_str(&r.body["id"]), json_str(&r.body["digest"]));
    // Still tripped until a second person approves.
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 423);
    assert_eq!(env.approve(&env.olivia2, &id, &digest).await.status, 403);
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 423);

    let r = env.approve(&env.oscar, &id, &digest).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "applied");
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    let r = env.call(Method::GET, "/v1/breakers", &env.oscar, None).await;
    assert_eq!(r.body["breakers"], json!([]), "{:?}", r.body);
    let resets = env.audit("breaker.reset").await;
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0]["actor"], "operator:oscar");
    assert_eq!(env.audit("change.apply").await.len(), 1);
}

/// If this broke, a restart would forget pending approvals or undo an applied change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_survive_a_restart() {
    let mut env = env().await;
    let moved_to = RecordingUpstream::start().await;
    let pending = env
        .propose(
            &env.olivia,
            "tenant.update",
            "globex",
            json!({"hosts": ["globex.test", "www.globex.test"]}),
        )
        .await;
    let applied = env
        .propose(
            &env.olivia,
            "tenant.update",
            "acme",
            json!({"upstream": moved_to.url()}),
        )
        .await;
    let r = env
        .approve(&env.oscar, &json_str(&applied["id"]), &json_str(&applied["digest"]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    env.gw.signal("TERM");
    assert!(env.gw.wait_exit(Duration::from_secs(15)).await.is_some(), "no exit");
    env.gw.restart().await;

    let r = admin_call(&env.client, env.gw.admin, Method::GET, "/v1/changes", &env.paula, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = r.body.as_array().expect("array").clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let by_id = |id: &Value| list.iter().find(|c| c["id"] == *id).cloned().expect("listed");
    assert_eq!(by_id(&pending["id"])["status"], "pending");
    assert_eq!(by_id(&pending["id"])["digest"], pending["digest"]);
    assert_eq!(by_id(&applied["id"])["status"], "applied");

    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!(moved_to.count(), 1, "the applied change was lost in the restart");

    // The pending one can still be approved after the restart.
    let r = admin_call(
        &env.client,
        env.gw.admin,
        Method::POST,
        &format!("/v1/changes/{}/approve", json_str(&pending["id"])),
        &env.paula,
        Some(json!({"digest": pending["digest"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(env.tenant_file("globex").contains("www.globex.test"));
}

/// If this broke, tier credentials could be changed by one person, by value (a secret in
/// the policy file and the audit log), or to a reference that does not resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_credentials_change_by_reference_only_when_they_resolve() {
    let env = env_with(|f| {
        f.gateway_env = vec![("PORTCULLIS_TEST_STAGING_COOKIE".into(), random_hex(32))];
    })
    .await;
    let path = env.gw.policy_dir.join("tiers/staging.toml");
    let before = std::fs::read_to_string(&path).unwrap();

    let cr = env
        .propose(
            &env.sven,
            "tier.credentials",
            "staging",
            json!({"cookie": "env:PORTCULLIS_TEST_UNSET"}),
        )
        .await;
    let r = env
        .approve(&env.stella, &json_str(&cr["id"]), &json_str(&cr["digest"]))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.body["errors"].to_string().contains("PORTCULLIS_TEST_UNSET"),
        "{:?}",
        r.body
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

    let cr = env
        .propose(
            &env.sven,
            "tier.credentials",
            "staging",
            json!({"cookie": "env:PORTCULLIS_TEST_STAGING_COOKIE"}),
        )
        .await;
    let r = env
        .approve(&env.stella, &json_str(&cr["id"]), &json_str(&cr["digest"]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(
        after.contains("cookie = \"env:PORTCULLIS_TEST_STAGING_COOKIE\""),
        "{after}"
    );
    assert!(after.starts_with("# Tier \"staging\""), "{after}");
    assert_eq!(raw_get(env.gw.public, "initech.test", PUBLIC).await.status, 200);
    // The old inline key never reaches the audit log.
    let r = env
        .call(Method::GET, "/v1/audit?action=change.apply", &env.sven, None)
        .await;
    assert_eq!(r.status, 200);
    let text = r.body.to_string();
    assert!(text.contains("change.apply"), "{text}");
    assert!(
        !text.contains("staging-test-cookie-key"),
        "a secret reached the audit log: {text}"
    );
}

/// Audit sibling of "any operator can reload every tier": an approved change reloads the
/// whole policy folder. If this broke, a prod approval would also put live an unreviewed
/// on-disk edit to a staging tenant (here: initech's upstream moved elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_never_applies_another_tiers_edits_on_disk() {
    let env = env().await;
    let elsewhere = RecordingUpstream::start().await;
    let initech = env.gw.policy_dir.join("tenants/initech.toml");
    let staging_before = std::fs::read_to_string(&initech).expect("initech file");
    let edited = staging_before.replace(&env.ups.initech.url(), &elsewhere.url());
    assert_ne!(edited, staging_before, "the fixture names initech's upstream");
    std::fs::write(&initech, &edited).expect("edit initech");

    let acme_before = env.tenant_file("acme");
    let moved_to = RecordingUpstream::start().await;
    let cr = env
        .propose(
            &env.olivia,
            "tenant.update",
            "acme",
            json!({"upstream": moved_to.url()}),
        )
        .await;
    let r = env
        .approve(&env.oscar, &json_str(&cr["id"]), &json_str(&cr["digest"]))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body.to_string().contains("staging"), "{:?}", r.body);
    assert_eq!(env.tenant_file("acme"), acme_before, "the prod edit stayed on disk");

    // Neither edit serves.
    assert_eq!(raw_get(env.gw.public, "initech.test", PUBLIC).await.status, 200);
    assert_eq!(raw_get(env.gw.public, "acme.test", PUBLIC).await.status, 200);
    assert_eq!((elsewhere.count(), moved_to.count()), (0, 0));
    assert_eq!((env.ups.initech.count(), env.ups.acme.count()), (1, 1));
}
