//! The session center and session isolation: ending sessions, password change, sign-out,
//! WebSockets of revoked sessions, cookies on foreign tenants and tiers, ambiguous
//! cookies (SPEC "Sessions", "Request path"; SECURITY-CASES SES-05/06/08, TEN-01/02, WS-02).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::*;
use crate::websocket::assert_closed_with_1008;

const PROTECTED: &str = "/app/data";

/// SES-05/SES-06: if this broke, a user who ends a lost device's session would leave it
/// working, or one user could end (or probe) another user's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_sessions_from_the_session_center() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;

    let mut laptop = Agent::new(&gw, "acme.test");
    laptop.user_agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into();
    laptop.api_login(&alice).await;
    let mut phone = Agent::new(&gw, "acme.test");
    phone.user_agent = "Mozilla/5.0 (iPhone) Safari/605.1".into();
    phone.api_login(&alice).await;
    let mut tablet = Agent::new(&gw, "acme.test");
    tablet.api_login(&alice).await;
    assert_ne!(laptop.session("prod"), phone.session("prod"));

    let r = laptop.get("/.portcullis/api/sessions").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 3, "{list:#?}");
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    for s in list {
        for key in ["id", "created", "last_seen", "ip", "user_agent"] {
            assert!(!s[key].is_null(), "{key} missing: {s}");
        }
        assert_eq!(s["ip"], "127.0.0.1");
        // The list never hands out session tokens.
        for agent in [&laptop, &phone, &tablet] {
            let token = agent.session("prod").expect("token");
            assert!(!s.to_string().contains(&token), "token in the session list");
        }
    }
    let phone_id = phone.current_session_id().await;
    let phone_row = list
        .iter()
        .find(|s| s["id"] == phone_id.as_str())
        .expect("phone listed");
    assert_eq!(phone_row["user_agent"], "Mozilla/5.0 (iPhone) Safari/605.1");
    assert_eq!(phone_row["current"], false);

    // Bob signs in; alice cannot end his session, and it looks like a missing one.
    let mut bobs = Agent::new(&gw, "acme.test");
    bobs.api_login(&bob).await;
    let bob_id = bobs.current_session_id().await;
    let r = laptop.delete(&format!("/.portcullis/api/sessions/{bob_id}")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let missing = laptop.delete("/.portcullis/api/sessions/does-not-exist").await;
    assert_eq!(missing.status, 404);
    // Each refusal names its own request; apart from that the bodies are equal.
    let (a, b) = (r.header("x-request-id"), missing.header("x-request-id"));
    assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    assert_eq!(
        sans_request_id(&r.body),
        sans_request_id(&missing.body),
        "another user's session is distinguishable from none"
    );
    assert_eq!(
        bobs.get(PROTECTED).await.status,
        200,
        "bob's session was ended by alice"
    );
    // Listing with foreign parameters still shows only alice's own sessions.
    let r = laptop.get("/.portcullis/api/sessions?user=bob&tenant=acme").await;
    let ids: Vec<String> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&bob_id));

    // Alice ends the phone's session from the laptop.
    let before = ups.acme.count();
    let r = laptop.delete(&format!("/.portcullis/api/sessions/{phone_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.set_cookie("__Host-portcullis-prod").is_none(),
        "ending another session must not touch this one's cookie"
    );
    let r = phone.get(PROTECTED).await;
    assert_eq!(r.status, 401, "an ended session still works");
    assert_eq!(phone.get("/.portcullis/api/whoami").await.status, 401);
    assert_eq!(
        ups.acme.count(),
        before,
        "the upstream saw a request of an ended session"
    );
    let r = laptop.delete(&format!("/.portcullis/api/sessions/{phone_id}")).await;
    assert_eq!(r.status, 404, "an ended session can be ended again: {}", r.body);

    // End every other session: the laptop keeps working, the tablet stops.
    let r = laptop.delete("/.portcullis/api/sessions?others=true").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ended"], 1, "{}", r.body);
    assert_eq!(tablet.get(PROTECTED).await.status, 401);
    assert_eq!(laptop.get(PROTECTED).await.status, 200);
    let r = laptop.get("/.portcullis/api/sessions").await;
    let list = r.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["current"], true);
    // Bob is untouched by alice's "end all others".
    assert_eq!(bobs.get(PROTECTED).await.status, 200);

    // Ending the current session by id signs out and clears the cookie.
    let laptop_id = laptop.current_session_id().await;
    let token = laptop.session("prod").expect("token");
    let r = laptop.delete(&format!("/.portcullis/api/sessions/{laptop_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.set_cookie("__Host-portcullis-prod").is_some_and(|c| c.is_removal()));
    laptop.cookies.insert("__Host-portcullis-prod".into(), token);
    assert_eq!(laptop.get(PROTECTED).await.status, 401);
}

/// SES-05: if this broke, a captured cookie would keep working after sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_cookie_is_dead() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let lee = accounts.create("acme", "lee", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&lee).await;
    let captured = a.session("prod").expect("token");
    let r = a.post_json("/.portcullis/api/logout", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.set_cookie("__Host-portcullis-prod").is_some_and(|c| c.is_removal()));
    a.cookies.insert("__Host-portcullis-prod".into(), captured);
    assert_eq!(a.get(PROTECTED).await.status, 401);
    assert_eq!(ups.acme.count(), 0);

    // The page sign-out (with the session's CSRF token) too.
    let mut b = Agent::new(&gw, "acme.test");
    b.api_login(&lee).await;
    let captured = b.session("prod").expect("token");
    let r = b.get("/.portcullis/logout").await;
    assert_eq!(r.status, 200);
    let csrf = r
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field on the sign-out page")
        .to_string();
    // Without the token: refused, still signed in.
    let r = b.post_form("/.portcullis/logout", &[("csrf", "0")]).await;
    assert_ne!(r.status, 303, "sign-out without CSRF token: {}", r.body);
    assert_eq!(b.get(PROTECTED).await.status, 200);
    let r = b.post_form("/.portcullis/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    b.cookies.insert("__Host-portcullis-prod".into(), captured);
    assert_eq!(b.get(PROTECTED).await.status, 401);
}

/// SES-08: if this broke, a password change after a compromise would leave the
/// attacker's session alive, or the old password would keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_ends_every_session_and_replaces_the_password() {
    let (_ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let mut maya = accounts.create("acme", "maya", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&maya).await;
    let mut other = Agent::new(&gw, "acme.test");
    other.api_login(&maya).await;
    let current = a.session("prod").expect("token");

    let new_password = "a-much-longer-new-passphrase-42";
    // Wrong current password, or no valid code: nothing changes.
    let code = maya.fresh_code().await;
    let r = a
        .post_json(
            "/.portcullis/api/password",
            &json!({"current_password": "wrong-one", "new_password": new_password, "code": code}),
        )
        .await;
    assert!(r.status == 400 || r.status == 403, "{}: {}", r.status, r.body);
    assert_eq!(a.get(PROTECTED).await.status, 200);
    // A too-short new password is refused.
    let r = a
        .post_json(
            "/.portcullis/api/password",
            &json!({"current_password": maya.password, "new_password": "short", "code": "000000"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    let code = maya.fresh_code().await;
    let r = a
        .post_json(
            "/.portcullis/api/password",
            &json!({"current_password": maya.password, "new_password": new_password, "code": code}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.set_cookie("__Host-portcullis-prod").is_some_and(|c| c.is_removal()));

    // Every session ended, the current one too (replayed from a capture).
    let mut replay = Agent::new(&gw, "acme.test");
    replay.cookies.insert("__Host-portcullis-prod".into(), current);
    assert_eq!(replay.get(PROTECTED).await.status, 401, "the current session survived");
    assert_eq!(other.get(PROTECTED).await.status, 401, "another session survived");

    // The old password no longer works; the new one does, through MFA again.
    let mut c = Agent::new(&gw, "acme.test");
    let r = c.api_password_step(&maya, None).await;
    assert_eq!(r.status, 401, "old password still works: {}", r.body);
    maya.password = new_password.to_string();
    let r = c.api_password_step(&maya, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["next"], "mfa", "a password change must not skip MFA");
    assert_eq!(c.get(PROTECTED).await.status, 401);
    c.api_login(&maya).await;
    assert_eq!(c.get(PROTECTED).await.status, 200);
}

async fn open_ws(
    gw: &Gateway,
    path: &str,
    cookie: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    open_ws_at(gw, "acme.test", path, cookie).await
}

async fn open_ws_at(
    gw: &Gateway,
    host: &str,
    path: &str,
    cookie: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{host}:{}{path}", gw.public.port())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert("cookie", cookie.parse().expect("cookie"));
    let tcp = TcpStream::connect(gw.public).await.expect("connect");
    tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
}

/// WS-01 and WS-02's other endings: one tenant's session cookie opens no WebSocket on
/// another tenant of the same tier (the cookie name is the tier's), and signing out
/// closes the socket the session opened, like a revocation from elsewhere does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_needs_this_tenants_session_and_ends_at_sign_out() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let olga = accounts.create("acme", "olga", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&olga).await;
    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    match open_ws_at(&gw, "globex.test", "/app/ws", &cookie).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("acme's session opened a WebSocket on globex"),
    }
    assert_eq!(ups.globex.count(), 0, "nothing reached globex");

    let mut ws = open_ws(&gw, "/app/ws", &cookie).await.expect("upgrade with a session");
    let r = a.post_json("/.portcullis/api/logout", &serde_json::json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_closed_with_1008(&mut ws, Duration::from_secs(2), "sign-out").await;
}

/// WS-02: if this broke, a session ended from another device would keep its open
/// WebSocket (live data, commands) for as long as the socket stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_of_a_revoked_session_is_closed() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let nina = accounts.create("acme", "nina", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&nina).await;
    let mut b = Agent::new(&gw, "acme.test");
    b.api_login(&nina).await;
    let a_id = a.current_session_id().await;

    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    let mut ws = open_ws(&gw, "/app/ws", &cookie).await.expect("upgrade with a session");
    ws.send(Message::text("ping")).await.expect("send");
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("frame")
        .expect("ok");
    assert_eq!(echo, Message::text("ping"));
    let handshake = ups
        .acme
        .requests()
        .into_iter()
        .find(|r| r.target == "/app/ws")
        .expect("seen");
    assert_eq!(handshake.header("x-portcullis-user"), Some("nina"));

    let r = b.delete(&format!("/.portcullis/api/sessions/{a_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_closed_with_1008(&mut ws, Duration::from_secs(2), "revocation").await;
    // Nothing passes afterwards.
    let _ = ws.send(Message::text("after")).await;
    let after = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(
        !matches!(after, Ok(Some(Ok(Message::Text(_))))),
        "a frame was echoed after revocation"
    );
    // A new upgrade with the revoked cookie is refused.
    match open_ws(&gw, "/app/ws", &cookie).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("a revoked session opened a WebSocket"),
    }
}

/// Issue 4: if this broke, a revoked session could keep an open download or event
/// stream (SSE) running for as long as the upstream keeps sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_of_a_revoked_session_is_cut_off() {
    let (_ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let sam = accounts.create("acme", "sam", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&sam).await;
    let mut b = Agent::new(&gw, "acme.test");
    b.api_login(&sam).await;
    let a_id = a.current_session_id().await;
    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{}/app/slowstream", gw.public))
        .header("host", "acme.test")
        .header("cookie", cookie)
        .send()
        .await
        .expect("stream starts");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a first chunk");
    assert!(matches!(first, Some(Ok(_))));

    let r = b.delete(&format!("/.portcullis/api/sessions/{a_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream kept flowing {:?} after revocation",
        started.elapsed()
    );
}

/// TEN-01/TEN-02: if this broke, a session of one customer (or of staging) would open
/// another customer's (or prod's) app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_of_another_tenant_or_tier_are_refused() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let olga = accounts.create("acme", "olga", &["admin"], true).await;
    let ivan = accounts.create("initech", "ivan", &["admin"], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&olga).await;
    let acme_token = a.session("prod").expect("token");
    let mut s = Agent::new(&gw, "initech.test");
    s.api_login(&ivan).await;
    let staging_token = s.session("staging").expect("staging token");
    assert_eq!(s.get(PROTECTED).await.status, 200);
    let initech_before = ups.initech.count();

    // A's prod cookie on B (globex, same tier).
    let mut b = Agent::new(&gw, "globex.test");
    b.cookies.insert("__Host-portcullis-prod".into(), acme_token.clone());
    assert_eq!(b.get(PROTECTED).await.status, 401);
    assert_eq!(b.get("/admin/x").await.status, 401);
    let r = b.send(Method::GET, PROTECTED, &[("accept", "text/html")], None).await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with("/.portcullis/login"))
    );
    assert_eq!(b.get("/.portcullis/api/whoami").await.status, 401);
    assert_eq!(b.get("/.portcullis/api/sessions").await.status, 401);
    assert_eq!(ups.globex.count(), 0, "globex's app saw a request with acme's session");
    gw.await_security_event("cross_tenant", |e| e["organization.id"] == "globex")
        .await;

    // A prod cookie on the staging tenant, under either cookie name.
    let mut st = Agent::new(&gw, "initech.test");
    for name in ["__Host-portcullis-prod", "__Host-portcullis-staging"] {
        st.cookies.clear();
        st.cookies.insert(name.into(), acme_token.clone());
        assert_eq!(st.get(PROTECTED).await.status, 401, "{name}");
        assert_eq!(st.get("/.portcullis/api/whoami").await.status, 401, "{name}");
    }
    // And a staging cookie on a prod tenant.
    let mut p = Agent::new(&gw, "acme.test");
    for name in ["__Host-portcullis-staging", "__Host-portcullis-prod"] {
        p.cookies.clear();
        p.cookies.insert(name.into(), staging_token.clone());
        assert_eq!(p.get(PROTECTED).await.status, 401, "{name}");
    }
    assert_eq!(ups.initech.count(), initech_before, "staging app saw a prod session");
    assert_eq!(ups.acme.count(), 0, "acme's app saw a staging session");
    // acme's credentials and pre-MFA state mean nothing on globex.
    let mut g = Agent::new(&gw, "globex.test");
    let r = g.api_password_step(&olga, None).await;
    assert_eq!(r.status, 401, "acme's user signed in on globex: {}", r.body);
    let mut pre = Agent::new(&gw, "acme.test");
    assert_eq!(pre.api_password_step(&olga, None).await.status, 200);
    let pre_value = pre.cookies.get("__Host-portcullis-prod-pre").cloned().expect("pre");
    g.cookies.insert("__Host-portcullis-prod-pre".into(), pre_value);
    let code = olga.fresh_code().await;
    let r = g.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_eq!(r.status, 401, "acme's pre-MFA cookie worked on globex: {}", r.body);
    assert!(g.session("prod").is_none());
    assert_eq!(ups.globex.count(), 0);

    // The rightful sessions still work.
    assert_eq!(a.get(PROTECTED).await.status, 200);
}

/// SPEC "Details": if this broke, an attacker able to add a cookie (a sibling subdomain,
/// a cookie-injection bug) could make the gateway pick a session of their choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_session_cookies_in_one_request_count_as_none() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let pia = accounts.create("acme", "pia", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&pia).await;
    let token = a.session("prod").expect("token");
    let other = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let variants = [
        format!("__Host-portcullis-prod={token}; __Host-portcullis-prod={token}"),
        format!("__Host-portcullis-prod={token}; __Host-portcullis-prod={other}"),
        format!("__Host-portcullis-prod={other}; a=1; __Host-portcullis-prod={token}"),
    ];
    for cookie in &variants {
        let r = a.send(Method::GET, PROTECTED, &[("cookie", cookie)], None).await;
        assert_eq!(r.status, 401, "{cookie}");
        let r = a
            .send(Method::GET, "/.portcullis/api/whoami", &[("cookie", cookie)], None)
            .await;
        assert_eq!(r.status, 401, "{cookie}");
    }
    // Two Cookie header lines (raw HTTP/1.1).
    let req = format!(
        "GET {PROTECTED} HTTP/1.1\r\nHost: acme.test\r\nCookie: __Host-portcullis-prod={token}\r\nCookie: __Host-portcullis-prod={other}\r\nConnection: close\r\n\r\n"
    );
    let resp = raw(gw.public, req.as_bytes()).await.remove(0);
    assert_eq!(resp.status, 401);
    assert_eq!(ups.acme.count(), 0, "the upstream saw an ambiguous-session request");
    // One cookie is fine.
    assert_eq!(a.get(PROTECTED).await.status, 200);
}

/// SPEC "Details": if this broke, a second `Cookie` line that the gateway skipped (not
/// valid UTF-8, or UTF-8 beyond ASCII) would hide a second session cookie, so an attacker
/// able to add a cookie could pick the session again, or smuggle a gateway cookie past the
/// stripping to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_line_the_gateway_cannot_read_never_picks_a_session() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let uma = accounts.create("acme", "uma", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&uma).await;
    let token = a.session("prod").expect("token");
    let other = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let request = |target: &str, second_line: &[u8]| {
        let mut req =
            format!("GET {target} HTTP/1.1\r\nHost: acme.test\r\nCookie: __Host-portcullis-prod={token}\r\nCookie: ")
                .into_bytes();
        req.extend_from_slice(second_line);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        req
    };
    let invalid = [b"x=\xff; __Host-portcullis-prod=".as_slice(), other.as_bytes()].concat();
    let invalid_before = [b"__Host-portcullis-prod=".as_slice(), other.as_bytes(), b"; y=\xc3\x28"].concat();
    // Not UTF-8: refused outright, on protected and public paths alike.
    for line in [&invalid, &invalid_before] {
        for target in [PROTECTED, "/public/x"] {
            let resp = raw(gw.public, &request(target, line)).await.remove(0);
            assert_eq!(resp.status, 400, "{target} {}", String::from_utf8_lossy(line));
        }
    }
    assert_eq!(
        ups.acme.count(),
        0,
        "the upstream saw a request with an unreadable Cookie line"
    );
    // UTF-8 beyond ASCII is read like any other line: two session cookies, no session.
    let utf8 = format!("pref=Jos\u{e9}; __Host-portcullis-prod={other}");
    let resp = raw(gw.public, &request(PROTECTED, utf8.as_bytes())).await.remove(0);
    assert_eq!(resp.status, 401);
    assert_eq!(ups.acme.count(), 0, "served as a session despite two session cookies");
    // On a public path it is forwarded, without any gateway cookie.
    let resp = raw(gw.public, &request("/public/x", utf8.as_bytes())).await.remove(0);
    assert_eq!(resp.status, 200);
    let seen = ups.acme.only();
    let cookies = seen.header_all("cookie").join("; ");
    assert!(!cookies.to_ascii_lowercase().contains("portcullis"), "{cookies}");
    assert!(cookies.contains("pref=Jos\u{e9}"), "{cookies}");
    // One cookie is still fine.
    assert_eq!(a.get(PROTECTED).await.status, 200);
}

