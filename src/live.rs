//! The live policy set and its reloads.
//!
//! A [`Snapshot`] is everything the request path needs for one policy version (config,
//! host map, TLS settings, upstream pools). Requests take the current snapshot once
//! and keep it to the end, so a reload applies atomically to new requests while
//! in-flight ones finish on the old version. A reload that fails validation changes
//! nothing; its errors are logged and reported by `/readyz`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::assertion::{Signer, SigningKey, generate_ed25519_pem};
use crate::config::{self, Config, ConfigError, Env, Overrides};
use crate::tenancy::HostMap;
use crate::tls;
use crate::upstream::UpstreamClient;

/// One policy version, ready to serve.
pub struct Snapshot {
    /// The validated policy set.
    pub config: Arc<Config>,
    /// Host → what it serves.
    pub sites: HostMap<Arc<Site>>,
    /// TLS settings for the public listener (None when plaintext).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Upstream pools by tenant id.
    pub upstreams: HashMap<String, UpstreamClient, foldhash::fast::RandomState>,
    /// Identity assertion signers by tier.
    pub signers: HashMap<String, Arc<TierSigner>>,
}

/// Everything the request path needs for one tenant, found with one lookup of the host.
pub struct Site {
    /// The tenant and its tier.
    pub entry: config::TenantEntry,
    /// Its upstream (None only if it could not be built, which validation prevents).
    pub upstream: Option<UpstreamClient>,
    /// Its tier's assertion signer.
    pub signer: Option<Arc<TierSigner>>,
    /// Its metric handles, resolved on first use.
    pub metrics: std::sync::OnceLock<crate::telemetry::TenantMetrics>,
}

/// A tier's assertion signer and where its key came from.
#[derive(Debug)]
pub struct TierSigner {
    /// Current and still-published retired keys.
    pub signer: Signer,
    /// The key was made at start because the policy names none (lost on restart).
    pub ephemeral: bool,
}

/// Outcome of the last reload, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// Digest of the policy set being served.
    pub serving_digest: String,
    /// Whether the most recent reload attempt was applied.
    pub last_reload_ok: bool,
    /// When it happened (RFC 3339), if any reload was attempted.
    pub last_reload_at: Option<String>,
    /// What triggered it.
    pub last_reload_trigger: Option<String>,
    /// `file:line: problem` lines of a failed reload.
    pub last_reload_errors: Vec<String>,
}

/// The live policy set.
pub struct Live {
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
    reloading: tokio::sync::Mutex<()>,
    dir: PathBuf,
    env: Arc<dyn Env>,
    overrides: Overrides,
    /// The last applied reload, for whoever tells other replicas about it.
    applied: tokio::sync::watch::Sender<Option<Applied>>,
}

/// A reload that was applied: the policy now served and what triggered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Digest of the policy now served.
    pub digest: String,
    /// What asked for the reload (`SIGHUP`, `change:<id>`, ...).
    pub trigger: String,
}

impl Live {
    /// Starts from a loaded config; fails when TLS material cannot be used.
    pub fn new(config: Config, env: Arc<dyn Env>, overrides: Overrides) -> Result<Arc<Self>, Vec<ConfigError>> {
        let dir = config.dir.clone();
        let snapshot = build_snapshot(config, None)?;
        let status = ReloadStatus {
            serving_digest: snapshot.config.digest.clone(),
            last_reload_ok: true,
            last_reload_at: None,
            last_reload_trigger: None,
            last_reload_errors: Vec::new(),
        };
        Ok(Arc::new(Live {
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(status),
            reloading: tokio::sync::Mutex::new(()),
            dir,
            env,
            overrides,
            applied: tokio::sync::watch::Sender::new(None),
        }))
    }

    /// Follows applied reloads (the current value is the last one, `None` before any).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<Option<Applied>> {
        self.applied.subscribe()
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Outcome of the last reload.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Loads and validates the policy set in `dir` with this gateway's environment and
    /// command-line overrides, without applying it: change requests check the policy they
    /// would produce on a copy before touching the real files. Blocking (reads files).
    pub fn validate_dir(&self, dir: &std::path::Path) -> Result<Config, Vec<ConfigError>> {
        config::load(dir, self.env.as_ref(), &self.overrides)
    }

