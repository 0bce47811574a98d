//! The live policy set and its reloads.
//!
//! A [`Snapshot`] is everything the request path needs for one policy version (config,
//! host map, TLS settings, upstream pools). Requests take the current snapshot once
//! and keep it to the end, so a reload applies atomically to new requests while
//! in-flight ones finish on the old version. A reload that fails validation changes
//! nothing; its errors are logged and reported by `/readyz`.
//!
//! Also owns sharing the tiers' assertion keys through their stores ([`KeySharing`]):
//! every replica publishes the keys it signs with (and the ones it just retired) for as
//! long as an assertion they signed may still be verified, and serves in its JWKS the
//! keys every replica and earlier run of the tier published, read back periodically so
//! the request path never waits on the store.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::assertion::{SharedKey, Signer, SigningKey, generate_ed25519_pem, publish_until};
use crate::config::{self, Config, ConfigError, Env, Overrides};
use crate::store::{KeyStore, PublishedKey, StoreError};
use crate::telemetry::{EventOutcome, SecurityEvent};
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

/// How often each replica publishes its tiers' signing keys and reads back what every
/// replica published.
pub const KEY_SYNC_PERIOD: Duration = Duration::from_secs(10);

/// How far past `now` a replica counts on signing with its current key when it
/// publishes it: two sync periods, so one late or failed sync never lets the key's
/// publication lapse while it still signs.
const KEY_SYNC_MARGIN_SECS: i64 = 20;

// A margin shorter than the time to the next publication would let a key drop out of the
// JWKS while replicas still sign with it.
const _: () = assert!(KEY_SYNC_MARGIN_SECS as u64 >= 2 * KEY_SYNC_PERIOD.as_secs());

/// The live policy set.
pub struct Live {
    current: ArcSwap<Snapshot>,
    /// The assertion keys published in each tier's store (by every replica, and by this
    /// one before a restart), as last read; the JWKS serves them beside the signer's own.
    shared_keys: ArcSwap<HashMap<String, Arc<[SharedKey]>>>,
    /// Woken by a reload, so a rotated-out key is published with its final window at once.
    keys_changed: tokio::sync::Notify,
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
            shared_keys: ArcSwap::from_pointee(HashMap::new()),
            keys_changed: tokio::sync::Notify::new(),
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

    /// The assertion keys the tier's store publishes, as last read (empty before the
    /// first read); [`Signer::jwks_with`] merges them into the tier's JWKS.
    pub fn shared_keys(&self, tier: &str) -> Arc<[SharedKey]> {
        self.shared_keys
            .load()
            .get(tier)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
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
                    trigger = trigger,
                    old_digest = %old.config.digest,
                    errors = errors.len(),
                    "policy reload refused; still serving the previous policy"
                );
                SecurityEvent {
                    reason: Some("the new policy does not validate"),
                    system: Some(trigger),
                    target: Some("policy"),
                    ..SecurityEvent::new("config_change", EventOutcome::Failure)
                }
                .warn("policy reload refused");
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
        live.keys_changed.notify_one();
        live.applied.send_replace(Some(Applied {
            digest: new_digest.clone(),
            trigger: trigger.clone(),
        }));
        status.serving_digest = new_digest.clone();
        status.last_reload_ok = true;
        status.last_reload_errors.clear();
        tracing::info!(
            trigger = %trigger,
            old_digest = %old.config.digest,
            new_digest = %new_digest,
            "policy reloaded"
        );
        let target = format!("policy:{new_digest}");
        SecurityEvent {
            reason: Some("policy reloaded"),
            system: Some(&trigger),
            target: Some(&target),
            ..SecurityEvent::new("config_change", EventOutcome::Success)
        }
        .info("policy reloaded");
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

/// Where [`KeySharing`] finds a tier's store (`None` for a tier opened after start).
pub type KeyStores = Box<dyn Fn(&str) -> Option<Arc<dyn KeyStore>> + Send + Sync>;

/// Keeps the tiers' assertion keys published in their stores and the JWKS's view of
/// them fresh: one sync at start (before the listeners serve), then every
/// [`KEY_SYNC_PERIOD`] and after every reload.
pub struct KeySharing {
    /// The signers to publish and where the keys read back go.
    live: Arc<Live>,
    /// The tiers' stores.
    stores: KeyStores,
    /// Tiers whose last sync failed: a failure is logged when it starts and when it ends,
    /// not every period.
    failing: HashSet<String>,
    /// Published entries found unusable, by (tier, kid): each is logged once.
    reported: HashSet<(String, String)>,
}

impl KeySharing {
    /// Sharing for `live`'s tiers through `stores`.
    pub fn new(live: Arc<Live>, stores: KeyStores) -> Self {
        KeySharing {
            live,
            stores,
            failing: HashSet::new(),
            reported: HashSet::new(),
        }
    }

