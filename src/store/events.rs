//! Change events between replicas that share a Redis store: revocations, kill switch
//! trips and resets, and policy reloads are published on Redis pub/sub as soon as the
//! store write that makes them took effect, and every replica follows them.
//!
//! Owns the wire format ([`Event`] in an envelope naming the publishing process), the
//! channel of each tier (`portcullis:<tier>:events`, under the tier's key prefix, so a
//! tier's ACL user reaches it with the channel pattern `&portcullis:<tier>:*`), the
//! publishing connections, and one dedicated pub/sub connection per tier with its
//! reconnect loop (exponential backoff with jitter, capped at [`BACKOFF_CAP`]) and its
//! liveness check (a `PING` every [`PING_EVERY`]).
//!
//! Publishing waits for every other follower's acknowledgement (sent once its
//! [`EventSink::event`] returned, i.e. once it acted), up to [`ACK_TIMEOUT`]: a revocation
//! that returned is in force on every replica that hears the tier, not merely on its way.
//! `PUBLISH` says how many subscribers got the event; that many (less this process's own
//! subscription) acknowledgements are awaited.
//!
//! Pub/sub has no replay: whoever follows the events is told when a subscription is lost
//! ([`EventSink::lost`]) and when it is (re)established ([`EventSink::subscribed`]), and
//! must assume it missed events in between. What an event means for caches and the
//! request path is the followers' business (see `crate::replicas`); this module knows
//! nothing of them. With the embedded SQLite store there is one process and no bus:
//! publishing does nothing and there is nothing to follow.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::redis::AsyncCommands;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreLocation};
use crate::records::Scope;

/// How often a quiet subscription is checked with `PING`: a connection that died without
/// a reset (a lost network path) is noticed within this plus [`PING_TIMEOUT`].
pub const PING_EVERY: Duration = Duration::from_millis(500);

/// How long a `PING` on the subscription may take before it counts as lost.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// First wait before reconnecting a lost subscription.
pub const BACKOFF_START: Duration = Duration::from_millis(50);

/// Longest wait between reconnect attempts, so a Redis that comes back is followed
/// again within about this much.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Longest wait for the other followers' acknowledgements of a published event; a
/// follower slower than this (or gone without its connection closing yet) no longer
/// holds up the caller, and has to catch up by itself.
pub const ACK_TIMEOUT: Duration = Duration::from_millis(250);

/// Longest time to open a pub/sub connection and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Something that happened in a tier's store that other replicas must act on at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Sessions were revoked (one session, a user's, an IdP session's, an MFA reset's):
    /// their store keys, hex.
    SessionsRevoked {
        /// Hex SHA-256 store keys of the revoked sessions.
        ids: Vec<String>,
    },
    /// A kill switch was tripped, reset or expired; its sessions were revoked in the store.
    SwitchChanged {
        /// What the switch covers.
        scope: Scope,
    },
    /// A replica applied a new policy from the shared policy files.
    PolicyReloaded {
        /// Digest of the policy now served there.
        digest: String,
    },
}

impl Event {
    /// The event for sessions revoked with these store keys.
    pub fn sessions_revoked(ids: &[[u8; 32]]) -> Self {
        Event::SessionsRevoked {
            ids: ids.iter().map(hex::encode).collect(),
        }
    }

    /// The store keys of [`Event::SessionsRevoked`]; malformed ones are skipped (they
    /// name no session this process could have cached).
    pub fn revoked_ids(&self) -> Vec<[u8; 32]> {
        let Event::SessionsRevoked { ids } = self else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(id, &mut out).ok().map(|()| out)
            })
            .collect()
    }
}

/// What goes on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    /// An event, from the process that published it (which skips its own events: it
    /// acted on them before publishing).
    Event {
        origin: String,
        /// Random; acknowledgements name it.
        id: u64,
        event: Event,
    },
    /// `from` acted on event `id` of process `to`.
    Ack { from: String, to: String, id: u64 },
}

