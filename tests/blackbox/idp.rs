//! A real OpenID Connect provider for the SSO tests: `tests/idp/server.mjs` (npm
//! `oidc-provider`) run by node, one process per [`Idp`], configured with accounts and
//! clients. [`Idp::login`] scripts the IdP's sign-in over plain HTTP (no browser),
//! [`Idp::backchannel_logout`] ends an account's IdP sessions and makes the IdP POST a
//! `logout_token` to each client's `backchannel_logout_uri`.
//!
//! Needs node on PATH and `npm ci --prefix tests/idp` (done by `.ci/run`); the tests
//! fail with a message saying so otherwise. The tests here check the provider alone
//! (discovery, code + PKCE flow and the ID token claims, two independent IdPs,
//! back-channel and RP-initiated logout); the gateway's SSO tests build on `Idp`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Url;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{free_port, random_hex};

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
    pub post_logout_redirect_uris: Vec<String>,
    /// With it, ID tokens carry `sid` and the IdP sends back-channel logouts.
    pub backchannel_logout_uri: Option<String>,
    /// `client_secret_basic` (default) or `client_secret_post`: the IdP accepts only the
    /// registered method.
    pub auth_method: &'static str,
}

impl IdpClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        IdpClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: vec![],
            backchannel_logout_uri: None,
            auth_method: "client_secret_basic",
        }
    }

    pub fn backchannel_logout_uri(mut self, uri: &str) -> Self {
        self.backchannel_logout_uri = Some(uri.into());
        self
    }

    pub fn post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uris.push(uri.into());
        self
    }

    pub fn auth_method(mut self, method: &'static str) -> Self {
        self.auth_method = method;
        self
    }
}

/// One running `oidc-provider` on `http://127.0.0.1:<port>`; killed on drop.
pub struct Idp {
    child: Child,
    port: u16,
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
    /// Starts a provider with these accounts and clients and waits for `READY`.
    pub fn start(accounts: &[Account], clients: &[IdpClient]) -> Idp {
        check_prerequisites();
        let mut last_error = String::new();
        for _ in 0..3 {
            // free_port() can race with another test: retry on a new port.
            match Self::try_start(free_port(), accounts, clients) {
                Ok(idp) => return idp,
                Err(e) => last_error = e,
            }
        }
        panic!("the IdP did not start: {last_error}");
    }

    fn try_start(port: u16, accounts: &[Account], clients: &[IdpClient]) -> Result<Idp, String> {
        let config = json!({
            "port": port,
            "accounts": accounts.iter().map(|a| json!({
                "sub": a.sub, "password": a.password, "email": a.email, "name": a.name,
                "groups": a.groups, "amr": a.amr,
            })).collect::<Vec<_>>(),
            "clients": clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": c.redirect_uris,
                "post_logout_redirect_uris": c.post_logout_redirect_uris,
                "backchannel_logout_uri": c.backchannel_logout_uri,
                "token_endpoint_auth_method": c.auth_method,
            })).collect::<Vec<_>>(),
        });
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_path = dir.path().join("idp.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(dir.path().join("idp.stderr")).map_err(|e| e.to_string())?;
        let mut child = Command::new("node")
            .arg(idp_dir().join("server.mjs"))
            .arg(&config_path)
            .current_dir(idp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn node: {e}"))?;
        // Reads stdout to its end (so node never blocks on a full pipe), reporting READY.
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(());
                }
            }
        });
        let mut idp = Idp { child, port, dir };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(()) => Ok(idp),
            Err(_) => {
                let _ = idp.child.kill();
                let _ = idp.child.wait();
                Err(idp.logs())
            }
        }
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
        self.follow(authorize_url, Some((username, password))).await
    }

    /// RP-initiated logout: follows the IdP's end-session URL (as built by the client,
    /// with `id_token_hint`, `post_logout_redirect_uri`, `state`), confirms it, and
    /// returns the redirect to the `post_logout_redirect_uri`. Uses a fresh cookie jar,
    /// so it checks the request but ends no IdP session: use `backchannel_logout` for that.
    pub async fn end_session(&self, end_session_url: &str) -> Result<String, String> {
        self.follow(end_session_url, None).await
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
    /// submit the forms it answers (login form with `credentials`, auto-submitted forms
    /// as they are), stop at the first redirect to another origin.
    async fn follow(&self, url: &str, credentials: Option<(&str, &str)>) -> Result<String, String> {
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
                let (Some((user, password)), false) = (credentials, submitted_password) else {
                    return Err(format!("login refused at {url}: {body}"));
                };
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

/// The payload of a JWT, not verified (the tests read what the IdP issued).
pub fn jwt_payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("JWT payload part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url payload")).expect("JSON payload")
}

