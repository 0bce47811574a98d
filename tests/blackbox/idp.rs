//! A real OpenID Connect provider for the SSO tests: `tests/idp/server.mjs` (npm
//! `oidc-provider`) run by node, one process per [`Idp`], started with accounts on a
//! port of its own ([`Idp::bind`]) and given clients after ([`Idp::register`]).
//! [`Idp::login`] scripts the IdP's sign-in over plain HTTP (no browser),
//! [`Idp::backchannel_logout`] ends an account's IdP sessions and makes the IdP POST a
//! `logout_token` to each client's `backchannel_logout_uri`.
//!
//! Needs node on PATH and `npm ci --prefix tests/idp` (done by `.ci/run`); the tests
//! fail with a message saying so otherwise. The gateway's SSO tests (`sso.rs`) build on
//! `Idp`; the one test here only checks that the fixture starts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// An IdP account; it signs in with `username = sub`.
#[derive(Debug, Clone)]
pub struct Account {
    pub sub: String,
    pub password: String,
    pub email: String,
    pub name: String,
    /// The `groups` claim.
    pub groups: Vec<String>,
    /// The `amr` claim of its ID tokens, e.g. `["pwd", "otp"]` for an IdP-side MFA.
    pub amr: Vec<String>,
}

impl Account {
    /// `sub@example.test`, no groups, `amr = ["pwd"]`.
    pub fn new(sub: &str, password: &str) -> Self {
        Account {
            sub: sub.into(),
            password: password.into(),
            email: format!("{sub}@example.test"),
            name: format!("User {sub}"),
            groups: vec![],
            amr: vec!["pwd".into()],
        }
    }

    pub fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    pub fn amr(mut self, amr: &[&str]) -> Self {
        self.amr = amr.iter().map(|m| m.to_string()).collect();
        self
    }
}

/// A relying party registered at the IdP (the gateway's tenant, or a test).
#[derive(Debug, Clone)]
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    /// With it, ID tokens carry `sid` and the IdP sends back-channel logouts.
    pub backchannel_logout_uri: Option<String>,
}

impl IdpClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        IdpClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            backchannel_logout_uri: None,
        }
    }

    pub fn backchannel_logout_uri(mut self, uri: &str) -> Self {
        self.backchannel_logout_uri = Some(uri.into());
        self
    }
}

/// One running `oidc-provider` on `http://127.0.0.1:<port>`; killed on drop.
pub struct Idp {
    child: Child,
    /// The port the provider bound (it picks it: see [`Idp::bind`]).
    port: u16,
    /// Where the clients go; taken by [`Idp::register`].
    stdin: Option<ChildStdin>,
    /// The provider's stdout, line by line.
    lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Fails (never skips) when node or the npm packages are missing.
fn check_prerequisites() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the SSO tests need `node` (Node.js 20+) on PATH: {node:?}"
    );
    let module = idp_dir().join("node_modules/oidc-provider");
    assert!(
        module.is_dir(),
        "{} is missing: run `npm ci --prefix tests/idp` first",
        module.display()
    );
}

impl Idp {
    /// Starts a provider with these accounts on a port the OS picks, and waits for its
    /// `LISTENING <port>` line. It has no clients yet and answers nothing until
    /// [`Idp::register`]: a test first configures the gateway with [`Idp::issuer`], then
    /// registers the gateway's callback on the port the gateway bound.
    pub fn bind(accounts: &[Account]) -> Idp {
        check_prerequisites();
        let config = json!({
            "accounts": accounts.iter().map(|a| json!({
                "sub": a.sub, "password": a.password, "email": a.email, "name": a.name,
                "groups": a.groups, "amr": a.amr,
            })).collect::<Vec<_>>(),
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("idp.json");
        std::fs::write(&config_path, config.to_string()).expect("write idp.json");
        let stderr = std::fs::File::create(dir.path().join("idp.stderr")).expect("idp.stderr");
        let mut child = Command::new("node")
            .arg(idp_dir().join("server.mjs"))
            .arg(&config_path)
            .current_dir(idp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take();
        // Reads stdout to its end (so node never blocks on a full pipe), passing lines on.
        let stdout = child.stdout.take().expect("node stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut idp = Idp {
            child,
            port: 0,
            stdin,
            lines,
            dir,
        };
        let port = idp.wait_for_line("LISTENING ");
        idp.port = port
            .parse()
            .unwrap_or_else(|_| panic!("IdP printed `LISTENING {port}`\n{}", idp.logs()));
        idp
    }

    /// Registers the provider's clients (once) and waits until it serves (`READY`).
    pub fn register(&mut self, clients: &[IdpClient]) {
        let line = json!({
            "clients": clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": c.redirect_uris,
                "backchannel_logout_uri": c.backchannel_logout_uri,
            })).collect::<Vec<_>>(),
        });
        let mut stdin = self.stdin.take().expect("clients are registered once");
        writeln!(stdin, "{line}").expect("send the clients to the IdP");
        self.wait_for_line("READY");
    }