/// Told about a tier's subscription and its events. Calls come from the subscription's
/// task, in order; the publisher waits (up to [`ACK_TIMEOUT`]) until `event` returned.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// The tier's channel is subscribed: every event published from now on arrives.
    /// Events published before may have been missed.
    fn subscribed(&self, tier: &str);
    /// The tier's subscription is lost (`reason` is safe to show); events are being
    /// missed until the next [`EventSink::subscribed`].
    fn lost(&self, tier: &str, reason: &str);
    /// An event another process published on the tier's channel; return once it is in
    /// force here.
    async fn event(&self, tier: &str, event: Event);
}

/// Publishes events of every tier and follows them; cheap to clone.
#[derive(Clone, Default)]
pub struct EventBus {
    /// `None` for the embedded store (one process, nobody to tell).
    redis: Option<Arc<RedisBus>>,
}

struct RedisBus {
    /// Random per process: its own events come back on the channel and are skipped.
    origin: String,
    /// Each tier's channel and connections.
    tiers: BTreeMap<String, TierChannel>,
    /// Events this process published and still waits to hear acknowledged, by id.
    waiting: Mutex<HashMap<u64, Arc<Acks>>>,
}

/// Acknowledgements of one published event.
#[derive(Default)]
struct Acks {
    /// Acknowledgements received so far.
    count: AtomicUsize,
    /// Woken at each one.
    arrived: tokio::sync::Notify,
}

