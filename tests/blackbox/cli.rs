//! The account commands (SPEC "CLI": `portcullis user add|list|reset-mfa`) run as their
//! own process on the store of a running gateway, as an operator runs them.

use serde_json::json;

use crate::harness::*;

const PASSWORD: &str = "dana-correct-horse-battery";

/// Runs `portcullis <args> --config <the gateway's policy>` as operator `olivia`, with
/// `stdin` as standard input; returns (success, stdout, stderr).
pub(crate) async fn portcullis(gw: &Gateway, args: &[&str], stdin: &str) -> (bool, String, String) {
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

/// The time of a list field `created=2026-12-06 17:03 UTC (just now)`: asserts the
/// shape and that it names a moment within two minutes of now; returns the `(...)` part.
fn listed_time(line: &str, field: &str) -> String {
    let value = line
        .split('\t')
        .find_map(|f| f.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("no {field}= in {line:?}"));
    let (stamp, relative) = value
        .split_once(" UTC (")
        .unwrap_or_else(|| panic!("{field} is not `date time UTC (...)`: {value:?}"));
    let (date, time) = stamp.split_once(' ').expect("date and time");
    let at = humantime::parse_rfc3339(&format!("{date}T{time}:00Z"))
        .unwrap_or_else(|e| panic!("{field}: {stamp:?} is not YYYY-MM-DD HH:MM: {e}"));
    let off = std::time::SystemTime::now().duration_since(at).unwrap_or_default();
    assert!(
        off < std::time::Duration::from_secs(120),
        "{field} is {off:?} off: {value}"
    );
    relative.trim_end_matches(')').to_string()
}

/// If this broke, an operator listing an empty tenant would see nothing and wonder
/// whether the command worked, and times would read as raw unix seconds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_say_when_they_are_empty_and_show_readable_times() {
    let (_ups, gw) = start().await;
    let (ok, out, err) = portcullis(&gw, &["sessions", "list", "--tenant", "acme"], "").await;
    assert!(ok, "sessions list: {err}");
    assert_eq!(out, "", "the message is not a row of the list");
    assert_eq!(err, "no live sessions in tenant acme\n");
    let (ok, out, err) = portcullis(&gw, &["breaker", "list"], "").await;
    assert!(ok, "breaker list: {err}");
    assert_eq!((out.as_str(), err.as_str()), ("", "no tripped breakers\n"));
    let (ok, out, err) = portcullis(&gw, &["user", "list", "--tenant", "globex"], "").await;
    assert!(ok, "user list: {err}");
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("", "no local accounts in tenant globex\n")
    );

    Accounts::open(&gw).await.insert_sessions("acme", 1).await;
    let (ok, out, err) = portcullis(&gw, &["sessions", "list", "--tenant", "acme"], "").await;
    assert!(ok, "sessions list: {err}");
    assert_eq!(err, "", "a list with rows says nothing more");
    let line = out.lines().next().expect("one session");
    assert_eq!(listed_time(line, "created"), "just now");
    assert_eq!(listed_time(line, "last_seen"), "just now");

    let trip = [
        "breaker",
        "trip",
        "--tenant",
        "acme",
        "--reason",
        "drill",
        "--expires",
        "2h",
    ];
    let (ok, _, err) = portcullis(&gw, &trip, "").await;
    assert!(ok, "breaker trip: {err}");
    let (ok, out, err) = portcullis(&gw, &["breaker", "list"], "").await;
    assert!(ok, "breaker list: {err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("tenant:acme"))
        .expect("the trip is listed");
    assert_eq!(listed_time(line, "tripped_at"), "just now");
    let expires = line
        .split('\t')
        .find_map(|f| f.strip_prefix("expires_at="))
        .expect("expires_at");
    assert!(
        expires.ends_with(" UTC (in 2 hours)") || expires.ends_with(" UTC (in 1 hour)"),
        "{expires}"
    );
}

