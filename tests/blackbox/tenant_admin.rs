//! The tenant admin's area seen from outside (SPEC "Sessions": tenant admins see and end
//! their tenant's sessions; issue 15): the users page with MFA status and resets, the
//! live sessions with ending one, the sign-in history and the audit records, each page
//! with its JSON twin under `/.portcullis/api/admin/`; and who may see what: another
//! tenant's users, sessions and records answer exactly like ones that do not exist, a
//! user without the role gets 403, no session the sign-in page (pages) or 401 (API).

use http::Method;
use serde_json::Value;

use crate::harness::*;

const PROTECTED: &str = "/app/data";

/// An agent signed in as `user` on `host` whose session works.
async fn signed_in(gw: &Gateway, host: &str, user: &TestUser) -> Agent {
    let mut a = Agent::new(gw, host);
    a.api_login(user).await;
    assert_eq!(a.get(PROTECTED).await.status, 200, "fresh session does not work");
    a
}

/// The CSRF token of a page's forms.
fn csrf_of(page: &Reply) -> String {
    page.body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_string()
}

/// A page's body without the request id it names (unique to each request), for
/// comparing two refusals.
fn page_sans_request_id(r: &Reply) -> String {
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert!(r.body.contains(&id), "the refusal names its request: {}", r.body);
    r.body.replace(&id, "")
}

/// The id of `subject`'s live session in a tenant admin's session list.
fn session_of(list: &Value, subject: &str) -> String {
    list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["subject"] == subject)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no session of {subject}: {list}"))
        .to_string()
}

