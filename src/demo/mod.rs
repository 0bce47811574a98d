//! `portcullis demo`: the gateway with the example policies, zero set-up.
//!
//! Writes a policy set under `<data>/policies/` (the repo's example tenants, with
//! fresh keys and operator tokens kept in `<data>/demo-state.json`), starts one echo
//! app per tenant (or points every tenant at `--upstream`), runs the gateway in
//! plaintext on 127.0.0.1, writes `<data>/demo.json` and prints the banner: the URLs to
//! open first, the users, the operators and where things are. The access log (a line
//! per request) goes to `<data>/access.log`, so the banner stays on screen; other log
//! lines (security events, warnings) are JSON on stdout, as in `run`.

mod echo;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Gateway;
use crate::auth::accounts::NewAccount;
use crate::config::{self, Env, Overrides, ProcessEnv};

/// Tenant policy templates: the repo's example set.
const TENANTS: [(&str, &str); 3] = [
    ("acme", include_str!("../../policies/tenants/acme.toml")),
    ("globex", include_str!("../../policies/tenants/globex.toml")),
    ("initech", include_str!("../../policies/tenants/initech.toml")),
];

/// Tiers of the demo and whether each is a production tier.
const TIERS: [(&str, bool); 2] = [("prod", true), ("staging", false)];

/// Operators per tier: (name, number of tokens). The first holds two.
const OPERATORS: [(&str, &str, usize); 4] = [
    ("prod", "olivia", 2),
    ("prod", "oscar", 1),
    ("staging", "sofia", 2),
    ("staging", "sam", 1),
];

/// Demo users per tenant: (tenant, username, display name, roles). The first of each
/// tenant is its tenant admin. Passwords and TOTP secrets are derived from the names
/// (see [`demo_password`], [`demo_totp_secret`]) so every demo process, replicas on one
/// Redis included, prints the same working credentials.
const USERS: [(&str, &str, &str, &[&str]); 6] = [
    ("acme", "alice", "Alice Admin", &["tenant-admin", "admin"]),
    ("acme", "bob", "Bob User", &[]),
    ("globex", "gina", "Gina Admin", &["tenant-admin", "admin"]),
    ("globex", "gus", "Gus User", &[]),
    ("initech", "ivan", "Ivan Admin", &["tenant-admin", "admin"]),
    ("initech", "iris", "Iris User", &[]),
];

/// The demo password of a demo user (demo only: published in demo.json and on stdout).
fn demo_password(username: &str) -> String {
    format!("{username}-demo-password")
}

/// The demo TOTP secret of a demo user: 160 bits derived from the names, base32.
fn demo_totp_secret(tenant: &str, username: &str) -> String {
    let digest = Sha256::digest(format!("portcullis demo totp {tenant}/{username}").as_bytes());
    base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        digest.get(..20).unwrap_or_default(),
    )
}