    /// Reads, validates and applies the policy directory again. `trigger` says who or
    /// what asked (`SIGHUP`, `change:<id>`), for the change log. For callers with the
    /// right to change every tier (the local signal, approved change requests); the admin
    /// API checks [`PreparedReload::changed_tiers`] before applying.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<String, Vec<ConfigError>> {
        Ok(self.prepare_reload(trigger).await?.apply())
    }

    /// Reads and validates the policy directory and builds the new snapshot without
    /// serving it; reloads stay one at a time until the result is applied or dropped, so
    /// what the caller checked is what gets applied. A policy with errors is reported
    /// (log, `/readyz`) here.
    pub async fn prepare_reload(self: &Arc<Self>, trigger: &str) -> Result<PreparedReload<'_>, Vec<ConfigError>> {
        let one_at_a_time = self.reloading.lock().await;
        let this = self.clone();
        let old = self.snapshot();
        let result = tokio::task::spawn_blocking(move || {
            let config = config::load(&this.dir, this.env.as_ref(), &this.overrides)?;
            build_snapshot(config, Some(&this.snapshot()))
        })
        .await
        .unwrap_or_else(|e| {
            Err(vec![ConfigError {
                file: self.dir.clone(),
                line: None,
                message: format!("reload task failed: {e}"),
            }])
        });
        match result {
            Ok(snapshot) => Ok(PreparedReload {
                changed_tiers: old.config.effective.changed_tiers(&snapshot.config.effective),
                live: self,
                _one_at_a_time: one_at_a_time,
                old,
                snapshot,
                trigger: trigger.to_string(),
            }),
            Err(errors) => {
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                status.last_reload_at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
                status.last_reload_trigger = Some(trigger.to_string());
                status.last_reload_ok = false;
                status.last_reload_errors = errors.iter().map(ToString::to_string).collect();
                for e in &errors {
                    tracing::error!(event.action = "config_change", error = %e, "policy reload refused");
                }
                tracing::warn!(
                    event.kind = "event",
                    event.action = "config_change",
                    event.outcome = "failure",
                    trigger = trigger,
                    old_digest = %old.config.digest,
                    errors = errors.len(),
                    "policy reload refused; still serving the previous policy"
                );
                Err(errors)
            }
        }
    }
}

/// A validated policy set, built but not yet served. Dropping it changes nothing.
pub struct PreparedReload<'a> {
    live: &'a Live,
    /// Holds off other reloads, so nothing can slip in between the check and the apply.
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
    old: Arc<Snapshot>,
    snapshot: Snapshot,
    trigger: String,
    /// Tiers whose effective policy the reload changes (every tier when `gateway.toml`
    /// changed): who asked must have the right to change each of them.
    pub changed_tiers: std::collections::BTreeSet<String>,
}

impl PreparedReload<'_> {
    /// The policy being served.
    pub fn old(&self) -> &Config {
        &self.old.config
    }

    /// The policy that [`PreparedReload::apply`] would serve.
    pub fn new_config(&self) -> &Config {
        &self.snapshot.config
    }

    /// Serves the new policy to new requests; returns its digest.
    pub fn apply(self) -> String {
        let PreparedReload {
            live,
            _one_at_a_time,
            old,
            snapshot,
            trigger,
            ..
        } = self;
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut status = live.status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_reload_at = Some(at);
        status.last_reload_trigger = Some(trigger.clone());
        let new_digest = snapshot.config.digest.clone();
        if snapshot.config.gateway.listen.public != old.config.gateway.listen.public
            || snapshot.config.gateway.listen.admin != old.config.gateway.listen.admin
        {
            tracing::warn!("listener addresses changed; they apply at the next restart");
        }
        live.current.store(Arc::new(snapshot));
        live.applied.send_replace(Some(Applied {
            digest: new_digest.clone(),
            trigger: trigger.clone(),
        }));
        status.serving_digest = new_digest.clone();
        status.last_reload_ok = true;
        status.last_reload_errors.clear();
        tracing::info!(
            event.kind = "event",
            event.action = "config_change",
            event.outcome = "success",
            trigger = %trigger,
            old_digest = %old.config.digest,
            new_digest = %new_digest,
            "policy reloaded"
        );
        new_digest
    }
}

