//! `portcullis demo`: the gateway with the example policies, zero set-up.
//!
//! Writes a policy set under `<data>/policies/` (the repo's example tenants, with
//! fresh keys and operator tokens kept in `<data>/demo-state.json`), starts one echo
//! app per tenant (or points every tenant at `--upstream`), runs the gateway in
//! plaintext on 127.0.0.1, writes `<data>/demo.json` and prints every URL.

mod echo;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

/// Generated secrets, kept so a restarted demo (or a replica) reuses them.
#[derive(Serialize, Deserialize)]
struct DemoState {
    operators: Vec<DemoOperator>,
}

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
    let state = load_or_create_state(&data)?;

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

    println!("Portcullis demo (plaintext, for trying it out only)");
    for t in &tenants {
        if let Some(hosts) = t["hosts"].as_array() {
            for h in hosts.iter().filter_map(|h| h.as_str()) {
                println!(
                    "  tenant {:<8} tier {:<8} http://{h}:{}/   (public: http://{h}:{}/public/)",
                    t["id"].as_str().unwrap_or(""),
                    t["tier"].as_str().unwrap_or(""),
                    public.port(),
                    public.port()
                );
            }
        }
    }
    println!("  users (password, TOTP secret for your authenticator app):");
    for (tenant, username, _, roles) in USERS {
        println!(
            "    {tenant:<8} {username:<6} {:<22} {}  {}",
            demo_password(username),
            demo_totp_secret(tenant, username),
            roles.join(",")
        );
    }
    println!("  admin     http://{admin}/healthz  /readyz  /metrics");
    println!("  operator tokens and more in {}", data.join("demo.json").display());
    gateway.run().await?;
    Ok(())
}

fn load_or_create_state(data: &Path) -> anyhow::Result<DemoState> {
    let path = data.join("demo-state.json");
    if let Ok(text) = fs::read_to_string(&path) {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid demo state file", path.display()));
    }
    let operators = OPERATORS
        .iter()
        .map(|(tier, name, n)| DemoOperator {
            name: name.to_string(),
            tier: tier.to_string(),
            tokens: (0..*n).map(|_| random_token()).collect(),
        })
        .collect();
    let state = DemoState { operators };
    write_private(&path, serde_json::to_string_pretty(&state)?.as_bytes())?;
    Ok(state)
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
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
        if !key_file.exists() {
            write_private(&key_file, random_token().as_bytes())?;
        }
        let assertion_file = dir.join("secrets").join(format!("{tier}-assertion.pem"));
        if !assertion_file.exists() {
            let pem = crate::assertion::generate_ed25519_pem()?;
            write_private(&assertion_file, pem.as_bytes())?;
        }
        let mut text = format!(
            "# Written by `portcullis demo`.\nname = \"{tier}\"\nproduction = {production}\nupstream_allowlist = [{allow}]\n\n[keys]\ncookie = \"file:secrets/{tier}-cookie.key\"\nassertion = \"file:secrets/{tier}-assertion.pem\"\n"
        );
        for op in state.operators.iter().filter(|o| o.tier == tier) {
            for token in &op.tokens {
                let hash = hex::encode(Sha256::digest(token.as_bytes()));
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