struct TierChannel {
    /// `portcullis:<tier>:events`.
    channel: String,
    /// Publishes; a connection of its own, so events never queue behind store calls.
    publisher: super::redis::RedisConnection,
    /// Opens the tier's pub/sub connections, as the tier's ACL user when it has one.
    client: super::redis::RedisSubscriber,
    /// Whether this process is subscribed right now (then `PUBLISH` counts it too).
    subscribed: AtomicBool,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.redis {
            None => f.write_str("EventBus(local)"),
            Some(bus) => f
                .debug_struct("EventBus")
                .field("tiers", &bus.tiers.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// The channel of a tier's events.
pub fn channel_of(tier: &str) -> String {
    format!("portcullis:{tier}:events")
}

impl EventBus {
    /// No bus: one process (the embedded store, the CLI, tests).
    pub fn local() -> Self {
        EventBus { redis: None }
    }

    /// The bus of a policy set's store: none for SQLite; for Redis, one publishing
    /// connection and one subscriber client per tier, each as the tier's ACL user when it
    /// has one (as [`super::Stores::open_for`] connects).
    pub async fn open_for(url: &str, access: &[super::TierAccess<'_>]) -> Result<Self, StoreError> {
        let StoreLocation::Redis(redis_url) = StoreLocation::parse(url)? else {
            return Ok(EventBus::local());
        };
        let mut tiers = BTreeMap::new();
        for tier in access {
            let auth = tier.redis_auth()?;
            let publisher = super::redis::connect_as(&redis_url, auth).await?;
            let client = super::redis::client_as(&redis_url, auth)?;
            tiers.insert(
                tier.name.to_string(),
                TierChannel {
                    channel: channel_of(tier.name),
                    publisher,
                    client,
                    subscribed: AtomicBool::new(false),
                },
            );
        }
        let origin = hex::encode(rand::random::<[u8; 8]>());
        Ok(EventBus {
            redis: Some(Arc::new(RedisBus {
                origin,
                tiers,
                waiting: Mutex::new(HashMap::new()),
            })),
        })
    }

    /// Whether other processes follow this bus (false: nothing is ever missed).
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Publishes `event` on `tier`'s channel and waits until every other follower acted
    /// on it (at most [`ACK_TIMEOUT`]); a no-op without a bus. Call it after the store
    /// write the event reports, so whoever receives it reads the new state.
    pub async fn publish(&self, tier: &str, event: &Event) -> Result<(), StoreError> {
        let Some(bus) = &self.redis else {
            return Ok(());
        };
        let Some(channel) = bus.tiers.get(tier) else {
            return Err(StoreError::NotFound("tier event channel"));
        };
        let id = rand::random::<u64>();
        let payload = super::encode_json(&Wire::Event {
            origin: bus.origin.clone(),
            id,
            event: event.clone(),
        })?;
        let acks = Arc::new(Acks::default());
        bus.waiting().insert(id, acks.clone());
        let outcome = async {
            let mut con = channel.publisher.clone();
            let receivers: usize = con.publish(&channel.channel, payload).await?;
            let others = receivers.saturating_sub(usize::from(channel.subscribed.load(Ordering::Acquire)));
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            loop {
                // Registered before the count is read, so an ack in between still wakes it.
                let arrived = acks.arrived.notified();
                let count = acks.count.load(Ordering::Acquire);
                if count >= others {
                    return Ok(());
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    tracing::warn!(
                        tier,
                        acknowledged = count,
                        expected = others,
                        "not every replica acknowledged a change event in time"
                    );
                    return Ok(());
                }
            }
        }
        .await;
        bus.waiting().remove(&id);
        outcome
    }

    /// Follows every tier's channel until the runtime stops, telling `sink`; returns at
    /// once (nothing to follow without a bus).
    pub fn follow(&self, sink: Arc<dyn EventSink>) {
        let Some(bus) = &self.redis else {
            return;
        };
        for tier in bus.tiers.keys() {
            tokio::spawn(follow_tier(bus.clone(), tier.clone(), sink.clone()));
        }
    }
}

impl RedisBus {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Acks>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells process `to` that this one acted on its event `id`.
    async fn acknowledge(&self, tier: &str, to: String, id: u64) {
        let Some(channel) = self.tiers.get(tier) else {
            return;
        };
        let ack = Wire::Ack {
            from: self.origin.clone(),
            to,
            id,
        };
        let Ok(ack) = super::encode_json(&ack) else {
            return;
        };
        let mut con = channel.publisher.clone();
        if let Err(e) = con.publish::<_, _, i64>(&channel.channel, ack).await {
            tracing::warn!(tier, error = %StoreError::from(e), "change events: acknowledgement not sent");
        }
    }
}

/// Subscribes to one tier's channel, again and again: reports each subscription and each
/// loss, and waits with backoff between attempts.
async fn follow_tier(bus: Arc<RedisBus>, tier: String, sink: Arc<dyn EventSink>) {
    let Some(channel) = bus.tiers.get(&tier) else {
        return;
    };
    // Events are acted on and acknowledged in order by a task of their own, so the relay
    // keeps counting acknowledgements of this process's events meanwhile (an event's
    // handling may publish an event of its own and wait for those).
    let (handle, mut handled) = tokio::sync::mpsc::unbounded_channel::<(String, u64, Event)>();
    tokio::spawn({
        let (bus, tier, sink) = (bus.clone(), tier.clone(), sink.clone());
        async move {
            while let Some((origin, id, event)) = handled.recv().await {
                sink.event(&tier, event).await;
                bus.acknowledge(&tier, origin, id).await;
            }
        }
    });
    let mut backoff = Backoff::default();
    loop {
        match subscribe(&channel.client, &channel.channel).await {
            Ok(pubsub) => {
                backoff.reset();
                channel.subscribed.store(true, Ordering::Release);
                sink.subscribed(&tier);
                tracing::info!(tier = %tier, "following the tier's change events");
                let reason = relay(pubsub, &bus, &tier, &handle).await;
                channel.subscribed.store(false, Ordering::Release);
                tracing::warn!(tier = %tier, reason, "change events: subscription lost");
                sink.lost(&tier, reason);
            }
            Err(reason) => {
                tracing::warn!(tier = %tier, reason = %reason, "change events: cannot subscribe");
                sink.lost(&tier, &reason);
            }
        }
        tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await;
    }
}

/// A pub/sub connection subscribed to `channel`, or why not (safe to show).
async fn subscribe(client: &super::redis::RedisSubscriber, channel: &str) -> Result<::redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub_for(channel).await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, ::redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(match StoreError::from(e) {
            StoreError::Unavailable(why) => format!("subscription refused ({why})"),
            other => format!("subscription refused ({other})"),
        }),
        Err(_) => Err("subscription refused (timeout)".to_string()),
    }
}

/// Hands the subscription's events to the tier's handling task and counts the
/// acknowledgements of this process's events, until the subscription is lost; returns why.
async fn relay(
    pubsub: ::redis::aio::PubSub,
    bus: &RedisBus,
    tier: &str,
    handle: &tokio::sync::mpsc::UnboundedSender<(String, u64, Event)>,
) -> &'static str {
    let (mut control, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return "subscription lost";
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    tracing::warn!(tier, "change events: a message that is not text was ignored");
                    continue;
                };
                match serde_json::from_str::<Wire>(&payload) {
                    Ok(Wire::Event { origin, .. }) if origin == bus.origin => {}
                    Ok(Wire::Event { origin, id, event }) => {
                        let _ = handle.send((origin, id, event));
                    }
                    Ok(Wire::Ack { to, id, .. }) if to == bus.origin => {
                        if let Some(acks) = bus.waiting().get(&id) {
                            acks.count.fetch_add(1, Ordering::AcqRel);
                            acks.arrived.notify_waiters();
                        }
                    }
                    Ok(Wire::Ack { .. }) => {}
                    Err(_) => tracing::warn!(tier, "change events: a malformed message was ignored"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, control.ping::<::redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return "subscription lost",
                    Err(_) => return "subscription lost (no answer to PING)",
                }
            }
        }
    }
}

