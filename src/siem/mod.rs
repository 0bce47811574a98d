//! SIEM export: hands each security event to the optional sinks of `[siem]` (a webhook
//! and/or syslog over TLS) besides the stdout line `crate::telemetry` writes.
//!
//! The request path only pushes the finished [`Record`] onto each sink's bounded queue
//! ([`queue::Queue::push`]: a short lock, never an await); a task per sink batches,
//! sends and retries with backoff. When a receiver is down longer than its queue lasts,
//! the oldest events are dropped and counted (`portcullis_siem_dropped_total`).
//!
//! # Layout
//! - this file: the process-wide hand-off point ([`publish`]) and [`start`].
//! - [`schema`]: the event actions and fields (documented in `docs/security-events.md`)
//!   and the [`Record`] each event becomes.
//! - [`queue`]: the bounded drop-oldest queue and the retry backoff.
//! - [`webhook`]: JSON-array batches POSTed over HTTPS.
//! - [`syslog`]: RFC 5424 messages, octet-counted, over TCP with TLS.
//!
//! Must not emit security events itself (it would feed itself); its own trouble goes to
//! ordinary warnings, at most one per interval.

pub mod queue;
pub mod schema;
pub mod syslog;
pub mod webhook;

use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use crate::config::SiemConfig;
pub use queue::Queue;
pub use schema::{Record, Severity};

/// The queues of the running sinks. Process-wide because security events are written
/// from every module through `SecurityEvent`, which has no handle to pass down; set
/// once by [`start`], empty (and [`publish`] free) when no sink is configured.
static QUEUES: OnceLock<Vec<Arc<Queue>>> = OnceLock::new();

/// Whether any sink is running: the caller skips building a [`Record`] when not.
pub fn enabled() -> bool {
    QUEUES.get().is_some_and(|q| !q.is_empty())
}

/// Hands one event to every sink without waiting: a full queue drops its oldest event.
pub fn publish(record: Record) {
    let Some(queues) = QUEUES.get() else {
        return;
    };
    let record = Arc::new(record);
    for queue in queues {
        queue.push(record.clone());
    }
}

/// Longest the sinks may take at shutdown to send what they still hold.
pub const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// The running sinks, to stop them at shutdown.
pub struct Sinks {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sinks {
    /// Asks every sink to send what it still holds (one attempt per batch, no retries)
    /// and waits for them, at most `within`.
    pub async fn finish(self, within: std::time::Duration) {
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("SIEM sinks did not finish sending within {within:?}; the rest is lost");
        }
    }
}

/// Starts a task per configured sink. Only the first call in a process starts anything
/// (sinks apply at start, like the listeners).
pub fn start(config: &SiemConfig, dropped: Counter) -> Sinks {
    let (stop_tx, stop) = watch::channel(false);
    let mut queues = Vec::new();
    let mut starters: Vec<Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>> = Vec::new();
    if let Some(sink) = &config.webhook {
        let queue = Arc::new(Queue::new(config.queue, dropped.clone()));
        queues.push(queue.clone());
        let sink = sink.clone();
        let stop = stop.clone();
        starters.push(Box::new(move || tokio::spawn(webhook::run(sink, queue, stop))));
    }
    if let Some(sink) = &config.syslog {
        let queue = Arc::new(Queue::new(config.queue, dropped));
        queues.push(queue.clone());
        let sink = sink.clone();
        starters.push(Box::new(move || tokio::spawn(syslog::run(sink, queue, stop))));
    }
    let mut sinks = Sinks {
        stop: stop_tx,
        tasks: Vec::new(),
    };
    if QUEUES.set(queues).is_err() {
        tracing::warn!("SIEM sinks already started; a second start is ignored");
        return sinks;
    }
    sinks.tasks = starters.into_iter().map(|start| start()).collect();
    sinks
}

/// Whether the sink should stop taking new events: `stop` turned true (or its sender is
/// gone). Waits until then.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