/// A PKCE pair: (code_verifier, S256 code_challenge).
pub fn pkce_pair() -> (String, String) {
    let verifier = random_hex(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

// ---------------------------------------------------------------------------------------
// The provider alone
// ---------------------------------------------------------------------------------------

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn alice() -> Account {
    Account::new("alice", "alice-pw")
        .groups(&["admins", "staff"])
        .amr(&["pwd", "mfa", "otp"])
}

fn bob() -> Account {
    Account::new("bob", "bob-pw").groups(&["staff"])
}

async fn discovery(idp: &Idp) -> Value {
    let url = format!("{}/.well-known/openid-configuration", idp.issuer());
    reqwest::get(&url)
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON")
}

fn query(url: &str) -> HashMap<String, String> {
    Url::parse(url).expect("URL").query_pairs().into_owned().collect()
}

/// What a relying party does: authorization request with PKCE, login at the IdP, code
/// exchange at the token endpoint. Returns the token response and the nonce.
async fn code_flow(idp: &Idp, client: &IdpClient, user: &Account) -> (Value, String) {
    let (verifier, challenge) = pkce_pair();
    let (state, nonce) = (random_hex(8), random_hex(8));
    let authorize = Url::parse_with_params(
        &format!("{}/auth", idp.issuer()),
        [
            ("response_type", "code"),
            ("client_id", &client.client_id),
            ("redirect_uri", &client.redirect_uris[0]),
            ("scope", "openid email profile groups"),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("authorize URL");
    let callback = idp
        .login(authorize.as_str(), &user.sub, &user.password)
        .await
        .expect("login");
    assert!(callback.starts_with(&client.redirect_uris[0]), "{callback}");
    let params = query(&callback);
    assert_eq!(params.get("state"), Some(&state), "{callback}");
    assert_eq!(params.get("iss"), Some(&idp.issuer()), "{callback}");
    let tokens = exchange(idp, client, &params["code"], &verifier).await;
    assert_eq!(tokens.0, 200, "token endpoint: {}", tokens.1);
    (tokens.1, nonce)
}

/// POSTs the code to `idp`'s token endpoint with `client`'s credentials.
async fn exchange(idp: &Idp, client: &IdpClient, code: &str, verifier: &str) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &client.redirect_uris[0]),
        ("code_verifier", verifier),
    ];
    let request = reqwest::Client::new().post(format!("{}/token", idp.issuer()));
    let request = if client.auth_method == "client_secret_post" {
        form.extend([
            ("client_id", &*client.client_id),
            ("client_secret", &client.client_secret),
        ]);
        request
    } else {
        request.basic_auth(&client.client_id, Some(&client.client_secret))
    };
    let resp = request.form(&form).send().await.expect("token request");
    (resp.status().as_u16(), resp.json().await.expect("token JSON"))
}

#[tokio::test]
async fn discovery_lists_the_endpoints_and_backchannel_logout() {
    let idp = Idp::start(&[alice()], &[IdpClient::new("gw", "gw-secret", REDIRECT)]);
    let d = discovery(&idp).await;
    let iss = idp.issuer();
    assert_eq!(d["issuer"], iss.as_str());
    for (key, path) in [
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/me"),
        ("end_session_endpoint", "/session/end"),
    ] {
        assert_eq!(d[key], format!("{iss}{path}"), "{key} in {d:#}");
    }
    assert_eq!(d["backchannel_logout_supported"], true, "{d:#}");
    assert_eq!(d["backchannel_logout_session_supported"], true, "{d:#}");
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]), "{d:#}");
    assert_eq!(d["response_types_supported"], json!(["code"]), "{d:#}");
    let jwks: Value = reqwest::get(format!("{iss}/jwks")).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "RS256", "{jwks:#}");
    assert!(jwks["keys"][0].get("d").is_none(), "private key published: {jwks:#}");
    let health: Value = reqwest::get(format!("{iss}/test/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"ok": true, "issuer": iss}));
}

#[tokio::test]
async fn code_flow_with_pkce_gives_the_account_claims_amr_and_sid() {
    let gw = IdpClient::new("gw", "gw-secret", REDIRECT).backchannel_logout_uri("http://127.0.0.1:9/bc");
    let post = IdpClient::new("post", "post-secret", REDIRECT).auth_method("client_secret_post");
    let idp = Idp::start(&[alice(), bob()], &[gw.clone(), post.clone()]);

    let (tokens, nonce) = code_flow(&idp, &gw, &alice()).await;
    let id = jwt_payload(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(id["iss"], idp.issuer());
    assert_eq!(id["aud"], "gw");
    assert_eq!(id["nonce"], nonce);
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["email"], "alice@example.test");
    assert_eq!(id["name"], "User alice");
    assert_eq!(id["groups"], json!(["admins", "staff"]));
    assert_eq!(id["amr"], json!(["pwd", "mfa", "otp"]));
    assert!(id["sid"].as_str().is_some_and(|s| !s.is_empty()), "no sid: {id:#}");

    // Single-factor account, client_secret_post client without back-channel logout.
    let (tokens, _) = code_flow(&idp, &post, &bob()).await;
    let id = jwt_payload(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!((id["sub"].as_str(), id["aud"].as_str()), (Some("bob"), Some("post")));
    assert_eq!(id["amr"], json!(["pwd"]));
    assert!(id.get("sid").is_none(), "sid without back-channel logout: {id:#}");

    // A wrong password is refused at the IdP; a request without PKCE never gets a code.
    let authorize = format!(
        "{}/auth?response_type=code&client_id=gw&redirect_uri={REDIRECT}&scope=openid&state=s",
        idp.issuer()
    );
    let (_, challenge) = pkce_pair();
    let with_pkce = format!("{authorize}&code_challenge={challenge}&code_challenge_method=S256");
    let err = idp.login(&with_pkce, "alice", "wrong").await.unwrap_err();
    assert!(err.contains("Wrong username or password"), "{err}");
    let no_pkce = idp
        .login(&authorize, "alice", "alice-pw")
        .await
        .expect("error redirect");
    let params = query(&no_pkce);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("invalid_request"),
        "{no_pkce}"
    );
    assert!(!params.contains_key("code"), "{no_pkce}");
}

#[tokio::test]
async fn two_idps_are_independent() {
    let client = IdpClient::new("gw", "gw-secret", REDIRECT);
    let one = Idp::start(&[alice()], std::slice::from_ref(&client));
    let two = Idp::start(&[alice()], std::slice::from_ref(&client));
    assert_ne!(one.issuer(), two.issuer());

    let (tokens, _) = code_flow(&two, &client, &alice()).await;
    assert_eq!(jwt_payload(tokens["id_token"].as_str().unwrap())["iss"], two.issuer());

    // A code of IdP one, exchanged at IdP two (same client id and secret): refused.
    let (verifier, challenge) = pkce_pair();
    let authorize = format!(
        "{}/auth?response_type=code&client_id=gw&redirect_uri={REDIRECT}&scope=openid&state=s\
         &code_challenge={challenge}&code_challenge_method=S256",
        one.issuer()
    );
    let callback = one.login(&authorize, "alice", "alice-pw").await.expect("login at one");
    let code = query(&callback)["code"].clone();
    let (status, body) = exchange(&two, &client, &code, &verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (status, body) = exchange(&one, &client, &code, &verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(jwt_payload(body["id_token"].as_str().unwrap())["iss"], one.issuer());
}

/// Answers 200 to one HTTP POST on 127.0.0.1 and hands over its body.
async fn one_post_receiver() -> (String, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/backchannel", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tx.send(body.to_string());
                    return;
                }
            }
        }
    });
    (url, rx)
}

