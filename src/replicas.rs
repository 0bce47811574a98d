//! Keeps this replica in step with the others on a shared store: acts on their change
//! events and fails closed while it cannot hear them.
//!
//! Owns what an event means here: revoked sessions are evicted from the session cache
//! (through the cache's own eviction path, so the revocation-generation guarantee holds),
//! a changed kill switch evicts its scope and refreshes the board at once, and a policy
//! reload elsewhere reloads the shared policy files here. It also publishes this
//! replica's own applied reloads.
//!
//! Pub/sub cannot replay missed events, so while any tier's subscription is lost every
//! session lookup fails (`503` on authenticated requests; public routes keep working) and
//! `/readyz` says why. When every tier is subscribed again, the kill switch board is
//! reloaded from the store and the session cache dropped, and only then are sessions
//! served again. The transport (connections, backoff, `PING`) is `store::events`; the
//! cache and the board are `session` and `killswitch`; this module only decides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::killswitch::KillSwitches;
use crate::live::Live;
use crate::session::Sessions;
use crate::store::events::{Event, EventSink};

/// How soon a failed board refresh (after a resubscription or a switch event) is retried.
const RETRY: Duration = Duration::from_millis(200);

/// Trigger of reloads made because another replica reloaded; they are not published
/// again, so replicas never echo each other's reloads.
pub const REPLICA_TRIGGER: &str = "replica: policy reloaded on another replica";

/// This replica's side of the change events.
pub struct Replica {
    /// The cache to evict from, and the fail-closed switch.
    sessions: Arc<Sessions>,
    /// The board to reload.
    switches: Arc<KillSwitches>,
    /// The policy to reload, and the config the board is read for.
    live: Arc<Live>,
    /// What the subscriptions said.
    state: Mutex<Following>,
    /// Wakes [`Replica::run`] when there is work for it.
    wake: Notify,
}

/// What the subscriptions said, and the work it left.
struct Following {
    /// Tiers not subscribed, with why (shown by `/readyz`).
    lost: BTreeMap<String, String>,
    /// Advanced by every loss, so a rebuild that a loss overtook does not resume serving.
    losses: u64,
    /// The board must be reloaded and the cache dropped before sessions are served again.
    rebuild: bool,
    /// A switch changed elsewhere: reload the board.
    refresh: bool,
    /// Another replica now serves this policy digest.
    reload: Option<String>,
}

impl Replica {
    /// Follows events for the policy's tiers; nothing is followed until the bus calls in,
    /// so with a shared bus sessions stay refused until every tier is subscribed.
    pub fn new(sessions: Arc<Sessions>, switches: Arc<KillSwitches>, live: Arc<Live>) -> Arc<Self> {
        let lost = live
            .snapshot()
            .config
            .tiers
            .keys()
            .map(|tier| (tier.clone(), "not subscribed yet".to_string()))
            .collect();
        Arc::new(Replica {
            sessions,
            switches,
            live,
            state: Mutex::new(Following {
                lost,
                losses: 0,
                rebuild: true,
                refresh: false,
                reload: None,
            }),
            wake: Notify::new(),
        })
    }

    fn following(&self) -> std::sync::MutexGuard<'_, Following> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Does the work the events leave (board refreshes, rebuilds, reloads) and publishes
    /// this replica's reloads, until `stop` flips.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.sessions.events().is_shared() {
            return;
        }
        let mut applied = self.live.applied();
        loop {
            let pending = {
                let f = self.following();
                f.rebuild || f.refresh || f.reload.is_some()
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(RETRY), if pending => {}
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let reload = applied.borrow_and_update().clone();
                    if let Some(reload) = reload.filter(|r| r.trigger != REPLICA_TRIGGER) {
                        self.publish_reload(&reload.digest).await;
                    }
                }
                _ = stop.changed() => return,
            }
            self.work().await;
        }
    }

    async fn work(&self) {
        let (rebuild, losses, refresh, reload) = {
            let mut f = self.following();
            let rebuild = f.rebuild && f.lost.is_empty();
            let refresh = std::mem::take(&mut f.refresh);
            (rebuild, f.losses, refresh || rebuild, f.reload.take())
        };
        if refresh {
            let config = self.live.snapshot().config.clone();
            match self.switches.refresh(&config, crate::clock::unix_now()).await {
                Ok(()) if rebuild => {
                    let mut f = self.following();
                    if f.losses == losses && f.lost.is_empty() {
                        self.sessions.drop_cache();
                        self.sessions.resume_serving();
                        f.rebuild = false;
                        tracing::info!("change events followed; kill switches reloaded, session cache dropped");
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "kill switch refresh after a change event failed; retrying");
                    self.following().refresh = true;
                }
            }
        }
        if let Some(digest) = reload
            && self.live.snapshot().config.digest != digest
        {
            tracing::info!(digest = %digest, "another replica reloaded the policy; reloading the policy files");
            let _ = self.live.reload(REPLICA_TRIGGER).await;
        }
    }

    /// The policy serves every tier, so one tier's channel (the first) carries its
    /// reloads: every replica follows all tiers, and hears it once.
    async fn publish_reload(&self, digest: &str) {
        let event = Event::PolicyReloaded {
            digest: digest.to_string(),
        };
        let first = self.live.snapshot().config.tiers.keys().next().cloned();
        if let Some(tier) = first {
            self.sessions.publish(&tier, &event).await;
        }
    }
}

#[async_trait::async_trait]
impl EventSink for Replica {
    fn subscribed(&self, tier: &str) {
        let mut f = self.following();
        f.lost.remove(tier);
        f.rebuild = true;
        drop(f);
        self.wake.notify_one();
    }

    fn lost(&self, tier: &str, reason: &str) {
        let mut f = self.following();
        f.lost.insert(tier.to_string(), reason.to_string());
        f.losses = f.losses.wrapping_add(1);
        f.rebuild = true;
        // Under the lock: a rebuild finishing now either sees this loss or resumed before it.
        self.sessions
            .stop_serving(&format!("session events: {reason} (tier {tier})"));
    }

    async fn event(&self, _tier: &str, event: Event) {
        match event {
            Event::SessionsRevoked { .. } => self.sessions.evict_remote(&event.revoked_ids()),
            Event::SwitchChanged { scope } => {
                self.sessions.evict_scope(&scope);
                // On the board before the acknowledgement; retried by `run` if the store
                // cannot answer (the 1 s refresh is the backstop either way).
                let config = self.live.snapshot().config.clone();
                if let Err(e) = self.switches.refresh(&config, crate::clock::unix_now()).await {
                    tracing::warn!(error = %e, "kill switch refresh after a change event failed; retrying");
                    self.following().refresh = true;
                    self.wake.notify_one();
                }
            }
            Event::PolicyReloaded { digest } => {
                self.following().reload = Some(digest);
                self.wake.notify_one();
            }
        }
    }
}