/// A tenant admin lists and acts on users, sessions and records of their own tenant, and
/// a user, session or record of another tenant (same tier, same store) answers exactly
/// like one that does not exist, on the pages and in the API. If this broke, a tenant
/// admin could not stop a stolen session or a lost authenticator without an operator,
/// or could see or end another tenant's users and sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_admins_manage_their_own_tenant_only() {
    let (_ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let ada = accounts.create("acme", "ada", &["tenant-admin"], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let gus = accounts.create("globex", "gus", &["tenant-admin"], true).await;
    let gina = accounts.create("globex", "gina", &[], true).await;
    let mut admin = signed_in(&gw, "acme.test", &ada).await;
    let mut globex_admin = signed_in(&gw, "globex.test", &gus).await;
    let mut gina_agent = signed_in(&gw, "globex.test", &gina).await;
    let mut wrong = Agent::new(&gw, "acme.test");
    let r = wrong
        .post_json(
            "/.portcullis/api/login",
            &serde_json::json!({"username": "bob", "password": "not-bobs-password"}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let mut bob_agent = signed_in(&gw, "acme.test", &bob).await;

    // Users with their second factor, of this tenant only.
    let users = admin.get("/.portcullis/api/admin/users").await;
    assert_eq!(users.status, 200, "{}", users.body);
    let users = users.json();
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["ada", "bob"], "{users}");
    assert_eq!(users["users"][1]["totp_enrolled"], true, "{users}");
    assert_eq!(users["users"][1]["suspended"], false, "{users}");
    assert_eq!(users["users"][0]["roles"], serde_json::json!(["tenant-admin"]));
    let page = admin.get("/.portcullis/admin/users").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("aria-label=\"Reset MFA of bob\"") && !page.body.contains("gina"),
        "{}",
        page.body
    );
    // Ada's own second factor is reset by another admin only (the reset answers 403), so
    // her row offers no button.
    assert!(
        !page.body.contains("aria-label=\"Reset MFA of ada\"") && page.body.contains("another admin resets it"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("href=\"/.portcullis/admin/users\" aria-current=\"page\""),
        "the navigation marks the page: {}",
        page.body
    );
    let csrf = csrf_of(&page);

    // Live sessions: the tenant's, with readable times; never another tenant's.
    let list = admin.get("/.portcullis/api/admin/sessions").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    let bob_session = session_of(&list, "bob");
    assert!(
        !list.to_string().contains("gina") && !list.to_string().contains("gus"),
        "{list}"
    );
    let gina_session = session_of(
        &globex_admin.get("/.portcullis/api/admin/sessions").await.json(),
        "gina",
    );
    let page = admin.get("/.portcullis/admin/sessions").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&bob_session) && !page.body.contains(&gina_session),
        "{}",
        page.body
    );
    assert!(page.body.contains(">just now</time>"), "{}", page.body);

    // Another tenant's session, user and record answer like none at all.
    let theirs = admin
        .delete(&format!("/.portcullis/api/admin/sessions/{gina_session}"))
        .await;
    let none = admin.delete("/.portcullis/api/admin/sessions/0123456789abcdef").await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(sans_request_id(&theirs.body), sans_request_id(&none.body));
    let theirs = admin.delete("/.portcullis/api/admin/users/gina/mfa").await;
    let none = admin.delete("/.portcullis/api/admin/users/nobody/mfa").await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(sans_request_id(&theirs.body), sans_request_id(&none.body));
    let theirs = admin
        .post_form(
            "/.portcullis/admin/sessions/end",
            &[("csrf", &csrf), ("id", &gina_session)],
        )
        .await;
    let none = admin
        .post_form(
            "/.portcullis/admin/sessions/end",
            &[("csrf", &csrf), ("id", "0123456789abcdef")],
        )
        .await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(page_sans_request_id(&theirs), page_sans_request_id(&none));
    let theirs = admin
        .post_form(
            "/.portcullis/admin/users/mfa-reset",
            &[("csrf", &csrf), ("username", "gina")],
        )
        .await;
    let none = admin
        .post_form(
            "/.portcullis/admin/users/mfa-reset",
            &[("csrf", &csrf), ("username", "nobody")],
        )
        .await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(page_sans_request_id(&theirs), page_sans_request_id(&none));
    assert_eq!(gina_agent.get(PROTECTED).await.status, 200, "gina untouched");
    let gina_users = globex_admin.get("/.portcullis/api/admin/users").await.json();
    assert_eq!(gina_users["users"][0]["username"], "gina", "{gina_users}");
    assert_eq!(gina_users["users"][0]["totp_enrolled"], true, "gina keeps her MFA");

    // Without the CSRF token, nothing ends.
    let r = admin
        .post_form("/.portcullis/admin/sessions/end", &[("id", &bob_session)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = admin
        .post_form("/.portcullis/admin/users/mfa-reset", &[("username", "bob")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(bob_agent.get(PROTECTED).await.status, 200, "bob still signed in");

    // Ending bob's session from the page: back to the list (303) with a fixed notice,
    // and bob's very next request is refused.
    let r = admin
        .post_form(
            "/.portcullis/admin/sessions/end",
            &[("csrf", &csrf), ("id", &bob_session)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").expect("location").to_string();
    assert_eq!(location, "/.portcullis/admin/sessions?done=ended");
    let r = admin.get(&location).await;
    assert!(
        r.body.contains("Session ended.") && !r.body.contains(&bob_session),
        "{}",
        r.body
    );
    assert_eq!(bob_agent.get(PROTECTED).await.status, 401, "ended session still served");
    let r = admin
        .delete(&format!("/.portcullis/api/admin/sessions/{bob_session}"))
        .await;
    assert_eq!(r.status, 404, "ending twice: {}", r.body);

    // The JSON twin ends one too.
    let mut bob_again = signed_in(&gw, "acme.test", &bob).await;
    let id = session_of(&admin.get("/.portcullis/api/admin/sessions").await.json(), "bob");
    let r = admin.delete(&format!("/.portcullis/api/admin/sessions/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ended"], 1);
    assert_eq!(bob_again.get(PROTECTED).await.status, 401);

    // MFA reset from the page: bob's sessions end and he must enrol again.
    let mut bob_again = signed_in(&gw, "acme.test", &bob).await;
    let r = admin
        .post_form(
            "/.portcullis/admin/users/mfa-reset",
            &[("csrf", &csrf), ("username", "bob")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").expect("location").to_string();
    assert_eq!(location, "/.portcullis/admin/users?done=mfa_reset&account=bob&ended=1");
    let r = admin.get(&location).await;
    assert!(r.body.contains("MFA reset for bob: 1 session ended."), "{}", r.body);
    assert_eq!(
        bob_again.get(PROTECTED).await.status,
        401,
        "bob's session survived the reset"
    );
    let mut fresh = Agent::new(&gw, "acme.test");
    let r = fresh.api_password_step(&bob, None).await;
    assert_eq!(
        (r.status, r.json()["next"].clone()),
        (200, "enrol".into()),
        "{}",
        r.body
    );
    let users = admin.get("/.portcullis/api/admin/users").await.json();
    assert_eq!(users["users"][1]["totp_enrolled"], false, "{users}");
    assert_eq!(users["users"][1]["recovery_codes_left"], 0, "{users}");
    // Its JSON twin: an account without sessions resets too.
    let r = admin.delete("/.portcullis/api/admin/users/bob/mfa").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "mfa_reset", "sessions_ended": 0})
    );

    // History: every user of the tenant, newest first, in words on the page, with
    // attempts at names no account has (a guesser's) among them.
    let guess = TestUser::known("acme", "prod", "mallory-guess", "not-a-password", "JBSWY3DPEHPK3PXP");
    let r = Agent::new(&gw, "acme.test").api_password_step(&guess, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let history = admin.get("/.portcullis/api/admin/history").await;
    assert_eq!(history.status, 200, "{}", history.body);
    let history = history.json();
    let events = history["history"].as_array().expect("history");
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    assert!(
        events
            .iter()
            .any(|e| e["subject"] == "bob" && e["reason"] == "bad_password"),
        "{history}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["subject"] == "ada" && e["outcome"] == "success")
    );
    assert!(
        events
            .iter()
            .any(|e| e["subject"] == "mallory-guess" && e["reason"] == "unknown_user"),
        "{history}"
    );
    assert!(!history.to_string().contains("gina"), "{history}");
    let older = admin
        .get(&format!("/.portcullis/api/admin/history?limit=1&before={}", seqs[0]))
        .await
        .json();
    assert_eq!(older["history"].as_array().map(Vec::len), Some(1), "{older}");
    assert_eq!(older["history"][0]["seq"].as_i64(), Some(seqs[1]), "{older}");
    let page = admin.get("/.portcullis/admin/history").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Wrong password") && !page.body.contains("bad_password") && !page.body.contains("gina"),
        "{}",
        page.body
    );

    // Audit: this tenant's records only, the admin's changes among them, newest first.
    let audit = admin.get("/.portcullis/api/admin/audit").await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let audit = audit.json();
    let records = audit["records"].as_array().expect("records");
    let actions: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or(""),
                r["actor"].as_str().unwrap_or(""),
                r["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("user.mfa_reset", "user:ada", "account:acme:bob"),
            ("user.mfa_reset", "user:ada", "account:acme:bob"),
            ("session.revoke", "user:ada", "account:acme:bob"),
            ("session.revoke", "user:ada", "account:acme:bob"),
        ],
        "{audit}"
    );
    assert!(records.iter().all(|r| r["system"] == "console"), "{audit}");
    let theirs = globex_admin.get("/.portcullis/api/admin/audit").await.json();
    assert_eq!(
        theirs["records"],
        serde_json::json!([]),
        "globex sees acme's records: {theirs}"
    );
    let page = admin.get("/.portcullis/admin/audit").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("user.mfa_reset") && page.body.contains("account:acme:bob"));
    let page = globex_admin.get("/.portcullis/admin/audit").await;
    assert!(!page.body.contains("acme"), "{}", page.body);
}

/// Who may use the tenant admin's area: no session goes to the sign-in page (pages) or
/// gets 401 (API), a session without the `tenant-admin` role gets 403 (pages: the
/// styled refusal), a known endpoint called with another method 405 with `Allow`. If
/// this broke, any user of a tenant could list its users and end their sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tenant_admins_reach_the_admin_area() {
    let (_ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let ada = accounts.create("acme", "ada", &["tenant-admin"], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let mut anonymous = Agent::new(&gw, "acme.test");
    let mut plain = signed_in(&gw, "acme.test", &bob).await;
    let mut admin = signed_in(&gw, "acme.test", &ada).await;
    for page in [
        "admin",
        "admin/users",
        "admin/sessions",
        "admin/sso",
        "admin/history",
        "admin/audit",
    ] {
        let path = format!("/.portcullis/{page}");
        let r = anonymous.get(&path).await;
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        let rd = format!("%2F.portcullis%2F{}", page.replace('/', "%2F"));
        assert_eq!(
            r.header("location"),
            Some(format!("/.portcullis/login?rd={rd}").as_str()),
            "{path}"
        );
        let r = plain.get(&path).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(
            r.body.contains("Only tenant admins may open this page."),
            "{path}: {}",
            r.body
        );
        let r = admin.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        for link in [
            "admin\"",
            "admin/users\"",
            "admin/sessions\"",
            "admin/sso\"",
            "admin/history\"",
            "admin/audit\"",
        ] {
            assert!(
                r.body.contains(&format!("href=\"/.portcullis/{link}")),
                "{path} links {link}"
            );
        }
    }
    for (method, path) in [
        (Method::GET, "users"),
        (Method::GET, "sessions"),
        (Method::GET, "history"),
        (Method::GET, "audit"),
        (Method::DELETE, "users/ada/mfa"),
        (Method::DELETE, "sessions/0123456789abcdef"),
    ] {
        let path = format!("/.portcullis/api/admin/{path}");
        let r = anonymous.send(method.clone(), &path, &[], None).await;
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "unauthenticated", "{path}");
        let r = plain.send(method.clone(), &path, &[], None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "forbidden", "{path}");
    }
    assert_eq!(admin.get("/.portcullis/api/admin/users").await.status, 200);
    for (method, path, allow) in [
        (Method::POST, "users", "GET"),
        (Method::DELETE, "sessions", "GET"),
        (Method::PUT, "audit", "GET"),
        (Method::POST, "history", "GET"),
        (Method::GET, "users/bob/mfa", "DELETE"),
        (Method::GET, "sessions/0123456789abcdef", "DELETE"),
    ] {
        let path = format!("/.portcullis/api/admin/{path}");
        let r = admin.send(method, &path, &[], None).await;
        assert_eq!(r.status, 405, "{path}: {}", r.body);
        assert_eq!(r.header("allow"), Some(allow), "{path}");
        assert_eq!(r.json()["error"], "method_not_allowed", "{path}");
    }
    // Nothing of the above changed bob: his session and second factor are intact.
    assert_eq!(plain.get(PROTECTED).await.status, 200);
    let users = admin.get("/.portcullis/api/admin/users").await.json();
    assert_eq!(users["users"][1]["totp_enrolled"], true, "{users}");

    // Free text with a control character at either end is refused, not trimmed away,
    // and trips nothing; a blank message still means the default one.
    for body in [
        r#"{"reason":"lost laptop\n"}"#,
        r#"{"reason":"\tlost laptop"}"#,
        r#"{"reason":"lost laptop","message":"\t"}"#,
        r#"{"reason":"lost laptop","message":"Call us\r\n"}"#,
    ] {
        let r = admin
            .send(
                Method::PUT,
                "/.portcullis/api/admin/accounts/bob/breaker",
                &[],
                Some(("application/json", body.as_bytes().to_vec())),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    let users = admin.get("/.portcullis/api/admin/users").await.json();
    assert_eq!(users["users"][1]["suspended"], false, "{users}");

    // A kill switch on bob shows on the users list and page.
    let r = admin
        .send(
            Method::PUT,
            "/.portcullis/api/admin/accounts/bob/breaker",
            &[],
            Some(("application/json", br#"{"reason":"lost laptop"}"#.to_vec())),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let users = admin.get("/.portcullis/api/admin/users").await.json();
    assert_eq!(
        (&users["users"][1]["suspended"], &users["users"][1]["suspension_reason"]),
        (&Value::Bool(true), &Value::from("lost laptop")),
        "{users}"
    );
    assert_eq!(users["users"][0]["suspended"], false, "{users}");
    let page = admin.get("/.portcullis/admin/users").await;
    assert!(
        page.body.contains("<strong>Suspended</strong>: lost laptop"),
        "{}",
        page.body
    );
}