    /// One round at `now`: publishes every tier's keys and reads back what the tier's
    /// store publishes. A tier whose store fails keeps the keys last read.
    pub async fn sync(&mut self, now: i64) {
        let snapshot = self.live.snapshot();
        let mut shared = HashMap::clone(&self.live.shared_keys.load());
        for (tier, signer) in &snapshot.signers {
            let Some(store) = (self.stores)(tier) else {
                continue;
            };
            match sync_tier(store.as_ref(), &signer.signer, now).await {
                Ok(published) => {
                    if self.failing.remove(tier) {
                        tracing::info!(tier = %tier, "assertion keys shared through the store again");
                    }
                    shared.insert(tier.clone(), self.usable(tier, published).into());
                }
                Err(e) => {
                    if self.failing.insert(tier.clone()) {
                        tracing::warn!(
                            tier = %tier,
                            error = %e,
                            "cannot share assertion keys through the store; serving the keys last read"
                        );
                    }
                }
            }
        }
        self.live.shared_keys.store(Arc::new(shared));
    }

    /// Syncs every [`KEY_SYNC_PERIOD`] and after each reload until `stop`.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(KEY_SYNC_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the caller synced once before serving.
        tick.tick().await;
        let live = self.live.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = live.keys_changed.notified() => {}
                _ = stop.changed() => return,
            }
            self.sync(crate::clock::unix_now()).await;
        }
    }

    /// The entries that are keys this tier may publish; each other one is logged once
    /// and left out, so one damaged entry never breaks the JWKS.
    fn usable(&mut self, tier: &str, published: Vec<PublishedKey>) -> Vec<SharedKey> {
        let mut keys = Vec::with_capacity(published.len());
        for entry in published {
            match SharedKey::parse(&entry.jwk, entry.until) {
                Ok(key) if key.kid() == entry.kid => keys.push(key),
                outcome => {
                    if self.reported.insert((tier.to_string(), entry.kid.clone())) {
                        let problem = outcome
                            .err()
                            .map_or_else(|| "its kid is not the key's".to_string(), |e| e.to_string());
                        tracing::warn!(tier = %tier, kid = %entry.kid, problem = %problem, "ignoring an unusable published assertion key");
                    }
                }
            }
        }
        keys
    }
}

/// Publishes a tier's keys at `now` and returns what its store publishes.
async fn sync_tier(store: &dyn KeyStore, signer: &Signer, now: i64) -> Result<Vec<PublishedKey>, StoreError> {
    for key in publications(signer, now) {
        store.publish_assertion_key(&key).await?;
    }
    store.published_assertion_keys(now).await
}

