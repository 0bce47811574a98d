//! The account commands (SPEC "CLI": `portcullis user add|list|reset-mfa`) run as their
//! own process on the store of a running gateway, as an operator runs them.

use serde_json::json;

use crate::harness::*;

const PASSWORD: &str = "dana-correct-horse-battery";

/// Runs `portcullis <args> --config <the gateway's policy>` as operator `olivia`, with
/// `stdin` as standard input; returns (success, stdout, stderr).
async fn portcullis(gw: &Gateway, args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&gw.policy_dir)
        .env("USER", "olivia")
        .env_remove("PORTCULLIS_NEW_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the portcullis CLI");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("CLI output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of `user list --tenant acme` for `username`.
async fn listed(gw: &Gateway, username: &str) -> Option<String> {
    let (ok, out, err) = portcullis(gw, &["user", "list", "--tenant", "acme"], "").await;
    assert!(ok, "user list: {err}");
    out.lines()
        .find(|l| l.split('\t').next() == Some(username))
        .map(str::to_string)
}

/// If this broke, an operator could not give a tenant its first local account (or would
/// create one that cannot sign in, with a weak password, or unaudited), and a reset of a
/// lost authenticator would leave the old one, or the sessions it opened, working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_and_reset_mfa_work_on_a_running_gateway() {
    let (_ups, gw) = start().await;
    let add = [
        "user",
        "add",
        "--tenant",
        "acme",
        "--username",
        "dana",
        "--name",
        "Dana Scully",
        "--role",
        "tenant-admin",
    ];

    // A weak password is refused, without echoing it, and creates nothing.
    let (ok, out, err) = portcullis(&gw, &add, "Zq7!sho\n").await;
    assert!(!ok, "a short password was accepted: {out}");
    assert!(err.contains("password must be at least"), "{err}");
    assert!(!err.contains("Zq7!sho"), "{err}");
    assert_eq!(listed(&gw, "dana").await, None);

    let (ok, out, err) = portcullis(&gw, &add, &format!("{PASSWORD}\n")).await;
    assert!(ok, "user add: {err}");
    assert_eq!(out, "created dana in acme; TOTP is set up at the first sign-in\n");
    assert_eq!(
        listed(&gw, "dana").await.as_deref(),
        Some("dana\tDana Scully\troles=tenant-admin\tmfa=not enrolled")
    );
    let (ok, _, err) = portcullis(&gw, &add, &format!("{PASSWORD}\n")).await;
    assert!(!ok, "a taken name was created again");
    assert!(err.contains("already exists"), "{err}");

    // The running gateway signs the new account in: enrolment first, then MFA.
    let dana = TestUser::known("acme", "prod", "dana", PASSWORD, "");
    let mut browser = Agent::new(&gw, "acme.test");
    let r = browser.api_password_step(&dana, None).await;
    assert_eq!(r.json()["next"], "enrol", "{}", r.body);
    let r = browser.get("/.portcullis/api/enrol").await;
    assert_eq!(r.status, 200, "{}", r.body);
    dana.set_secret(r.json()["secret"].as_str().expect("secret"));
    let code = dana.fresh_code().await;
    let r = browser
        .post_json("/.portcullis/api/enrol", &json!({ "code": code }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let whoami = browser.get("/.portcullis/api/whoami").await.json();
    assert_eq!(
        (&whoami["subject"], &whoami["roles"]),
        (&json!("dana"), &json!(["tenant-admin"]))
    );
    assert_eq!(
        listed(&gw, "dana").await.as_deref(),
        Some("dana\tDana Scully\troles=tenant-admin\tmfa=totp")
    );

    // Reset: the session it opened ends, and the next sign-in enrols again.
    let (ok, out, err) = portcullis(
        &gw,
        &["user", "reset-mfa", "--tenant", "acme", "--username", "dana"],
        "",
    )
    .await;
    assert!(ok, "user reset-mfa: {err}");
    assert_eq!(out, "reset MFA of dana in acme; ended 1 sessions\n");
    let cookie = format!("__Host-portcullis-prod={}", browser.session("prod").expect("session"));
    let ended = eventually(std::time::Duration::from_secs(3), || async {
        let r = gw
            .client()
            .get(gw.host_url("acme.test", "/.portcullis/api/whoami"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        (r.status() == 401).then_some(())
    })
    .await;
    assert!(ended.is_some(), "the session outlived the MFA reset");
    let mut again = Agent::new(&gw, "acme.test");
    assert_eq!(again.api_password_step(&dana, None).await.json()["next"], "enrol");
    let (ok, _, err) = portcullis(
        &gw,
        &["user", "reset-mfa", "--tenant", "acme", "--username", "nobody"],
        "",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no user `nobody` in acme"), "{err}");

    let (ok, _, err) = portcullis(&gw, &["sessions", "revoke", "--tenant", "acme", "--user", "dana"], "").await;
    assert!(ok, "sessions revoke: {err}");

    // Every change is in the tier's audit log, by the operator, through the CLI.
    let (ok, out, err) = portcullis(&gw, &["audit", "export", "--tier", "prod"], "").await;
    assert!(ok, "audit export: {err}");
    let records: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str(),
                r["actor"].as_str(),
                r["system"].as_str(),
                r["target"].as_str(),
            )
        })
        .collect();
    let by_olivia = |action, target| (Some(action), Some("cli:olivia"), Some("cli"), Some(target));
    assert_eq!(
        actions,
        [
            by_olivia("user.create", "account:acme:dana"),
            by_olivia("user.mfa_reset", "account:acme:dana"),
            by_olivia("session.revoke", "tenant:acme"),
        ],
        "{out}"
    );
    let revoke = &records[2];
    assert_eq!(
        (
            &revoke["source_ip"],
            &revoke["tenant"],
            &revoke["tier"],
            &revoke["reason"]
        ),
        (&json!("-"), &json!("acme"), &json!("prod"), &json!(""))
    );
    assert_eq!(
        (&revoke["before"], &revoke["after"]),
        (&json!(null), &json!({"sessions_ended": 0}))
    );
    assert!(!out.contains(PASSWORD));
}
