//! The SSO wizard in a real browser (issue 15's acceptance test): a new tenant admin of
//! initech signs in (password + TOTP), opens the wizard page and connects the real
//! `oidc-provider` of [`crate::idp`] through it, with the wrong issuer, the wrong client
//! secret and an edit after a passing test on the way, activates, and a user of the
//! tenant then signs in through SSO; then a second version (the other client) and a
//! roll-back to the first, which the next SSO sign-in uses. Driven by `tests/browser/wizard.mjs`
//! (playwright-core, Debian's Chromium), which times the wizard (target under two
//! minutes, printed as `[wizard] wall time: X.Y s`), screenshots every step into
//! `target/browser-screenshots/wizard/`, runs axe-core on the wizard page and checks it
//! at phone width. This side sets up the IdP, the gateway and the admin account, and
//! checks afterwards that the secrets never reached the gateway's log.
//!
//! The tenant's first host is `initech.localhost`, which Chromium resolves to loopback
//! by itself, so the callback the IdP redirects to reaches the gateway.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::browser::run_node_script;
use crate::harness::*;
use crate::idp::{Account, Idp, IdpClient};

const HOST: &str = "initech.localhost";
const SECRET_A: &str = "wizard-browser-alpha-41c9";
const SECRET_B: &str = "wizard-browser-bravo-7e02";
const WRONG_SECRET: &str = "wizard-browser-wrong-d5b3";
const ADMIN_GROUP: &str = "initech-admins";

/// Two TOTP steps at most (the admin's sign-in) plus the wizard's two minutes.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The wizard's steps wizard.mjs must leave a screenshot of (a few of many).
const SCREENSHOTS: [&str; 8] = [
    "01-admin.png",
    "02-wizard.png",
    "03-wrong-issuer.png",
    "04-discovery.png",
    "09-test-failed-tab.png",
    "16-activated.png",
    "17-sso-user-signed-in.png",
    "21-rolled-back.png",
];

/// If this broke, a tenant admin could not connect their IdP through the wizard page
/// alone (a step missing, unlabelled or unreachable by keyboard, an error not tied to its
/// field), could activate an untested or failing configuration, would see the client
/// secret again, or the tenant's users could not sign in through the activated version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_admin_connects_the_idp_through_the_wizard_in_a_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests").join("browser");
    for module in ["playwright-core", "axe-core"] {
        assert!(
            browser_dir.join("node_modules").join(module).is_dir(),
            "{module} is missing: run `npm ci` in tests/browser (bash .ci/run does)"
        );
    }
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install -y chromium` (bash .ci/run does)"
    );
    let out = root.join("target").join("browser-screenshots").join("wizard");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("create screenshot folder");

    let idp_bound = Idp::bind(&[
        Account::new("ivy", "pw-ivy")
            .groups(&[ADMIN_GROUP])
            .amr(&["pwd", "otp"]),
        Account::new("una", "pw-una").amr(&["pwd", "otp"]),
    ]);
    let (_ups, gw) = start_with(|f| {
        // The canonical callback is on the tenant's first host.
        f.tenant_mut("initech").hosts.insert(0, HOST.into());
    })
    .await;
    let mut idp = idp_bound;
    let origin = format!("http://{HOST}:{}", gw.public.port());
    let callback = format!("{origin}/.portcullis/callback");
    let logout = format!("{origin}/.portcullis/backchannel-logout");
    idp.register(&[
        IdpClient::new("gw-a", SECRET_A, &callback).backchannel_logout_uri(&logout),
        IdpClient::new("gw-b", SECRET_B, &callback).backchannel_logout_uri(&logout),
    ]);
    let users = Accounts::open(&gw).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;

    let config = json!({
        "origin": origin,
        "issuer": idp.issuer(),
        "redirect_uri": callback,
        "backchannel_logout_uri": logout,
        "admin": {
            "username": ina.username, "password": ina.password,
            "totp_secret": ina.totp_secret().expect("an enrolled admin"),
        },
        "clients": [
            {"client_id": "gw-a", "client_secret": SECRET_A},
            {"client_id": "gw-b", "client_secret": SECRET_B},
        ],
        "wrong_secret": WRONG_SECRET,
        "admin_group": ADMIN_GROUP,
        "idp_admin": {"username": "ivy", "password": "pw-ivy"},
        "idp_user": {"username": "una", "password": "pw-una"},
        "out_dir": out,
    });
    // Beside, not in, the screenshot folder: it holds the fixture's secrets.
    let tmp = tempfile::tempdir().expect("temp dir");
    let config_path = tmp.path().join("wizard.json");
    fs::write(&config_path, config.to_string()).expect("write wizard.json");

    let script = browser_dir.join("wizard.mjs");
    let log_path = out.join("wizard.log");
    let (status, output) = tokio::task::spawn_blocking(move || {
        run_node_script(&script, &[config_path.as_os_str()], &log_path, SCRIPT_TIMEOUT)
    })
    .await
    .expect("the script's runner");
    let status = status.unwrap_or_else(|| panic!("wizard.mjs did not finish in {SCRIPT_TIMEOUT:?}\n{output}"));
    assert!(
        status.success(),
        "wizard.mjs failed ({status}); screenshots in {}\n{output}\nIdP log:\n{}",
        out.display(),
        idp.logs()
    );
    let wall = output
        .lines()
        .find_map(|l| l.strip_prefix("[wizard] wall time: "))
        .and_then(|rest| rest.trim_end_matches(" s").parse::<f64>().ok())
        .unwrap_or_else(|| panic!("wizard.mjs printed no wall time\n{output}"));
    assert!(
        wall < 120.0,
        "the scripted wizard took {wall} s (target: under 2 minutes)"
    );
    for name in SCREENSHOTS {
        let path = out.join(name);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "screenshot {} is missing or empty", path.display());
    }
    let log = gw.stdout();
    for secret in [SECRET_A, SECRET_B, WRONG_SECRET] {
        assert!(!log.contains(secret), "{secret} in the gateway's log");
    }
}