/// What a replica publishes for a tier at `now`: its current key until one assertion
/// window after the latest moment it may still sign with it before publishing again
/// (`now` plus [`KEY_SYNC_MARGIN_SECS`]), and each retired key until its own window ends.
fn publications(signer: &Signer, now: i64) -> Vec<PublishedKey> {
    let current = signer.current();
    let mut out = vec![PublishedKey {
        kid: current.kid().to_string(),
        jwk: current.jwk().to_string(),
        until: publish_until(now.saturating_add(KEY_SYNC_MARGIN_SECS)),
    }];
    for (jwk, until) in signer.retired_keys(now) {
        if let Some(kid) = jwk.get("kid").and_then(serde_json::Value::as_str) {
            out.push(PublishedKey {
                kid: kid.to_string(),
                jwk: jwk.to_string(),
                until,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assertion::{CLOCK_SKEW_SECS, Claims, MAX_LIFETIME_SECS, Verifier};

    const NOW: i64 = 1_700_000_000;

    fn key() -> SigningKey {
        SigningKey::from_pkcs8_pem(generate_ed25519_pem().unwrap().as_bytes()).unwrap()
    }

    fn claims(iat: i64) -> Claims {
        Claims {
            iss: "urn:portcullis:tier:prod".into(),
            aud: "acme".into(),
            sub: "alice".into(),
            idp: "local".into(),
            tenant: "acme".into(),
            tier: "prod".into(),
            sid: "abc".into(),
            amr: vec!["pwd".into()],
            roles: vec![],
            email: None,
            iat,
            exp: iat + MAX_LIFETIME_SECS,
        }
    }

    /// If this broke, an assertion signed just before a restart (the last moment before
    /// the next publication would have come) could outlive its key's publication.
    #[test]
    fn the_current_key_stays_published_for_every_assertion_it_may_sign_before_the_next_sync() {
        let signer = Signer::new(key());
        let published = publications(&signer, NOW);
        assert_eq!(published.len(), 1);
        let current = &published[0];
        assert_eq!(current.kid, signer.current().kid());
        assert_eq!(
            current.until,
            NOW + KEY_SYNC_MARGIN_SECS + MAX_LIFETIME_SECS + CLOCK_SKEW_SECS
        );

        // Signed at the last second before the publication would be renewed: still
        // verifiable with the published keys only until `until`, and not after.
        let last_signing = NOW + KEY_SYNC_MARGIN_SECS;
        let token = signer.sign(&claims(last_signing)).unwrap();
        let shared = [SharedKey::parse(&current.jwk, current.until).unwrap()];
        let other = Signer::new(key());
        let jwks = |at: i64| Verifier::from_jwks_json(&other.jwks_with(&shared, at).to_string()).unwrap();
        assert!(
            jwks(current.until - 1)
                .verify(&token, None, "acme", current.until - 1)
                .is_ok()
        );
        assert!(
            jwks(current.until)
                .verify(&token, None, "acme", current.until - 1)
                .is_err(),
            "gone from the JWKS once its window is over"
        );
    }

    /// A live policy with one tier, `staging`, whose key is made at start.
    fn staging_only(dir: &std::path::Path) -> Arc<Live> {
        for (name, text) in [
            (
                "gateway.toml",
                "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nplaintext = true\n",
            ),
            (
                "tiers/staging.toml",
                "name = \"staging\"\nupstream_allowlist = [\"127.0.0.1\"]\n\n[keys]\ncookie = \"inline:staging-cookie-key-0123456789abcdef-xyz\"\n",
            ),
            (
                "tenants/acme.toml",
                "id = \"acme\"\ntier = \"staging\"\nhosts = [\"acme.test\"]\nupstream = \"http://127.0.0.1:3000\"\n",
            ),
        ] {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let env: Arc<dyn Env> = Arc::new(HashMap::<String, String>::new());
        let config = config::load(dir, env.as_ref(), &Overrides::default()).unwrap();
        Live::new(config, env, Overrides::default()).unwrap()
    }

    fn kids(keys: &[SharedKey]) -> Vec<&str> {
        keys.iter().map(SharedKey::kid).collect()
    }

    /// If this broke, a replica would not serve what other replicas publish, one bad
    /// entry would break its JWKS, or a store outage would empty it.
    #[tokio::test]
    async fn sync_publishes_reads_back_and_survives_a_failing_store() {
        let tmp = tempfile::tempdir().unwrap();
        let live = staging_only(&tmp.path().join("policy"));
        let data = tmp.path().join("data");
        let store = Arc::new(crate::store::SqliteStore::open(&data, "staging").await.unwrap());
        let ours = live.snapshot().signers["staging"].signer.current().kid().to_string();

        // Another replica's key, and an entry that is no key at all.
        let other = key();
        let published_other = PublishedKey {
            kid: other.kid().to_string(),
            jwk: other.jwk().to_string(),
            until: NOW + 100,
        };
        store.publish_assertion_key(&published_other).await.unwrap();
        let junk = PublishedKey {
            kid: "junk".into(),
            jwk: "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"junk\"}".into(),
            until: NOW + 100,
        };
        store.publish_assertion_key(&junk).await.unwrap();

        let handle = store.clone();
        let mut sharing = KeySharing::new(
            live.clone(),
            Box::new(move |tier| (tier == "staging").then(|| handle.clone() as Arc<dyn KeyStore>)),
        );
        sharing.sync(NOW).await;
        let mut expected = vec![ours.as_str(), other.kid()];
        expected.sort_unstable();
        assert_eq!(kids(&live.shared_keys("staging")), expected, "junk left out");
        let in_store = store.published_assertion_keys(NOW).await.unwrap();
        let own = in_store.iter().find(|k| k.kid == ours).expect("own key published");
        assert_eq!(own.until, publish_until(NOW + KEY_SYNC_MARGIN_SECS));

        // The store breaks: the keys last read are still served.
        let conn = rusqlite::Connection::open(data.join("staging.sqlite3")).unwrap();
        conn.execute_batch("DROP TABLE assertion_keys").unwrap();
        sharing.sync(NOW + 10).await;
        assert_eq!(kids(&live.shared_keys("staging")), expected);
        assert!(sharing.failing.contains("staging"));
        let snapshot = live.snapshot();
        let jwks = snapshot.signers["staging"]
            .signer
            .jwks_with(&live.shared_keys("staging"), NOW + 10);
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert!(live.shared_keys("prod").is_empty());
    }

    /// If this broke, a reload's rotation would publish the old key for the full margin
    /// again (keeping it longer than needed) or not at all.
    #[test]
    fn a_rotated_out_key_is_published_until_its_own_window_ends() {
        let old = Signer::new(key());
        let old_kid = old.current().kid().to_string();
        let rotated = old.rotated(key(), NOW);
        let published = publications(&rotated, NOW + 1);
        assert_eq!(published.len(), 2);
        assert_eq!(published[0].kid, rotated.current().kid());
        assert_eq!(published[1].kid, old_kid);
        assert_eq!(published[1].until, NOW + MAX_LIFETIME_SECS + CLOCK_SKEW_SECS);
        assert!(SharedKey::parse(&published[1].jwk, published[1].until).is_ok());
        assert_eq!(
            publications(&rotated, NOW + MAX_LIFETIME_SECS + CLOCK_SKEW_SECS).len(),
            1,
            "nothing retired once its window is over"
        );
    }
}
