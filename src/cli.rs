//! Command line (clap): `run`, `check`, `demo`, `reload`, `user`, `sessions`, `breaker`,
//! `keys`, `audit` and `incident`. Parses arguments, loads the policy through `config::load`, calls
//! the services (or the admin API of a running gateway) and renders their answers;
//! reports errors with a non-zero exit code (2 for an invalid policy set). The only
//! place besides `main.rs` that uses `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use portcullis::audit::Actor;
use portcullis::auth::accounts::Accounts;
use portcullis::config::{self, ConfigError, Env, Overrides, ProcessEnv};
use portcullis::store::{AuditLog, TierStore};
use portcullis::{Gateway, StartError, demo, telemetry};

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Multi-tenant security gateway for SaaS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a policy directory.
    Run {
        /// Policy directory (gateway.toml, tiers/, tenants/).
        #[arg(long, default_value = "policies")]
        config: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Validate a policy directory and report every problem (exit code 2 on errors).
    Check {
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        config: PathBuf,
    },
    /// Run the demo: three tenants on *.localhost with built-in echo apps, zero set-up.
    Demo {
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Ask a running gateway to reload its policy (operator token from PORTCULLIS_OPERATOR_TOKEN).
    Reload {
        /// Policy directory, to find the admin listener address and, with
        /// [listen.admin_tls], the certificate it presents.
        #[arg(long, default_value = "policies")]
        config: PathBuf,
        /// Admin listener address (instead of reading it from the policy).
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Local accounts of a tenant (works on the store a running gateway uses).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Sessions of a tenant (works on the store a running gateway uses).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Kill switches: cut off a tier, a tenant or an account (works on the store a
    /// running gateway uses; it applies the change within 1 s).
    Breaker {
        #[command(subcommand)]
        action: BreakerAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Assertion signing keys of a tier.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Operators: people who use the admin API and `portcullis reload`.
    Operator {
        #[command(subcommand)]
        action: OperatorAction,
    },
    /// The hash-chained audit log of each tier.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Incidents named by kill switch trips (works on the store a running gateway uses).
    Incident {
        #[command(subcommand)]
        action: IncidentAction,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum IncidentAction {
    /// The incident's timeline, oldest first, for a postmortem: trips, resets, sessions
    /// ended, auto-trips, configuration changes and approvals in its window.
    Timeline {
        /// The incident reference, as given to `breaker trip --incident`.
        #[arg(long)]
        incident: String,
        /// `md` (a Markdown table) or `json` (the body of `GET /v1/incidents/{id}`).
        #[arg(long, value_enum, default_value = "md")]
        format: TimelineFormat,
        /// Only this tier's audit log (default: every tier of the policy).
        #[arg(long)]
        tier: Option<String>,
    },
}

/// How `incident timeline` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TimelineFormat {
    /// Markdown: a heading, the window and a table.
    Md,
    /// JSON, exactly as the admin API answers.
    Json,
}

/// Which switch: a tier (`--tier`), a tenant (`--tenant`), or an account (`--tenant --account`).
#[derive(Args, Clone)]
struct BreakerScopeArgs {
    /// Tier, for a tier-wide switch.
    #[arg(long, conflicts_with = "tenant")]
    tier: Option<String>,
    /// Tenant id.
    #[arg(long)]
    tenant: Option<String>,
    /// Account subject (user name or IdP `sub`) within the tenant.
    #[arg(long, requires = "tenant")]
    account: Option<String>,
    /// Who the account signs in with: `local` (default), `sso` (the tenant's identity
    /// provider) or an issuer URL; a local and an SSO account of one subject are two users.
    #[arg(long, requires = "account")]
    idp: Option<String>,
}

#[derive(Subcommand)]
enum BreakerAction {
    /// Trip a switch: logins refused, live sessions ended, requests answered 423.
    Trip {
        #[command(flatten)]
        scope: BreakerScopeArgs,
        /// Why (goes into the audit log).
        #[arg(long)]
        reason: String,
        /// What users are told.
        #[arg(long)]
        message: Option<String>,
        /// Reset automatically after this long (e.g. 30m, 2h).
        #[arg(long)]
        expires: Option<String>,
        /// Report what a trip would do without doing it (recorded as a drill).
        #[arg(long)]
        dry_run: bool,
        /// The incident the trip belongs to (e.g. INC-42): 1 to 64 letters, digits, '.',
        /// '_', ':' or '-'. Its audit records and events carry it.
        #[arg(long)]
        incident: Option<String>,
    },
    /// Reset a switch (sessions it ended stay ended).
    Reset {
        #[command(flatten)]
        scope: BreakerScopeArgs,
        /// Why (goes into the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// The incident the reset belongs to (default: the one the switch was tripped for).
        #[arg(long)]
        incident: Option<String>,
    },
    /// List the switches in force.
    List,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Write a new tier's keys: a cookie key and an Ed25519 assertion key, as
    /// `secrets/<tier>-cookie.key` and `secrets/<tier>-assertion.pem` in the policy
    /// directory (owner-only files; never overwrites). Prints the tier file's `[keys]`.
    Init {
        /// Tier the keys are for.
        #[arg(long)]
        tier: String,
    },
    /// Write a fresh Ed25519 assertion key over the tier's `keys.assertion = "file:..."`.
    /// A running gateway switches to it at its next reload (SIGHUP, `portcullis reload`)
    /// and keeps publishing the old public key until its last assertion expired.
    Rotate {
        /// Tier whose key to replace.
        #[arg(long)]
        tier: String,
    },
}

#[derive(Subcommand)]
enum OperatorAction {
    /// Make a new operator token. Prints the token (for the operator alone; it is kept
    /// nowhere) and the `[[operators]]` entry with its `token_sha256` for a tier file.
    Token {
        /// The operator's name: one person, whatever number of tokens.
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check every tier's hash chain; fails on a changed, removed or reordered record.
    Verify {
        /// Only this tier.
        #[arg(long)]
        tier: Option<String>,
    },
    /// Write the records as JSON lines to standard output, oldest first.
    Export {
        /// Only this tier.
        #[arg(long)]
        tier: Option<String>,
    },
}

/// Where the store is: the policy (for the tenant's tier) plus the same overrides as `run`.
#[derive(Args, Clone)]
struct StoreArgs {
    /// Policy directory.
    #[arg(long, global = true, default_value = "policies")]
    config: PathBuf,
    /// Embedded store directory.
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Store URL: sqlite:PATH or redis://HOST:PORT.
    #[arg(long, global = true)]
    store: Option<String>,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a local account; the password is read from the first line of standard
    /// input (or PORTCULLIS_NEW_PASSWORD). TOTP is enrolled at the first sign-in.
    Add {
        /// Tenant id (as in tenants/<id>.toml).
        #[arg(long)]
        tenant: String,
        /// Login name: 1 to 256 printable characters, no '|' (the rule of the login form).
        #[arg(long)]
        username: String,
        /// Display name (defaults to the user name).
        #[arg(long)]
        name: Option<String>,
        /// Role to grant (repeatable), e.g. --role tenant-admin.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List the local accounts of a tenant.
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
    },
    /// Remove a user's TOTP and recovery codes and end their sessions; they enrol again
    /// at the next sign-in.
    ResetMfa {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Login name of the local account.
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// List live sessions of a tenant (or of one user).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Only this user's sessions (login name or IdP subject).
        #[arg(long)]
        user: Option<String>,
    },
    /// End sessions: one (--session ID), all of a user (--user), or all of the tenant.
    Revoke {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// End every session of this user (login name or IdP subject).
        #[arg(long)]
        user: Option<String>,
        /// End this one session (its id as `sessions list` shows it).
        #[arg(long)]
        session: Option<String>,
    },
}

#[derive(Args, Clone, Default)]
struct OverrideArgs {
    /// Public listener address (IP:PORT).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listener address (IP:PORT).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Embedded store directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Store URL: sqlite:PATH or redis://HOST:PORT.
    #[arg(long)]
    store: Option<String>,
    /// One upstream URL for every tenant.
    #[arg(long)]
    upstream: Option<String>,
}

impl From<OverrideArgs> for Overrides {
    fn from(a: OverrideArgs) -> Self {
        Overrides {
            listen: a.listen,
            admin_listen: a.admin_listen,
            data: a.data,
            store: a.store,
            upstream: a.upstream,
        }
    }
}

/// Exit code for an invalid policy set.
const INVALID_POLICY: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config, overrides } => runtime().and_then(|rt| rt.block_on(run(config, overrides.into()))),
        Command::Demo { overrides } => runtime().and_then(|rt| rt.block_on(demo_main(overrides.into()))),
        Command::Reload { config, admin_listen } => runtime().and_then(|rt| rt.block_on(reload(config, admin_listen))),
        Command::User { action, store } => runtime().and_then(|rt| rt.block_on(user(action, store))),
        Command::Sessions { action, store } => runtime().and_then(|rt| rt.block_on(sessions(action, store))),
        Command::Breaker { action, store } => runtime().and_then(|rt| rt.block_on(breaker(action, store))),
        Command::Keys { action, store } => runtime().and_then(|rt| rt.block_on(keys(action, store))),
        Command::Operator { action } => operator(action),
        Command::Audit { action, store } => runtime().and_then(|rt| rt.block_on(audit(action, store))),
        Command::Incident { action, store } => runtime().and_then(|rt| rt.block_on(incident(action, store))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(StartError::Policy(errors)) = e.downcast_ref::<StartError>() {
                print_errors(errors);
                return ExitCode::from(INVALID_POLICY);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one thread when the process may use one CPU (pinned, or a
/// one-CPU container), where a work-stealing scheduler only adds cross-thread wake-ups
/// (measured: about +30 % req/s on the public route); otherwise one worker per CPU.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().context("cannot start the async runtime")
}

fn print_errors(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!(
        "{} problem{} found",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

fn check(dir: &std::path::Path) -> ExitCode {
    match config::load(dir, &ProcessEnv, &Overrides::default()) {
        Ok(cfg) => {
            println!(
                "ok: {} tiers, {} tenants, policy digest {}",
                cfg.tiers.len(),
                cfg.tenants.len(),
                cfg.digest
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::from(INVALID_POLICY)
        }
    }
}

async fn run(dir: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let env: Arc<dyn Env> = Arc::new(ProcessEnv);
    // Loaded before logging starts: `[tracing]` decides whether the subscriber carries
    // the OpenTelemetry layer (loading logs nothing; its errors are returned).
    let cfg = config::load(&dir, env.as_ref(), &overrides).map_err(StartError::Policy)?;
    let (traces, layer) = match &cfg.gateway.tracing {
        Some(tracing) => {
            let (exporter, layer) = portcullis::otel::Exporter::start(tracing)?;
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    let _guard = telemetry::init_logging_with(layer);
    // Bound after the log guard, so dropped (flushed) before it: a failed last flush still
    // reaches the log.
    let _traces = traces;
    let gateway = Gateway::bind(cfg, env, overrides).await?;
    tracing::info!(public = %gateway.public_addr()?, admin = %gateway.admin_addr()?, "listening");
    gateway.run().await?;
    Ok(())
}

/// The demo sets up its own logging: into a file in its data directory.
async fn demo_main(overrides: Overrides) -> anyhow::Result<()> {
    demo::run(overrides).await
}

async fn reload(dir: PathBuf, admin_listen: Option<String>) -> anyhow::Result<()> {
    let token = std::env::var("PORTCULLIS_OPERATOR_TOKEN")
        .map_err(|_| anyhow!("set PORTCULLIS_OPERATOR_TOKEN to an operator token"))?;
    // The policy says where the listener is and, with [listen.admin_tls], which
    // certificate it presents (the one this client trusts).
    let endpoint = config::admin_endpoint(&dir, &ProcessEnv).map_err(|e| anyhow!("{e}"))?;
    let admin = admin_listen.unwrap_or_else(|| endpoint.addr.to_string());
    let (status, body) =
        portcullis::admin::client::post(&admin, endpoint.tls_certificate.as_ref(), "/v1/reload", &token).await?;
    println!("{body}");
    if status == 200 {
        Ok(())
    } else {
        Err(anyhow!("reload refused (HTTP {status})"))
    }
}

/// The store of a tenant's tier, opened like `run` would.
async fn tenant_store(args: &StoreArgs, tenant: &str) -> anyhow::Result<(String, Arc<dyn TierStore>)> {
    let overrides = Overrides {
        data: args.data.clone(),
        store: args.store.clone(),
        ..Overrides::default()
    };
    let cfg = config::load(&args.config, &ProcessEnv, &overrides).map_err(StartError::Policy)?;
    let tier = tenant_tier(&cfg, args, tenant)?;
    let stores = portcullis::store::Stores::open_for(&cfg.gateway.store.url, &cfg.tier_access()).await?;
    let store = stores
        .tier(&tier)
        .ok_or_else(|| anyhow!("no store for tier `{tier}`"))?;
    Ok((tier, store))
}

/// The tier of a tenant of the policy.
fn tenant_tier(cfg: &config::Config, args: &StoreArgs, tenant: &str) -> anyhow::Result<String> {
    cfg.tenants
        .iter()
        .find(|t| t.id == tenant)
        .map(|t| t.tier.clone())
        .ok_or_else(|| anyhow!("no tenant `{tenant}` in {}", args.config.display()))
}

/// Appends an audit record for a change made from the command line.
async fn record_cli_change(
    store: &dyn AuditLog,
    tier: &str,
    tenant: &str,
    action: &str,
    target: &str,
    after: serde_json::Value,
) -> anyhow::Result<()> {
    let entry = portcullis::audit::AuditEntry {
        target: target.into(),
        tenant: Some(tenant.to_string()),
        tier: tier.to_string(),
        after: portcullis::audit::redact(&after),
        ..portcullis::audit::AuditEntry::by(&cli_actor(), action, portcullis::clock::unix_now())
    };
    store.append_audit(&entry).await?;
    Ok(())
}

/// A time of a list for people: `2026-12-06 17:03 UTC (5 minutes ago)`, from unix seconds
/// and the time the list was made.
fn when(unix: i64, now: i64) -> String {
    let Ok(secs) = u64::try_from(unix) else {
        return unix.to_string();
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    // `2026-12-06T17:03:09Z`: the date, and the time to the minute.
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    match (stamp.get(..10), stamp.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC ({})", ago(now.saturating_sub(unix))),
        _ => stamp,
    }
}

/// How long ago `secs` seconds was (negative: how far ahead), in the largest whole unit.
fn ago(secs: i64) -> String {
    let n = secs.unsigned_abs();
    let (count, unit) = match n {
        0..60 => return "just now".to_string(),
        60..3600 => (n / 60, "minute"),
        3600..86_400 => (n / 3600, "hour"),
        _ => (n / 86_400, "day"),
    };
    let amount = format!("{count} {unit}{}", if count == 1 { "" } else { "s" });
    if secs < 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()))
}

/// The accounts service over the stores a running gateway uses, the tenant's tier, and
/// the stores.
async fn tenant_accounts(
    args: &StoreArgs,
    tenant: &str,
) -> anyhow::Result<(String, Accounts, Arc<portcullis::session::Sessions>)> {
    use portcullis::auth::login::LocalLogin;
    use portcullis::auth::password::PasswordHasher;
    let (cfg, sessions) = all_stores(args).await?;
    let tier = tenant_tier(&cfg, args, tenant)?;
    let login = LocalLogin {
        hasher: PasswordHasher::new(Default::default()).map_err(|e| anyhow!("{e}"))?,
        switches: portcullis::killswitch::KillSwitches::new(sessions.clone()),
        sessions: sessions.clone(),
        logins: Default::default(),
    };
    Ok((tier, Accounts::new(login), sessions))
}

/// The audit actor of a change made from the command line.
fn cli_actor() -> Actor {
    Actor {
        name: actor(),
        source_ip: "-".into(),
        system: "cli".into(),
    }
}

async fn user(action: UserAction, args: StoreArgs) -> anyhow::Result<()> {
    use portcullis::auth::accounts::{AccountError, NewAccount};
    match action {
        UserAction::Add {
            tenant,
            username,
            name,
            roles,
        } => {
            // The login form's rule, checked before anything is opened or asked for.
            portcullis::account::check_local_name(&username).map_err(|e| anyhow!("--username: {e}"))?;
            let (tier, accounts, sessions) = tenant_accounts(&args, &tenant).await?;
            let taken = || anyhow!("user {username} already exists in tenant {tenant}");
            if sessions.store(&tier)?.get_user(&tenant, &username).await?.is_some() {
                return Err(taken());
            }
            let password = match std::env::var("PORTCULLIS_NEW_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("cannot read the password from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let new = NewAccount {
                tenant: &tenant,
                username: &username,
                display_name: name.as_deref(),
                roles,
            };
            accounts
                .create(&tier, new, &password, &cli_actor(), portcullis::clock::unix_now())
                .await
                .map_err(|e| match e {
                    // Created by someone else since the check above.
                    AccountError::Store(portcullis::store::StoreError::Conflict(_)) => taken(),
                    e => anyhow!("{e}"),
                })?;
            println!("created {username} in {tenant}; TOTP is set up at the first sign-in");
        }
        UserAction::List { tenant } => {
            let (_, store) = tenant_store(&args, &tenant).await?;
            let users = store.list_users(&tenant).await?;
            if users.is_empty() {
                eprintln!("no local accounts in tenant {tenant}");
            }
            for u in users {
                let mfa = if u.totp_enrolled_at.is_some() {
                    "totp"
                } else {
                    "not enrolled"
                };
                println!(
                    "{}\t{}\troles={}\tmfa={mfa}{}",
                    u.username,
                    u.display_name,
                    u.roles.join(","),
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
        }
        UserAction::ResetMfa { tenant, username } => {
            let (tier, accounts, _) = tenant_accounts(&args, &tenant).await?;
            let ended = accounts
                .reset_mfa(&tier, &tenant, &username, &cli_actor(), portcullis::clock::unix_now())
                .await
                .map_err(|e| match e {
                    AccountError::NotFound => anyhow!("no user `{username}` in {tenant}"),
                    e => anyhow!("{e}"),
                })?;
            println!("reset MFA of {username} in {tenant}; ended {ended} sessions");
        }
    }
    Ok(())
}

async fn sessions(action: SessionsAction, args: StoreArgs) -> anyhow::Result<()> {
    use portcullis::records::Revocation;
    let now = portcullis::clock::unix_now();
    match action {
        SessionsAction::List { tenant, user } => {
            let (_, store) = tenant_store(&args, &tenant).await?;
            let list = match &user {
                Some(u) => store.list_user_sessions(&tenant, u, now).await?,
                None => store.list_tenant_sessions(&tenant, now, 10_000).await?,
            };
            if list.is_empty() {
                match &user {
                    Some(u) => eprintln!("no live sessions of {u} in tenant {tenant}"),
                    None => eprintln!("no live sessions in tenant {tenant}"),
                }
            }
            for s in list {
                println!(
                    "{}\t{}\t{}\t{}\tcreated={}\tlast_seen={}",
                    s.public_id(),
                    s.subject,
                    s.ip,
                    s.auth_method,
                    when(s.created_at, now),
                    when(s.last_seen, now)
                );
            }
        }
        SessionsAction::Revoke { tenant, user, session } => {
            let (cfg, sessions) = all_stores(&args).await?;
            let tier = tenant_tier(&cfg, &args, &tenant)?;
            let store = sessions.store(&tier)?;
            let rev = Revocation {
                at: now,
                by: actor(),
                reason: "revoked_by_operator".into(),
            };
            let one = |s: portcullis::records::SessionRecord| {
                let store = store.clone();
                let rev = rev.clone();
                async move {
                    let ended = store.revoke_session(&s.id_hash, &rev).await?;
                    Ok::<_, portcullis::store::StoreError>(if ended { vec![s.id_hash] } else { Vec::new() })
                }
            };
            let ended = match (session, user) {
                (Some(id), Some(u)) => match store.find_user_session_by_public_id(&tenant, &u, &id, now).await? {
                    Some(s) => one(s).await?,
                    None => return Err(anyhow!("no live session `{id}` of {u} in {tenant}")),
                },
                (Some(id), None) => {
                    let found = store
                        .list_tenant_sessions(&tenant, now, usize::MAX)
                        .await?
                        .into_iter()
                        .find(|s| s.public_id() == id);
                    match found {
                        Some(s) => one(s).await?,
                        None => return Err(anyhow!("no live session `{id}` in {tenant}")),
                    }
                }
                (None, Some(u)) => store.revoke_user_sessions(&tenant, &u, None, &rev).await?,
                (None, None) => store.revoke_tenant_sessions(&tenant, &rev).await?,
            };
            // Running replicas on a shared store evict them now (and this waits until they did).
            if !ended.is_empty() {
                sessions
                    .publish(&tier, &portcullis::store::events::Event::sessions_revoked(&ended))
                    .await;
            }
            let ended = ended.len();
            record_cli_change(
                &*store,
                &tier,
                &tenant,
                "session.revoke",
                &format!("tenant:{tenant}"),
                serde_json::json!({ "sessions_ended": ended }),
            )
            .await?;
            println!("ended {ended} session(s); running gateways stop serving them at once");
        }
    }
    Ok(())
}

/// The policy and the stores of every tier, opened like `run` would.
async fn all_stores(args: &StoreArgs) -> anyhow::Result<(config::Config, Arc<portcullis::session::Sessions>)> {
    let overrides = Overrides {
        data: args.data.clone(),
        store: args.store.clone(),
        ..Overrides::default()
    };
    let cfg = config::load(&args.config, &ProcessEnv, &overrides).map_err(StartError::Policy)?;
    let stores = portcullis::store::Stores::open_for(&cfg.gateway.store.url, &cfg.tier_access()).await?;
    // Revocations and trips made here are published like a replica's, so running
    // gateways act on them at once; this process follows no events itself.
    let events = portcullis::store::events::EventBus::open_for(&cfg.gateway.store.url, &cfg.tier_access()).await?;
    Ok((cfg, portcullis::session::Sessions::with_events(stores, events)))
}

/// The switch `args` name; `--idp sso` is the tenant's provider as its sign-ins see it
/// (the policy files' or the SSO wizard's active version).
async fn breaker_scope(
    cfg: &config::Config,
    sessions: &portcullis::session::Sessions,
    args: BreakerScopeArgs,
) -> anyhow::Result<portcullis::killswitch::Scope> {
    use portcullis::killswitch::Scope;
    let tier_of = |tenant: &str| {
        cfg.tenants
            .iter()
            .find(|t| t.id == tenant)
            .map(|t| t.tier.clone())
            .ok_or_else(|| anyhow!("no tenant `{tenant}` in the policy"))
    };
    Ok(match (args.tier, args.tenant, args.account) {
        (Some(tier), None, None) => Scope::Tier { tier },
        (None, Some(tenant), None) => Scope::Tenant {
            tier: tier_of(&tenant)?,
            tenant,
        },
        (None, Some(tenant), Some(subject)) => {
            let tier = tier_of(&tenant)?;
            let issuer = portcullis::auth::sso_admin::tenant_issuer(cfg, sessions, &tenant).await?;
            Scope::Account {
                tier,
                subject: portcullis::account::named(args.idp.as_deref(), &subject, issuer.as_deref())
                    .map_err(|e| anyhow!("{e}"))?,
                tenant,
            }
        }
        _ => {
            return Err(anyhow!(
                "name one scope: --tier T, --tenant T, or --tenant T --account SUBJECT"
            ));
        }
    })
}

async fn breaker(action: BreakerAction, args: StoreArgs) -> anyhow::Result<()> {
    use portcullis::killswitch::{Expiry, KillSwitchError, KillSwitches, TripRequest};
    let (cfg, sessions) = all_stores(&args).await?;
    let switches = KillSwitches::new(sessions);
    let actor = cli_actor();
    let now = portcullis::clock::unix_now();
    match action {
        BreakerAction::Trip {
            scope,
            reason,
            message,
            expires,
            dry_run,
            incident,
        } => {
            if let Some(id) = &incident {
                portcullis::incident::check_id(id).map_err(|e| anyhow!("--incident: {e}"))?;
            }
            let scope = breaker_scope(&cfg, switches.sessions(), scope).await?;
            if dry_run {
                let report = switches.dry_run(&cfg, &scope, &reason, &actor, now).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            let req = TripRequest {
                scope,
                reason,
                message,
                expiry: expires.map_or(Expiry::Never, Expiry::After),
                idempotency_key: None,
                incident,
            };
            let result = switches.trip(&cfg, req, &actor, now).await.map_err(|e| match e {
                KillSwitchError::Expiry(e) => anyhow!("--expires: {e}"),
                e => e.into(),
            })?;
            println!(
                "tripped {}: ended {} session(s); running gateways apply it within 1 s",
                result.switch.scope.target(),
                result.switch.sessions_ended
            );
        }
        BreakerAction::Reset {
            scope,
            reason,
            incident,
        } => {
            if let Some(id) = &incident {
                portcullis::incident::check_id(id).map_err(|e| anyhow!("--incident: {e}"))?;
            }
            let scope = breaker_scope(&cfg, switches.sessions(), scope).await?;
            match switches
                .reset_for_incident(&cfg, &scope, &reason, incident.as_deref(), &actor, now)
                .await?
            {
                Some(_) => println!("reset {}", scope.target()),
                None => return Err(anyhow!("no breaker is tripped for {}", scope.target())),
            }
        }
        BreakerAction::List => {
            let tripped: Vec<_> = switches
                .list(&cfg)
                .await?
                .into_iter()
                .filter(|k| k.in_force(now))
                .collect();
            if tripped.is_empty() {
                eprintln!("no tripped breakers");
            }
            for ks in tripped {
                println!(
                    "{}\ttripped_at={}\tby={}\texpires_at={}\treason={}",
                    ks.scope.target(),
                    when(ks.tripped_at, now),
                    ks.tripped_by,
                    ks.expires_at.map_or_else(|| "never".to_string(), |e| when(e, now)),
                    ks.reason
                );
            }
        }
    }
    Ok(())
}

async fn audit(action: AuditAction, args: StoreArgs) -> anyhow::Result<()> {
    let (cfg, sessions) = all_stores(&args).await?;
    let only = match &action {
        AuditAction::Verify { tier } | AuditAction::Export { tier } => tier.clone(),
    };
    if let Some(t) = &only
        && !cfg.tiers.contains_key(t)
    {
        return Err(anyhow!("no tier `{t}` in the policy"));
    }
    let mut broken = Vec::new();
    for tier in cfg.tiers.keys().filter(|t| only.as_ref().is_none_or(|o| o == *t)) {
        let store = sessions.store(tier)?;
        let mut records = Vec::new();
        loop {
            let after = records.last().map_or(0, |r: &portcullis::audit::AuditRecord| r.seq);
            let page = store.audit_records(after, 1000).await?;
            // A tampered log can number records out of order; stop rather than loop
            // (verification then reports the break).
            if page.first().is_none_or(|r| r.seq <= after) {
                records.extend(page);
                break;
            }
            records.extend(page);
        }
        match &action {
            AuditAction::Export { .. } => {
                for r in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
            }
            AuditAction::Verify { .. } => match portcullis::audit::verify(&records) {
                Ok(()) => println!("tier {tier}: {} records, chain intact", records.len()),
                Err(e) => {
                    println!("tier {tier}: TAMPERED: {e}");
                    broken.push(tier.clone());
                }
            },
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "audit log verification failed for tier(s): {}",
            broken.join(", ")
        ))
    }
}

async fn incident(action: IncidentAction, args: StoreArgs) -> anyhow::Result<()> {
    use portcullis::incident::IncidentError;
    let IncidentAction::Timeline { incident, format, tier } = action;
    portcullis::incident::check_id(&incident).map_err(|e| anyhow!("--incident: {e}"))?;
    let (cfg, sessions) = all_stores(&args).await?;
    if let Some(t) = &tier
        && !cfg.tiers.contains_key(t)
    {
        return Err(anyhow!("no tier `{t}` in the policy"));
    }
    let mut stores = Vec::new();
    for t in cfg.tiers.keys().filter(|t| tier.as_ref().is_none_or(|o| o == *t)) {
        stores.push(sessions.store(t)?);
    }
    let logs: Vec<&dyn AuditLog> = stores.iter().map(|s| s.as_ref() as &dyn AuditLog).collect();
    let timeline = match portcullis::incident::timeline(&incident, &logs).await {
        Ok(t) => t,
        Err(IncidentError::NotFound) => return Err(anyhow!("no audit record names incident {incident}")),
        Err(e) => return Err(e.into()),
    };
    match format {
        TimelineFormat::Json => println!("{}", serde_json::to_string_pretty(&timeline)?),
        TimelineFormat::Md => print!("{}", timeline.to_markdown(portcullis::clock::unix_now())),
    }
    Ok(())
}

async fn keys(action: KeysAction, args: StoreArgs) -> anyhow::Result<()> {
    let tier = match action {
        KeysAction::Init { tier } => return keys_init(&args.config, &tier),
        KeysAction::Rotate { tier } => tier,
    };
    let (cfg, sessions) = all_stores(&args).await?;
    let t = cfg
        .tiers
        .get(&tier)
        .ok_or_else(|| anyhow!("no tier `{tier}` in {}", args.config.display()))?;
    let path = assertion_key_file(&args.config, &tier)?;
    let old_kid = match &t.keys.assertion {
        Some(pem) => portcullis::assertion::SigningKey::from_pkcs8_pem(pem.expose_secret())
            .map(|k| k.kid().to_string())
            .ok(),
        None => None,
    };
    let pem = portcullis::assertion::generate_ed25519_pem()?;
    let new_kid = portcullis::assertion::SigningKey::from_pkcs8_pem(pem.as_bytes())?
        .kid()
        .to_string();
    // Written next to the old file and renamed over it, so a reload never reads half a key.
    let tmp = path.with_extension("pem.new");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    let entry = portcullis::audit::AuditEntry {
        target: format!("tier:{tier}"),
        tier: tier.clone(),
        reason: "assertion key rotation".into(),
        before: serde_json::json!({ "kid": old_kid }),
        after: serde_json::json!({ "kid": new_kid }),
        ..portcullis::audit::AuditEntry::by(&cli_actor(), "key.rotate", portcullis::clock::unix_now())
    };
    sessions.store(&tier)?.append_audit(&entry).await?;
    println!(
        "wrote a new assertion key for tier {tier} (kid {new_kid}) to {}; run `portcullis reload` or send SIGHUP to apply it",
        path.display()
    );
    Ok(())
}

/// `keys init`: a new tier's key files, and the `[keys]` table naming them.
fn keys_init(config: &std::path::Path, tier: &str) -> anyhow::Result<()> {
    let files = portcullis::provision::init_tier_keys(config, tier)?;
    println!(
        "wrote {} and {} (readable by you only); put this in tiers/{tier}.toml:\n\n{}",
        config.join(&files.cookie).display(),
        config.join(&files.assertion).display(),
        files.keys_table()
    );
    Ok(())
}

/// `operator token`: a new token and the tier file's entry for it.
fn operator(action: OperatorAction) -> anyhow::Result<()> {
    let OperatorAction::Token { name } = action;
    let name = name.trim();
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        anyhow::bail!("--name: give the operator's name, without quotes, backslashes or control characters");
    }
    let token = portcullis::provision::random_token();
    println!(
        "token for {name} (give it to them alone; Portcullis keeps only its hash):\n\n  {token}\n\n\
         add to the tier file (tiers/<tier>.toml) of each tier {name} operates:\n\n\
         [[operators]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"",
        portcullis::provision::token_sha256(&token)
    );
    Ok(())
}

/// The file behind a tier's `keys.assertion = "file:PATH"` (relative to the policy dir).
fn assertion_key_file(dir: &std::path::Path, tier: &str) -> anyhow::Result<PathBuf> {
    for entry in std::fs::read_dir(dir.join("tiers")).with_context(|| format!("cannot read {}/tiers", dir.display()))? {
        let path = entry?.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(table) = text.parse::<toml::Table>() else {
            continue;
        };
        if table.get("name").and_then(|n| n.as_str()) != Some(tier) {
            continue;
        }
        let reference = table
            .get("keys")
            .and_then(|k| k.get("assertion"))
            .and_then(|a| a.as_str())
            .ok_or_else(|| anyhow!("{}: tier `{tier}` has no keys.assertion; add `assertion = \"file:secrets/{tier}-assertion.pem\"` under [keys] first", path.display()))?;
        return match portcullis::secret::SecretRef::parse(reference) {
            Ok(portcullis::secret::SecretRef::File(file)) => Ok(dir.join(file)),
            _ => Err(anyhow!(
                "{}: keys.assertion is not a file: reference; rotate it where it is kept (environment, secret manager)",
                path.display()
            )),
        };
    }
    Err(anyhow!("no tier file names tier `{tier}`"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every argument and subcommand without a `--help` text, as `portcullis a b --flag`.
    fn undocumented(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.get_help().is_none() {
                found.push(format!("{path} --{}", arg.get_long().unwrap_or(arg.get_id().as_str())));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() {
                found.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, found);
        }
    }

    /// If this broke, `--help` would list a flag or command with nothing saying what it
    /// does, and a newcomer would have to read the source.
    #[test]
    fn every_flag_and_subcommand_has_a_help_text() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut found = Vec::new();
        undocumented(&cmd, "portcullis", &mut found);
        assert_eq!(found, Vec::<String>::new(), "undocumented in --help");
        // The walk reaches the nested commands and their flags.
        let user = cmd.find_subcommand("user").unwrap();
        let add = user.find_subcommand("add").unwrap();
        assert!(add.get_arguments().any(|a| a.get_long() == Some("username")));
    }

    /// If this broke, the lists would show raw unix seconds again, or a wrong "ago".
    #[test]
    fn list_times_read_as_date_time_and_how_long_ago() {
        let now = 1_796_576_580; // 2026-12-06 17:03:00 UTC
        assert_eq!(when(now - 300, now), "2026-12-06 16:58 UTC (5 minutes ago)");
        assert_eq!(when(now, now), "2026-12-06 17:03 UTC (just now)");
        assert_eq!(when(now - 3600, now), "2026-12-06 16:03 UTC (1 hour ago)");
        assert_eq!(when(now + 2 * 86_400, now), "2026-12-08 17:03 UTC (in 2 days)");
        assert_eq!(when(-5, now), "-5");
    }
}