/// If this broke, `user add` would ask for a password for a name no one can sign in
/// with, or answer a taken name with a store error; either way something could change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_refuses_bad_and_taken_names_and_changes_nothing() {
    let (_ups, gw) = start().await;
    let add = |username: &'static str| ["user", "add", "--tenant", "acme", "--username", username];
    for (bad, why) in [
        ("al|ice", "--username: user name must not contain '|'"),
        ("", "--username: user name must be 1 to 256 printable characters"),
        (
            "al\u{7}ice",
            "--username: user name must be 1 to 256 printable characters",
        ),
    ] {
        let (ok, out, err) = portcullis(&gw, &add(bad), &format!("{PASSWORD}\n")).await;
        assert!(!ok, "{bad:?} was accepted: {out}");
        assert_eq!(err, format!("error: {why}\n"), "{bad:?}");
    }
    let (ok, _, err) = portcullis(&gw, &add("erin"), &format!("{PASSWORD}\n")).await;
    assert!(ok, "user add: {err}");
    let before = listed(&gw, "erin").await;
    let (ok, out, err) = portcullis(&gw, &add("erin"), "another-long-password-1\n").await;
    assert!(!ok, "a taken name was created again: {out}");
    assert_eq!(err, "error: user erin already exists in tenant acme\n");
    assert_eq!(listed(&gw, "erin").await, before);
    let (ok, out, err) = portcullis(&gw, &["user", "list", "--tenant", "acme"], "").await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "only erin: {out}");
    let (_, audit, _) = portcullis(&gw, &["audit", "export", "--tier", "prod"], "").await;
    assert_eq!(audit.matches("\"user.create\"").count(), 1, "{audit}");
}

/// Runs `portcullis <args>` with no gateway; returns (success, stdout, stderr).
fn offline(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run the portcullis CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// If this broke, `keys init` could overwrite a tier's live keys (every session and
/// assertion of the tier would die with them) or write outside the policy directory.
/// (The README's walk-through test runs the happy path into a working gateway.)
#[test]
fn keys_init_writes_a_tiers_keys_once_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policies");
    let config_arg = config.to_str().unwrap();
    let (ok, out, err) = offline(&["keys", "init", "--tier", "prod", "--config", config_arg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("[keys]\ncookie = \"file:secrets/prod-cookie.key\""),
        "{out}"
    );
    let assertion = config.join("secrets/prod-assertion.pem");
    let pem = std::fs::read_to_string(&assertion).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "a PKCS#8 PEM");
    assert!(!out.contains(pem.lines().nth(1).unwrap()), "the key is not printed");

    let (ok, _, err) = offline(&["keys", "init", "--tier", "prod", "--config", config_arg]);
    assert!(!ok && err.contains("exists already"), "{err}");
    assert_eq!(std::fs::read_to_string(&assertion).unwrap(), pem, "kept as it was");

    let (ok, _, err) = offline(&["keys", "init", "--tier", "../escape", "--config", config_arg]);
    assert!(!ok && err.contains("not a tier name"), "{err}");
    assert!(!dir.path().join("escape-cookie.key").exists());
}

/// If this broke, an operator could be handed a token whose printed hash never
/// matches, or a name that breaks the tier file it is pasted into.
#[test]
fn operator_token_prints_a_token_and_the_entry_that_accepts_it() {
    let (ok, out, err) = offline(&["operator", "token", "--name", "olivia"]);
    assert!(ok, "{err}");
    let token = out
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("token for olivia"))
        .find(|l| !l.is_empty() && !l.starts_with("token for"))
        .expect("the token line");
    assert_eq!(token.len(), 43, "{out}");
    let entry: toml::Table = out[out.find("[[operators]]").expect("the entry")..]
        .parse()
        .expect("the entry is TOML");
    let op = &entry["operators"][0];
    assert_eq!(op["name"].as_str(), Some("olivia"));
    assert_eq!(op["token_sha256"].as_str(), Some(sha256_hex(token.as_bytes()).as_str()));
    let (_, again, _) = offline(&["operator", "token", "--name", "olivia"]);
    assert_ne!(again, out, "a new token each time");

    for bad in ["", "  ", "ol\"ivia", "a\\b"] {
        let (ok, _, err) = offline(&["operator", "token", "--name", bad]);
        assert!(!ok && err.contains("--name"), "{bad:?}: {err}");
    }
}