/// Creates the demo users in an empty store; existing users are kept as they are.
async fn seed_users(portal: &crate::ui::Portal) -> anyhow::Result<()> {
    let now = crate::clock::unix_now();
    for (tenant, username, display, roles) in USERS {
        let tier = if tenant == "initech" { "staging" } else { "prod" };
        let new = NewAccount {
            tenant,
            username,
            display_name: Some(display),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let totp_secret = demo_totp_secret(tenant, username);
        portal
            .accounts
            .seed(tier, new, &demo_password(username), &totp_secret, now)
            .await?;
    }
    Ok(())
}

/// Generated secrets, kept so a restarted demo reuses them: in `<data>/demo-state.json`,
/// or, for replicas on one Redis (`--store redis://...`), in Redis, so every replica
/// serves the same operators and keys whatever its `--data`.
#[derive(Serialize, Deserialize)]
struct DemoState {
    operators: Vec<DemoOperator>,
    /// Each tier's keys, when shared through Redis (a local demo keeps them as files
    /// under `policies/secrets/`).
    #[serde(default)]
    keys: std::collections::BTreeMap<String, DemoKeys>,
}

/// A tier's keys as the replicas of a demo share them (demo only: kept in clear in the
/// demo's Redis, like the tokens printed in demo.json).
#[derive(Serialize, Deserialize, Clone)]
struct DemoKeys {
    cookie: String,
    assertion_pem: String,
}

/// The Redis key of the shared [`DemoState`] (outside every tier's prefix).
const SHARED_STATE_KEY: &str = "portcullis:demo:state";

#[derive(Serialize, Deserialize, Clone)]
struct DemoOperator {
    name: String,
    tier: String,
    tokens: Vec<String>,
}

/// Runs the demo until SIGTERM/SIGINT.
pub async fn run(overrides: Overrides) -> anyhow::Result<()> {
    let data = overrides
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("portcullis-data"));
    fs::create_dir_all(&data).with_context(|| format!("cannot create data directory {}", data.display()))?;
    let data = data
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", data.display()))?;
    let log_path = data.join(LOG_FILE);
    let _log_guard = crate::telemetry::init_logging_with_access_file(open_log(&log_path)?);
    let state = match &overrides.store {
        Some(url)
            if matches!(
                crate::store::StoreLocation::parse(url),
                Ok(crate::store::StoreLocation::Redis(_))
            ) =>
        {
            shared_state(url).await?
        }
        _ => load_or_create_state(&data)?,
    };

    let mut upstreams = Vec::new();
    let mut checks = Vec::new();
    for (id, _) in TENANTS {
        let url = match &overrides.upstream {
            Some(url) => url.clone(),
            None => {
                let check = echo::AssertionCheck::new(id, &format!("{id}.localhost"));
                checks.push(check.clone());
                format!(
                    "http://{}",
                    echo::spawn(check).await.context("cannot start the echo app")?
                )
            }
        };
        upstreams.push((id, url));
    }
    let policy_dir = data.join("policies");
    write_policies(&policy_dir, &state, &overrides, &upstreams)?;

    let overrides = Overrides {
        data: Some(data.clone()),
        upstream: None,
        ..overrides
    };
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    let cfg = config::load(&policy_dir, env.as_ref(), &overrides).map_err(crate::StartError::Policy)?;
    let tenants: Vec<serde_json::Value> = cfg
        .tenants
        .iter()
        .map(|t| serde_json::json!({ "id": t.id, "tier": t.tier, "hosts": t.hosts }))
        .collect();
    let store = overrides.store.clone();
    let gateway = Gateway::bind(cfg, env, overrides).await?;
    seed_users(gateway.portal()).await?;
    let users: Vec<serde_json::Value> = USERS
        .iter()
        .map(|(tenant, username, _, roles)| {
            serde_json::json!({
                "tenant": tenant, "username": username, "password": demo_password(username),
                "totp_secret": demo_totp_secret(tenant, username), "roles": roles,
            })
        })
        .collect();
    let public = gateway.public_addr()?;
    let admin = gateway.admin_addr()?;
    for check in &checks {
        let _ = check.gateway.set(public);
    }

    let operator_tokens: serde_json::Map<String, serde_json::Value> = TIERS
        .iter()
        .filter_map(|(tier, _)| {
            let first = state.operators.iter().find(|o| o.tier == *tier)?;
            Some((
                tier.to_string(),
                serde_json::Value::String(first.tokens.first()?.clone()),
            ))
        })
        .collect();
    let demo_json = serde_json::json!({
        "public": public.to_string(),
        "admin": admin.to_string(),
        "tenants": tenants,
        "users": users,
        "operator_tokens": operator_tokens,
        "operators": state.operators.iter().map(|o| serde_json::json!({ "name": o.name, "tier": o.tier, "tokens": o.tokens })).collect::<Vec<_>>(),
    });
    write_private(
        &data.join("demo.json"),
        serde_json::to_string_pretty(&demo_json)?.as_bytes(),
    )?;

    let banner = Banner {
        public_port: public.port(),
        admin: admin.to_string(),
        tenants: tenant_rows(&tenants),
        echo: !checks.is_empty(),
        store: store.as_deref(),
        operators: &state.operators,
        data: &data,
        log: &log_path,
    };
    print!("{}", banner.render());
    gateway.run().await?;
    Ok(())
}

/// The demo's log file, in its data directory.
const LOG_FILE: &str = "access.log";

/// Opens the log file for appending (created readable by the current user only: it
/// names users and addresses).
fn open_log(path: &Path) -> anyhow::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

