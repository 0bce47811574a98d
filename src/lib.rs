//! Portcullis: a multi-tenant security gateway for SaaS apps.
//!
//! # Layout
//! Bottom up: a module uses only modules listed before it, so dependencies point down
//! (CI checks the graph has no cycle: `python3 .ci/modgraph --check src`).
//!
//! Leaves, plain data and rules with no I/O:
//! - [`clock`]: now as unix seconds, read once at the edge and passed down.
//! - [`secret`]: secret references, redacted secret types, parsed private keys.
//! - [`account`]: who a user is: (identity provider, subject) and the account key.
//! - [`tenancy`]: the spelling rules of tier names, tenant ids and hosts; host lookup.
//! - [`path`]: request-path normalisation (what is authorised is what is forwarded).
//! - [`conn_watch`]: the idle and header-read limits on a client connection, one set of
//!   rules for both listeners.
//! - [`policy`]: route rules → decision.
//! - [`audit`]: audit records and their hash chain.
//! - [`records`]: what the store keeps: sessions, local users, sign-in history, kill
//!   switches, change requests.
//! - [`assertion`]: the signed identity assertion, the tiers' keys and the JWKS.
//! - [`telemetry`]: JSON logs, security events (ECS) and Prometheus metrics.
//! - [`provision`]: a new tier's key files and operator tokens with their hashes.
//!
//! Policy, state and the way to the apps:
//! - [`config`]: policy files → validated, typed [`config::Config`]; every policy rule.
//! - [`otel`]: OpenTelemetry traces (off unless configured): the exporter, the request
//!   span, W3C trace context.
//! - [`store`]: each tier's state (SQLite or Redis), one trait per role.
//! - [`incident`]: incident references (`INC-42`) and an incident's timeline, read from
//!   the audit logs.
//! - [`tls`]: the listeners' TLS settings, built from the certificates in config.
//! - [`upstream`]: the way to tenants' apps: pooled clients, allowlisted resolution, TLS
//!   to upstreams, and each upstream's circuit breaker and bulkhead.
//! - [`live`]: the live policy snapshot and atomic reloads; the tiers' assertion keys
//!   shared through their stores.
//!
//! Services, shared by every interface and free of HTTP:
//! - [`session`]: sessions: tokens, the cache, revocation, open connections.
//! - [`killswitch`]: kill switches (tier, tenant, account): trip, reset, expiry, auto-trip
//!   rules, and the table requests read.
//! - [`auth`]: passwords, TOTP, OIDC single sign-on, the sign-in flow and local accounts.
//! - [`changes`]: four-eyes change requests for isolation controls (policy edits, tier
//!   resets).
//! - [`replicas`]: acts on other replicas' change events (revocations, kill switches,
//!   reloads) and fails closed while they cannot be heard.
//!
//! Edges, which parse requests and render answers:
//! - [`ui`]: the gateway's own pages and JSON API under `/.portcullis/` on tenant hosts.
//! - [`proxy`]: the public listener (hyper, rustls): the request pipeline, header hygiene,
//!   the one refusal → response map, WebSocket tunnels.
//! - [`admin`]: the admin listener (axum): health, readiness, metrics, operator API.
//! - [`console`]: the operator console, `/console/` on the admin listener.
//! - [`demo`]: `portcullis demo` with built-in echo upstreams.
//! - the `portcullis` binary's `cli` module: the command line.
//!
//! [`Gateway`] wires them: bind listeners, serve until SIGTERM, reload on SIGHUP.