/// Builds a snapshot, reusing upstream pools of the previous one where the upstream is
/// unchanged.
fn build_snapshot(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, Vec<ConfigError>> {
    let tls = if config.gateway.listen.plaintext {
        None
    } else {
        Some(tls::server_config(&config.gateway.tls).map_err(|message| {
            vec![ConfigError {
                file: config.dir.join("gateway.toml"),
                line: None,
                message,
            }]
        })?)
    };
    let limits = &config.gateway.limits;
    let mut upstreams = HashMap::default();
    for tenant in &config.tenants {
        let Some(tier) = config.tiers.get(&tenant.tier) else {
            continue;
        };
        let reuse = previous
            .and_then(|p| p.upstreams.get(&tenant.id))
            .filter(|c| c.same_as(tenant, tier, limits))
            .cloned();
        let client = match reuse {
            Some(c) => c,
            None => UpstreamClient::new(tenant, tier, limits).map_err(|e| {
                vec![ConfigError {
                    file: config.dir.join("tiers"),
                    line: None,
                    message: format!("tier `{}`: {e}", tier.name),
                }]
            })?,
        };
        upstreams.insert(tenant.id.clone(), client);
    }
    let signers = build_signers(&config, previous)?;
    // One site per tenant, shared by its hosts.
    let mut by_tenant: HashMap<String, Arc<Site>> = HashMap::new();
    let sites = config.host_map().map(|_, entry| {
        by_tenant
            .entry(entry.tenant.id.clone())
            .or_insert_with(|| {
                Arc::new(Site {
                    upstream: upstreams.get(&entry.tenant.id).cloned(),
                    signer: signers.get(&entry.tier.name).cloned(),
                    metrics: std::sync::OnceLock::new(),
                    entry,
                })
            })
            .clone()
    });
    Ok(Snapshot {
        sites,
        config: Arc::new(config),
        tls,
        upstreams,
        signers,
    })
}

/// One signer per tier. A key named by the policy is used as it is; a changed key rotates
/// (the old public key stays published until its last assertion expired); a tier without
/// one keeps the key it was given at start, or gets a fresh one.
fn build_signers(
    config: &Config,
    previous: Option<&Snapshot>,
) -> Result<HashMap<String, Arc<TierSigner>>, Vec<ConfigError>> {
    let now = crate::clock::unix_now();
    let mut out = HashMap::new();
    for tier in config.tiers.values() {
        let before = previous.and_then(|p| p.signers.get(&tier.name));
        let problem = |message: String| {
            vec![ConfigError {
                file: config.dir.join("tiers"),
                line: None,
                message: format!("tier `{}`: {message}", tier.name),
            }]
        };
        let signer = match (&tier.keys.assertion, before) {
            (None, Some(b)) if b.ephemeral => b.clone(),
            (None, _) => {
                let pem = generate_ed25519_pem().map_err(|e| problem(e.to_string()))?;
                let key = SigningKey::from_pkcs8_pem(pem.as_bytes()).map_err(|e| problem(e.to_string()))?;
                tracing::warn!(
                    tier = %tier.name,
                    kid = key.kid(),
                    "no keys.assertion in the tier policy: signing identity assertions with a key made at start (it changes on restart)"
                );
                Arc::new(TierSigner {
                    signer: match before {
                        Some(b) => b.signer.rotated(key, now),
                        None => Signer::new(key),
                    },
                    ephemeral: true,
                })
            }
            (Some(pem), before) => {
                let key = SigningKey::from_pkcs8_pem(pem.expose_secret()).map_err(|e| problem(e.to_string()))?;
                match before {
                    Some(b) if !b.ephemeral && b.signer.current().kid() == key.kid() => b.clone(),
                    Some(b) => Arc::new(TierSigner {
                        signer: b.signer.rotated(key, now),
                        ephemeral: false,
                    }),
                    None => Arc::new(TierSigner {
                        signer: Signer::new(key),
                        ephemeral: false,
                    }),
                }
            }
        };
        out.insert(tier.name.clone(), signer);
    }
    Ok(out)
}