/// (id, tier, first host) of each tenant, from the tenants of demo.json.
fn tenant_rows(tenants: &[serde_json::Value]) -> Vec<(String, String, String)> {
    tenants
        .iter()
        .filter_map(|t| {
            Some((
                t["id"].as_str()?.to_string(),
                t["tier"].as_str()?.to_string(),
                t["hosts"].as_array()?.first()?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// What the demo prints once it listens: the URLs to open first, then the users, the
/// operators and where its files are.
struct Banner<'a> {
    /// Port of the public listener (the tenants' hosts are `*.localhost`).
    public_port: u16,
    /// Address of the admin listener.
    admin: String,
    /// (id, tier, host) of each tenant; the first is the one to try first.
    tenants: Vec<(String, String, String)>,
    /// Whether the tenants are in front of the built-in echo app (no `--upstream`).
    echo: bool,
    /// The operators of each tier with their tokens (only counted here).
    operators: &'a [DemoOperator],
    /// `--store` when given: the command line needs it too.
    store: Option<&'a str>,
    /// The data directory (demo.json, the policy set, the store).
    data: &'a Path,
    /// The log file.
    log: &'a Path,
}

impl Banner<'_> {
    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let port = self.public_port;
        let url = |host: &str, path: &str| format!("http://{host}:{port}{path}");
        let _ = writeln!(out, "Portcullis demo (plaintext, for trying it out only)\n");
        if let Some((_, _, host)) = self.tenants.first() {
            let _ = writeln!(out, "Open first:");
            let _ = writeln!(out, "  sign in   {}", url(host, "/.portcullis/login"));
            let _ = writeln!(
                out,
                "  account   {}   (your sessions and sign-in history)",
                url(host, "/.portcullis/account")
            );
            let app = if self.echo {
                "   (the echo app shows what the gateway forwarded)"
            } else {
                ""
            };
            let _ = writeln!(out, "  the app   {}{app}\n", url(host, "/"));
        }
        let _ = writeln!(
            out,
            "Tenants (/public/ is public, /admin/ needs the admin role, the rest a session):"
        );
        for (id, tier, host) in &self.tenants {
            let _ = writeln!(
                out,
                "  {id:<8} tier {tier:<8} {}   (public: {})",
                url(host, "/"),
                url(host, "/public/")
            );
        }
        let _ = writeln!(
            out,
            "\nUsers (password, then the TOTP secret to add to your authenticator app):"
        );
        for (tenant, username, _, roles) in USERS {
            let line = format!(
                "  {tenant:<8} {username:<6} {:<22} {}  {}",
                demo_password(username),
                demo_totp_secret(tenant, username),
                roles.join(",")
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(
            out,
            "\nOperators (their admin API tokens are in demo.json, \"operators\"):"
        );
        let mut tiers: Vec<&str> = Vec::new();
        for op in self.operators {
            if !tiers.contains(&op.tier.as_str()) {
                tiers.push(&op.tier);
            }
        }
        for tier in &tiers {
            let names: Vec<String> = self
                .operators
                .iter()
                .filter(|o| o.tier == *tier)
                .map(|o| match o.tokens.len() {
                    1 => o.name.clone(),
                    n => format!("{} ({n} tokens)", o.name),
                })
                .collect();
            let _ = writeln!(out, "  {tier:<8} {}", names.join(", "));
        }
        // Why some operators hold two tokens (SPEC "Changes, audit, four eyes").
        let doubles: Vec<&DemoOperator> = self.operators.iter().filter(|o| o.tokens.len() > 1).collect();
        let second = doubles
            .first()
            .and_then(|d| self.operators.iter().find(|o| o.tier == d.tier && o.name != d.name));
        if let (Some(first), Some(second)) = (doubles.first(), second) {
            let names: Vec<&str> = doubles.iter().map(|o| o.name.as_str()).collect();
            let _ = writeln!(
                out,
                "  {} {} two tokens to show that four eyes counts people, not tokens:\n  \
                 a change {first} proposes (POST /v1/changes) cannot be approved with\n  \
                 {first}'s other token (403 same_person); it applies once {second} approves it.",
                names.join(" and "),
                if names.len() == 1 { "holds" } else { "hold" },
                first = first.name,
                second = second.name
            );
        }
        let _ = writeln!(
            out,
            "\nAdmin       http://{}  (/healthz, /readyz, /metrics; /v1/... with an operator token)",
            self.admin
        );
        let _ = writeln!(
            out,
            "Console     http://{}/console/  (sign in with an operator token from demo.json)",
            self.admin
        );
        let _ = writeln!(
            out,
            "Access log  {}\n            (a JSON line per request; security events and warnings appear in\n            \
             this terminal as JSON lines)",
            self.log.display()
        );
        let _ = writeln!(
            out,
            "CLI         portcullis sessions list --tenant {} --config {}{}",
            self.tenants.first().map_or("acme", |t| t.0.as_str()),
            self.data.join("policies").display(),
            // A URL with credentials is not repeated on screen.
            self.store.map_or_else(String::new, |s| match s.contains('@') {
                true => " --store <the demo's --store URL>".to_string(),
                false => format!(" --store {s}"),
            })
        );
        let _ = writeln!(out, "For scripts {}", self.data.join("demo.json").display());
        out
    }
}

fn load_or_create_state(data: &Path) -> anyhow::Result<DemoState> {
    let path = data.join("demo-state.json");
    if let Ok(text) = fs::read_to_string(&path) {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid demo state file", path.display()));
    }
    let state = DemoState {
        operators: fresh_operators(),
        keys: Default::default(),
    };
    write_private(&path, serde_json::to_string_pretty(&state)?.as_bytes())?;
    Ok(state)
}

/// The state every replica on the Redis at `url` shares: the first replica's fresh
/// state is stored only if none is (`SET NX`), then every replica reads what is there.
async fn shared_state(url: &str) -> anyhow::Result<DemoState> {
    let mut keys = std::collections::BTreeMap::new();
    for (tier, _) in TIERS {
        keys.insert(
            tier.to_string(),
            DemoKeys {
                cookie: crate::provision::random_token(),
                assertion_pem: crate::assertion::generate_ed25519_pem()?.to_string(),
            },
        );
    }
    let fresh = DemoState {
        operators: fresh_operators(),
        keys,
    };
    let mut con = crate::store::redis::connect(url).await?;
    let _: Option<String> = ::redis::cmd("SET")
        .arg(SHARED_STATE_KEY)
        .arg(serde_json::to_string(&fresh)?)
        .arg("NX")
        .query_async(&mut con)
        .await
        .context("cannot store the demo's shared state in Redis")?;
    let stored: String = ::redis::cmd("GET")
        .arg(SHARED_STATE_KEY)
        .query_async(&mut con)
        .await
        .context("cannot read the demo's shared state from Redis")?;
    let state: DemoState = serde_json::from_str(&stored).with_context(|| {
        format!("the demo state in Redis ({SHARED_STATE_KEY}) is not valid; delete it to start afresh")
    })?;
    if TIERS.iter().any(|(tier, _)| !state.keys.contains_key(*tier)) {
        return Err(anyhow!(
            "the demo state in Redis ({SHARED_STATE_KEY}) has no keys for every tier; delete it to start afresh"
        ));
    }
    Ok(state)
}

/// Fresh tokens for the demo's operators.
fn fresh_operators() -> Vec<DemoOperator> {
    OPERATORS
        .iter()
        .map(|(tier, name, n)| DemoOperator {
            name: name.to_string(),
            tier: tier.to_string(),
            tokens: (0..*n).map(|_| crate::provision::random_token()).collect(),
        })
        .collect()
}

/// Writes the demo's policy set: gateway.toml, one file per tier (with fresh keys under
/// secrets/), and the example tenants pointed at their upstreams.
fn write_policies(
    dir: &Path,
    state: &DemoState,
    overrides: &Overrides,
    upstreams: &[(&str, String)],
) -> anyhow::Result<()> {
    for sub in ["tiers", "tenants", "secrets"] {
        fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let gateway = format!(
        "# Written by `portcullis demo`.\n[listen]\npublic = \"{}\"\nadmin = \"{}\"\nplaintext = true\n\n[store]\ndata = \"..\"\n",
        overrides.listen.as_deref().unwrap_or("127.0.0.1:8080"),
        overrides.admin_listen.as_deref().unwrap_or("127.0.0.1:9090"),
    );
    fs::write(dir.join("gateway.toml"), gateway)?;

    let mut allow = vec!["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()];
    for (_, url) in upstreams {
        let uri: http::Uri = url.parse().map_err(|_| anyhow!("--upstream `{url}` is not a URL"))?;
        if let Some(host) = uri.host() {
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            if !allow.contains(&host) {
                allow.push(host);
            }
        }
    }
    let allow = allow.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    for (tier, production) in TIERS {
        let key_file = dir.join("secrets").join(format!("{tier}-cookie.key"));
        let assertion_file = dir.join("secrets").join(format!("{tier}-assertion.pem"));
        match state.keys.get(tier) {
            // Shared by the replicas: always the shared keys.
            Some(shared) => {
                write_private(&key_file, shared.cookie.as_bytes())?;
                write_private(&assertion_file, shared.assertion_pem.as_bytes())?;
            }
            None => {
                if !key_file.exists() {
                    write_private(&key_file, crate::provision::random_token().as_bytes())?;
                }
                if !assertion_file.exists() {
                    let pem = crate::assertion::generate_ed25519_pem()?;
                    write_private(&assertion_file, pem.as_bytes())?;
                }
            }
        }
        let mut text = format!(
            "# Written by `portcullis demo`.\nname = \"{tier}\"\nproduction = {production}\nupstream_allowlist = [{allow}]\n\n[keys]\ncookie = \"file:secrets/{tier}-cookie.key\"\nassertion = \"file:secrets/{tier}-assertion.pem\"\n"
        );
        for op in state.operators.iter().filter(|o| o.tier == tier) {
            for token in &op.tokens {
                let hash = crate::provision::token_sha256(token);
                text.push_str(&format!(
                    "\n[[operators]]\nname = \"{}\"\ntoken_sha256 = \"{hash}\"\n",
                    op.name
                ));
            }
        }
        fs::write(dir.join("tiers").join(format!("{tier}.toml")), text)?;
    }
    for ((id, template), (_, url)) in TENANTS.iter().zip(upstreams) {
        let text: String = template
            .lines()
            .map(|line| {
                if line.starts_with("upstream = ") {
                    format!("upstream = \"{url}\"")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(dir.join("tenants").join(format!("{id}.toml")), text + "\n")?;
    }
    Ok(())
}

/// Writes a file only the current user can read (it holds tokens or keys).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operators() -> Vec<DemoOperator> {
        OPERATORS
            .iter()
            .map(|(tier, name, n)| DemoOperator {
                name: name.to_string(),
                tier: tier.to_string(),
                tokens: (0..*n).map(|i| format!("token-{name}-{i}")).collect(),
            })
            .collect()
    }

    fn render(store: Option<&str>) -> String {
        let operators = operators();
        Banner {
            public_port: 18080,
            admin: "127.0.0.1:19090".into(),
            tenants: vec![
                ("acme".into(), "prod".into(), "acme.localhost".into()),
                ("initech".into(), "staging".into(), "initech.localhost".into()),
            ],
            echo: true,
            store,
            operators: &operators,
            data: Path::new("/d"),
            log: Path::new("/d/access.log"),
        }
        .render()
    }

    /// If this broke, a newcomer would have to hunt for where to start among the users,
    /// or be sent to a port the demo does not listen on.
    #[test]
    fn the_banner_starts_with_the_urls_to_open_on_the_real_port() {
        let text = render(None);
        let login = text.find("http://acme.localhost:18080/.portcullis/login").unwrap();
        let account = text.find("http://acme.localhost:18080/.portcullis/account").unwrap();
        let first_user = text.find("alice-demo-password").unwrap();
        assert!(login < account && account < first_user, "{text}");
        assert!(text.contains("http://127.0.0.1:19090"), "{text}");
        assert!(text.contains("Console     http://127.0.0.1:19090/console/"), "{text}");
        assert!(text.contains("http://initech.localhost:18080/public/"), "{text}");
        assert!(text.contains("/d/access.log"), "{text}");
        assert!(text.contains("--config /d/policies"), "{text}");
        assert!(text.contains("/d/demo.json"), "{text}");
    }

    /// If this broke, the second token of the first operator would look like a second
    /// person able to approve their own change, which four eyes refuses.
    #[test]
    fn the_banner_says_why_the_first_operator_has_two_tokens() {
        let text = render(None);
        assert!(text.contains("olivia (2 tokens), oscar"), "{text}");
        assert!(text.contains("olivia and sofia hold two tokens"), "{text}");
        assert!(text.contains("four eyes counts people, not tokens"), "{text}");
        assert!(text.contains("it applies once oscar approves it"), "{text}");
        assert!(!text.contains("token-olivia-0"), "tokens stay in demo.json: {text}");
    }

    /// If this broke, the command line shown would open another store than the demo's,
    /// or print Redis credentials on screen.
    #[test]
    fn the_cli_hint_names_the_store_override_without_credentials() {
        assert!(render(Some("redis://127.0.0.1:6379")).contains("--store redis://127.0.0.1:6379"));
        let text = render(Some("redis://u:pw-5ecr3t@127.0.0.1:6379"));
        assert!(!text.contains("pw-5ecr3t"), "{text}");
        assert!(text.contains("--store <the demo's --store URL>"), "{text}");
    }
}