/// Exponential backoff with jitter: each wait is between half and all of a base that
/// doubles from [`BACKOFF_START`] up to [`BACKOFF_CAP`], so replicas that lost Redis
/// together do not all knock at the same instant.
#[derive(Debug, Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// The wait before the next attempt; `unit` is a random number in `[0, 1)`.
    fn next_delay(&mut self, unit: f64) -> Duration {
        let base = BACKOFF_START
            .saturating_mul(2u32.saturating_pow(self.attempts.min(16)))
            .min(BACKOFF_CAP);
        self.attempts = self.attempts.saturating_add(1);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), BACKOFF_START / 2);
        assert_eq!(b.next_delay(0.999_999).as_millis(), 99);
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = b.next_delay(0.999_999);
            assert!(last <= BACKOFF_CAP);
        }
        assert!(last >= BACKOFF_CAP.mul_f64(0.99), "{last:?}");
        assert!(b.next_delay(0.0) >= BACKOFF_CAP / 2);
        b.reset();
        assert_eq!(b.next_delay(0.0), BACKOFF_START / 2);
    }

    #[test]
    fn events_round_trip_and_bad_ids_name_no_session() {
        let id = [7u8; 32];
        let e = Event::sessions_revoked(&[id]);
        let wire = serde_json::to_string(&Wire::Event {
            origin: "a".into(),
            id: 9,
            event: e.clone(),
        })
        .unwrap();
        let Wire::Event { event, id: 9, .. } = serde_json::from_str(&wire).unwrap() else {
            panic!("{wire}");
        };
        assert_eq!(event, e);
        assert_eq!(event.revoked_ids(), vec![id]);
        let bad = Event::SessionsRevoked {
            ids: vec!["zz".into(), "00".into()],
        };
        assert!(bad.revoked_ids().is_empty());
        let switch = Event::SwitchChanged {
            scope: Scope::Tenant {
                tier: "prod".into(),
                tenant: "acme".into(),
            },
        };
        let wire = serde_json::to_string(&switch).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&wire).unwrap(), switch);
    }

    #[test]
    fn channels_live_under_the_tier_prefix() {
        assert_eq!(channel_of("prod"), "portcullis:prod:events");
    }
}