/// SES-07: if this broke, a session left alone on a shared computer would stay usable
/// past the idle timeout, or activity could keep a session alive forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_absolute_timeouts_end_sessions() {
    let (ups, gw) = start_with(|f| f.tenant_mut("acme").session_timeouts = ("4s".into(), "9s".into())).await;
    let accounts = Accounts::open(&gw).await;
    let quinn = accounts.create("acme", "quinn", &[], true).await;
    let rosa = accounts.create("acme", "rosa", &[], true).await;

    // Active: every 1.5 s, kept alive past the idle timeout, but not past the absolute one.
    let mut active = Agent::new(&gw, "acme.test");
    active.api_login(&quinn).await;
    let t0 = std::time::Instant::now();
    let mut idle = Agent::new(&gw, "acme.test");
    idle.api_login(&rosa).await;
    let t_idle = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        assert_eq!(active.get(PROTECTED).await.status, 200, "at {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // The idle session saw no request for more than 4 s.
    assert!(t_idle.elapsed() > Duration::from_secs(5));
    assert_eq!(idle.get(PROTECTED).await.status, 401, "idle session still alive");
    let seen = ups.acme.count();
    while t0.elapsed() < Duration::from_secs(10) {
        let _ = active.get("/.portcullis/api/whoami").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert_eq!(
        active.get(PROTECTED).await.status,
        401,
        "activity extended the absolute lifetime"
    );
    assert_eq!(ups.acme.count(), seen);
}

/// SES-03: if this broke, forged or mangled cookies could crash the gateway or be
/// taken for sessions, or a session id in the URL or an Authorization header would work
/// (and leak into logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cookies_and_tokens_elsewhere_are_anonymous() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let sam = accounts.create("acme", "sam", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&sam).await;
    let token = a.session("prod").expect("token");
    let mut flipped = token.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let variants = [
        token[..42].to_string(),
        format!("{token}A"),
        flipped,
        "!!!!not-base64!!!!".to_string(),
        format!("{token}=="),
        "\"".to_string() + &token + "\"",
        "x".repeat(60_000),
    ];
    let mut anon = Agent::new(&gw, "acme.test");
    for v in &variants {
        anon.cookies.clear();
        anon.cookies.insert("__Host-portcullis-prod".into(), v.clone());
        let r = anon.get(PROTECTED).await;
        assert!(r.status == 401 || r.status == 431, "{:.20}: {}", v, r.status);
    }
    anon.cookies.clear();
    let r = anon.get(&format!("{PROTECTED}?portcullis-prod={token}")).await;
    assert_eq!(r.status, 401);
    let r = anon
        .get(&format!("/.portcullis/api/whoami?__Host-portcullis-prod={token}"))
        .await;
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {token}");
    let r = anon
        .send(Method::GET, PROTECTED, &[("authorization", &bearer)], None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(ups.acme.count(), 0);
    // SES-14: neither the token, the password nor the codes appear in the logs.
    let logs = gw.logs();
    assert!(!logs.contains(&token), "session token in the gateway logs");
    assert!(!logs.contains(&sam.password), "password in the gateway logs");
}