// Outside input never reaches an unwrap: the request path, the CLI and the loaders
// return errors instead (tests may unwrap; CI runs clippy on the non-test build).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod account;
pub mod admin;
pub mod assertion;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod clock;
pub mod config;
pub mod conn_watch;
pub mod console;
pub mod demo;
pub mod housekeeping;
pub mod incident;
pub mod killswitch;
pub mod live;
pub mod openapi;
pub mod otel;
pub mod path;
pub mod policy;
pub mod provision;
pub mod proxy;
pub mod records;
pub mod replicas;
pub mod secret;
pub mod session;
pub mod siem;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod tls;
pub mod ui;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, Env, Overrides};
use crate::live::Live;
use crate::proxy::pipeline::Pipeline;
use crate::telemetry::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy set (or its TLS material) is invalid.
    #[error("invalid policy:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<ConfigError>),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address that failed.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The session store could not be opened.
    #[error("cannot open the session store: {0}")]
    Store(#[from] store::StoreError),
    /// The stored kill switches could not be loaded (the gateway never starts without them).
    #[error("cannot load kill switches: {0}")]
    KillSwitches(killswitch::KillSwitchError),
    /// The password hashing pool could not start.
    #[error("cannot start password hashing: {0}")]
    Hasher(#[from] auth::password::PasswordError),
    /// The admin listener's certificate and key (`[listen.admin_tls]`) cannot be used.
    #[error("cannot set up TLS on the admin listener: {0}")]
    AdminTls(String),
    /// A listener failed while serving.
    #[error("listener failed: {0}")]
    Serve(std::io::Error),
    /// The SIGTERM/SIGINT/SIGHUP handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A gateway with bound listeners, ready to serve.
pub struct Gateway {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    portal: ui::Portal,
    /// Follows the other replicas' change events (idle with the embedded store).
    replica: Arc<replicas::Replica>,
    public: TcpListener,
    admin: TcpListener,
    /// The admin listener's TLS settings (`[listen.admin_tls]`), built at start; `None`
    /// serves plain HTTP.
    admin_tls: Option<Arc<rustls::ServerConfig>>,
    /// Installed before the listeners are bound, so a signal that arrives as soon as a
    /// client can connect is handled, never the default (fatal) action.
    signals: Signals,
}

impl Gateway {
    /// Binds both listeners for a validated policy set.
    pub async fn bind(config: Config, env: Arc<dyn Env>, overrides: Overrides) -> Result<Self, StartError> {
        let public_addr = config.gateway.listen.public;
        let admin_addr = config.gateway.listen.admin;
        // Before anything opens: a certificate that does not fit its key stops the start.
        let admin_tls = match &config.gateway.listen.admin_tls {
            Some(admin_tls) => Some(tls::admin_server_config(admin_tls).map_err(StartError::AdminTls)?),
            None => None,
        };
        let signals = Signals::install().map_err(StartError::Signals)?;
        let stores = store::Stores::open_for(&config.gateway.store.url, &config.tier_access()).await?;
        let events = store::events::EventBus::open_for(&config.gateway.store.url, &config.tier_access()).await?;
        let sessions = session::Sessions::configured(stores, events.clone(), config.gateway.store.max_staleness);
        let switches = killswitch::KillSwitches::new(sessions.clone());
        switches
            .refresh(&config, clock::unix_now())
            .await
            .map_err(StartError::KillSwitches)?;
        let hasher = auth::password::PasswordHasher::new(auth::password::PasswordHasherConfig::default())?;
        let metrics = Metrics::new();
        let login = auth::login::LocalLogin {
            sessions: sessions.clone(),
            hasher,
            switches: switches.clone(),
            logins: metrics.logins.clone(),
        };
        let oidc = Arc::new(auth::oidc_client::OidcClient::new());
        let portal = ui::Portal {
            accounts: auth::accounts::Accounts::new(login.clone()),
            login,
            sso_admin: auth::sso_admin::SsoAdmin::new(sessions.clone(), oidc.clone()),
            sessions,
            switches,
            oidc,
        };
        let live = Live::new(config, env, overrides).map_err(StartError::Policy)?;
        let replica = replicas::Replica::new(portal.sessions.clone(), portal.switches.clone(), live.clone());
        events.follow(replica.clone());
        let public = TcpListener::bind(public_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: public_addr,
                source,
            })?;
        let admin = TcpListener::bind(admin_addr).await.map_err(|source| StartError::Bind {
            addr: admin_addr,
            source,
        })?;
        Ok(Gateway {
            live,
            metrics,
            portal,
            replica,
            public,
            admin,
            admin_tls,
            signals,
        })
    }

    /// Sessions, users and the sign-in flow (the demo seeds users through it).
    pub fn portal(&self) -> &ui::Portal {
        &self.portal
    }

    /// Address of the public listener (useful when bound to port 0).
    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until SIGTERM or SIGINT (then drains in-flight requests); SIGHUP reloads
    /// the policy.
    pub async fn run(self) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let pipeline = Pipeline::new(self.live.clone(), self.metrics.clone(), self.portal.clone());
        let change_ttl = changes::ttl_from(std::env::var(changes::TTL_ENV).ok().as_deref()).unwrap_or_else(|e| {
            tracing::warn!("{e}; pending changes expire after {} s", changes::DEFAULT_TTL_SECS);
            changes::DEFAULT_TTL_SECS
        });
        let admin_state = admin::AdminState {
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            switches: self.portal.switches.clone(),
            changes: changes::Changes::new(self.live.clone(), self.portal.switches.clone(), change_ttl),
        };
        tokio::spawn(
            self.portal
                .switches
                .clone()
                .keep_fresh(self.live.clone(), stop_rx.clone()),
        );
        // Before serving: a restarted replica's JWKS already has the keys of its last run.
        let sessions = self.portal.sessions.clone();
        let mut keys = live::KeySharing::new(
            self.live.clone(),
            Box::new(move |tier| sessions.store(tier).ok().map(|s| s as Arc<dyn store::KeyStore>)),
        );
        keys.sync(clock::unix_now()).await;
        tokio::spawn(keys.run(stop_rx.clone()));
        tokio::spawn(housekeeping::purge_loop(
            self.portal.sessions.clone(),
            self.live.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(self.replica.clone().run(stop_rx.clone()));
        let siem = siem::start(
            &self.live.snapshot().config.gateway.siem,
            self.metrics.siem_dropped.clone(),
        );
        wait_for_events(&self.portal.sessions).await;
        let admin = tokio::spawn(admin::serve(self.admin, admin_state, self.admin_tls, stop_rx.clone()));
        let public = tokio::spawn(proxy::serve(self.public, pipeline, stop_rx));
        tracing::info!("gateway serving");
        self.signals.wait(&self.live).await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = public.await;
        let served = admin.await;
        // After the drain: the events of the last requests go out too.
        siem.finish(siem::FINAL_FLUSH).await;
        match served {
            Ok(Err(e)) => Err(StartError::Serve(e)),
            _ => Ok(()),
        }
    }
}

/// Gives the first subscription to the other replicas' events a moment, so a replica does
/// not start by refusing sessions; after that it serves regardless (failing closed on
/// sessions, with `/readyz` saying why, until the events are followed).
async fn wait_for_events(sessions: &session::Sessions) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Err(reason) = sessions.serving() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                reason,
                "serving without change events; sessions are refused until they are followed"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The signals the gateway answers: SIGTERM and SIGINT stop it, SIGHUP reloads the policy.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGTERM or SIGINT; reloads the policy on every SIGHUP meanwhile.
    async fn wait(mut self, live: &Arc<Live>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    let _ = live.reload("SIGHUP").await;
                }
            }
        }
    }
}