#[tokio::test]
async fn backchannel_and_rp_initiated_logout() {
    let (receiver, body) = one_post_receiver().await;
    let done = "http://127.0.0.1:9/signed-out";
    let gw = IdpClient::new("gw", "gw-secret", REDIRECT)
        .backchannel_logout_uri(&receiver)
        .post_logout_redirect_uri(done);
    let idp = Idp::start(&[alice()], std::slice::from_ref(&gw));
    let (tokens, _) = code_flow(&idp, &gw, &alice()).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let sid = jwt_payload(id_token)["sid"].clone();

    let report = idp.backchannel_logout("alice").await;
    assert_eq!(report["sessions"], 1, "{report}\n{}", idp.logs());
    assert_eq!(
        report["notified"],
        json!([{"client_id": "gw", "sid": sid}]),
        "{report}\n{}",
        idp.logs()
    );
    let body = tokio::time::timeout(Duration::from_secs(5), body)
        .await
        .expect("back-channel POST")
        .unwrap();
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let logout = jwt_payload(&form["logout_token"]);
    assert_eq!(logout["iss"], idp.issuer());
    assert_eq!(logout["aud"], "gw");
    assert_eq!(logout["sub"], "alice");
    assert_eq!(logout["sid"], sid);
    assert_eq!(
        logout["events"],
        json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(logout.get("nonce").is_none(), "{logout:#}");
    // The sessions are gone: a second call finds none.
    assert_eq!(idp.backchannel_logout("alice").await["sessions"], 0);

    // RP-initiated logout as a gateway would send it.
    let end = Url::parse_with_params(
        &format!("{}/session/end", idp.issuer()),
        [
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", done),
            ("state", "st"),
        ],
    )
    .unwrap();
    assert_eq!(idp.end_session(end.as_str()).await, Ok(format!("{done}?state=st")));
}