    /// The rest of the first stdout line starting with `prefix`; panics with the IdP's
    /// log when it exits or 20 s pass first.
    fn wait_for_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the IdP did not print `{prefix}`:\n{}", self.logs());
    }

    /// `http://127.0.0.1:<port>`, also the base of every endpoint.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What node wrote on stderr (warnings, failed back-channel deliveries, errors).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("idp.stderr")).unwrap_or_default()
    }

    /// Signs `username` in at the IdP, starting from the client's authorization request:
    /// follows the IdP's redirects and submits its login form with a fresh cookie jar,
    /// and returns the first redirect that leaves the IdP (to the client's
    /// `redirect_uri`, with `code` and `state`, or with `error` if the IdP refused the
    /// request) without following it. Err for a refused password or anything unexpected.
    pub async fn login(&self, authorize_url: &str, username: &str, password: &str) -> Result<String, String> {
        self.follow(authorize_url, (username, password)).await
    }

    /// Ends every IdP session of `sub` (test hook `POST /test/logout/<sub>`): the IdP
    /// POSTs a `logout_token` to the `backchannel_logout_uri` of each client the account
    /// signed in to, before this returns. Returns the hook's report:
    /// `{"sessions": n, "notified": [{"client_id", "sid"}], "errors": [...]}`.
    pub async fn backchannel_logout(&self, sub: &str) -> Value {
        let url = format!("{}/test/logout/{sub}", self.issuer());
        let resp = reqwest::Client::new().post(&url).send().await.expect("IdP logout hook");
        assert!(resp.status().is_success(), "{url}: {}\n{}", resp.status(), self.logs());
        resp.json().await.expect("logout hook JSON")
    }

    /// The browser part of a flow at the IdP: GET `url`, follow redirects within the IdP,
    /// submit the forms it answers (login form once with `credentials`, auto-submitted
    /// forms as they are), stop at the first redirect to another origin.
    async fn follow(&self, url: &str, credentials: (&str, &str)) -> Result<String, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let issuer = Url::parse(&self.issuer()).map_err(|e| e.to_string())?;
        let mut jar: HashMap<String, String> = HashMap::new();
        let mut url = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let mut form: Option<Vec<(String, String)>> = None;
        let mut submitted_password = false;
        for _ in 0..10 {
            if url.origin() != issuer.origin() {
                return Ok(url.to_string());
            }
            let cookies = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let request = match form.take() {
                Some(fields) => http.post(url.clone()).form(&fields),
                None => http.get(url.clone()),
            };
            let resp = request
                .header(COOKIE, cookies)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            for set in resp.headers().get_all(SET_COOKIE) {
                let pair = set.to_str().unwrap_or("").split(';').next().unwrap_or("");
                if let Some((name, value)) = pair.split_once('=') {
                    if value.is_empty() {
                        jar.remove(name.trim());
                    } else {
                        jar.insert(name.trim().into(), value.into());
                    }
                }
            }
            let status = resp.status();
            if status.is_redirection() {
                let location = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("");
                url = url.join(location).map_err(|e| format!("Location {location}: {e}"))?;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            let Some((action, mut fields)) = parse_form(&body).filter(|_| status.is_success()) else {
                return Err(format!("{status} from {url}: {body}"));
            };
            if body.contains(r#"name="password""#) {
                if submitted_password {
                    return Err(format!("login refused at {url}: {body}"));
                }
                let (user, password) = credentials;
                fields.push(("username".into(), user.into()));
                fields.push(("password".into(), password.into()));
                submitted_password = true;
            }
            url = url.join(&action).map_err(|e| format!("form action {action}: {e}"))?;
            form = Some(fields);
        }
        Err(format!("too many steps at the IdP, last at {url}"))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first form of an IdP page: its action and hidden inputs (the IdP's own simple
/// HTML: attributes in double quotes).
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form = &html[html.find("<form")?..];
    let form = &form[..form.find("</form>").unwrap_or(form.len())];
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].replace("&amp;", "&"))
    };
    let action = attr(form, "action")?;
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = &input[..input.find('>')?];
            (attr(tag, "type").as_deref() == Some("hidden")).then_some(())?;
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect();
    Some((action, fields))
}

/// The payload of a JWT, not verified (the tests read what was issued).
pub fn jwt_payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("JWT payload part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload")).expect("JSON payload")
}

// ---------------------------------------------------------------------------------------
// The fixture itself
// ---------------------------------------------------------------------------------------

/// The provider starts, takes a client and serves discovery for the issuer the tests use.
/// If this failed, every SSO test would fail on the fixture (node, npm packages, the
/// provider's configuration), not on the gateway; this test names that cause.
#[tokio::test]
async fn the_fixture_serves_discovery_for_its_issuer() {
    let mut idp = Idp::bind(&[Account::new("alice", "alice-pw")]);
    idp.register(&[IdpClient::new("gw", "gw-secret", "http://127.0.0.1:9/callback")]);
    let url = format!("{}/.well-known/openid-configuration", idp.issuer());
    let discovery: Value = reqwest::get(&url).await.expect("discovery").json().await.expect("JSON");
    assert_eq!(discovery["issuer"], idp.issuer(), "{discovery:#}\n{}", idp.logs());
}
