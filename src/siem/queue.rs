//! A sink's bounded queue of events, and the backoff between attempts to deliver them.
//!
//! The push side is the request path: it takes a short lock and never waits for the
//! receiver. When the queue is full the oldest event goes: recent events matter most
//! in an incident, and memory stays bounded however long a receiver is down.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use super::Record;

/// Events a sink holds, oldest first, up to a fixed count.
pub struct Queue {
    items: Mutex<VecDeque<Arc<Record>>>,
    /// Most events held.
    capacity: usize,
    /// Wakes the sink's task when an event arrives.
    arrived: Notify,
    /// `portcullis_siem_dropped_total`, shared by the sinks.
    dropped: Counter,
    /// Drops not yet reported in a log line.
    unreported: AtomicU64,
}

impl Queue {
    /// An empty queue holding at most `capacity` events (at least one).
    pub fn new(capacity: usize, dropped: Counter) -> Self {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.clamp(1, 1024))),
            capacity: capacity.max(1),
            arrived: Notify::new(),
            dropped,
            unreported: AtomicU64::new(0),
        }
    }

    /// Adds an event, dropping the oldest when full; never waits for the receiver.
    pub fn push(&self, record: Arc<Record>) {
        let mut items = self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if items.len() >= self.capacity {
            items.pop_front();
            self.count_dropped(1);
        }
        items.push_back(record);
        drop(items);
        self.arrived.notify_one();
    }

    /// Counts events lost (pushed out, or refused for good by the receiver).
    pub fn count_dropped(&self, n: u64) {
        self.dropped.inc_by(n);
        self.unreported.fetch_add(n, Ordering::Relaxed);
    }

    /// Drops counted since the last call (for one log line per interval).
    pub fn take_unreported(&self) -> u64 {
        self.unreported.swap(0, Ordering::Relaxed)
    }

    /// Drops counted and not yet reported, leaving them to report.
    pub fn unreported(&self) -> u64 {
        self.unreported.load(Ordering::Relaxed)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` events (oldest first), without waiting.
    pub fn take(&self, max: usize) -> Vec<Arc<Record>> {
        let mut items = self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = items.len().min(max);
        items.drain(..n).collect()
    }

    /// The next batch: waits for a first event, then up to `linger` for more, and takes
    /// at most `max` (oldest first).
    pub async fn next_batch(&self, max: usize, linger: Duration) -> Vec<Arc<Record>> {
        while self.is_empty() {
            self.arrived.notified().await;
        }
        let deadline = tokio::time::Instant::now() + linger;
        while self.len() < max {
            if tokio::time::timeout_at(deadline, self.arrived.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        self.take(max)
    }
}

/// Exponential backoff with jitter: each wait is between half and all of a base that
/// doubles from [`Backoff::START`] up to [`Backoff::CAP`], so gateways that lost the
/// receiver together do not all knock at the same instant.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// First base wait.
    pub const START: Duration = Duration::from_millis(200);
    /// Longest base wait: a receiver back up gets events within this.
    pub const CAP: Duration = Duration::from_secs(10);

    /// The wait before the next attempt; `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let base = Self::START
            .saturating_mul(2u32.saturating_pow(self.attempts.min(16)))
            .min(Self::CAP);
        self.attempts = self.attempts.saturating_add(1);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        let delay = self.next_delay(rand::random::<f64>());
        tokio::time::sleep(delay).await;
    }
}

/// Writes one warning per `every` about a sink's trouble and its dropped events, so a
/// receiver down for hours does not flood the log. Drops are reported also while the
/// receiver answers (a slow one lets the queue overflow without ever failing).
pub struct Complaints {
    sink: &'static str,
    every: Duration,
    last: Option<tokio::time::Instant>,
}

impl Complaints {
    /// Complaints about `sink`, at most one per `every`.
    pub fn new(sink: &'static str, every: Duration) -> Self {
        Complaints {
            sink,
            every,
            last: None,
        }
    }

    /// Logs `problem` (and drops since the last line) unless a line went out recently.
    pub fn complain(&mut self, queue: &Queue, problem: &str) {
        if !self.due() {
            return;
        }
        let dropped = queue.take_unreported();
        tracing::warn!(
            sink = self.sink,
            queued = queue.len(),
            dropped,
            "SIEM delivery failing, retrying with backoff: {problem}"
        );
    }

    /// After a delivery that worked: logs the events dropped since the last line, if any,
    /// unless a line went out recently (they are then reported with a later one).
    /// Returns the count logged.
    pub fn report_drops(&mut self, queue: &Queue) -> Option<u64> {
        if queue.unreported() == 0 || !self.due() {
            return None;
        }
        let dropped = queue.take_unreported();
        tracing::warn!(
            sink = self.sink,
            queued = queue.len(),
            dropped,
            "SIEM events dropped: the receiver takes them more slowly than they come and the queue was full"
        );
        Some(dropped)
    }

    /// Whether a line may go out now; if so, the interval starts again.
    fn due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;

    use super::{Backoff, Complaints, Queue};
    use crate::siem::{Record, Severity};

    fn record(n: u64) -> Arc<Record> {
        Arc::new(Record {
            id: format!("{n:032x}"),
            timestamp: "2026-12-07T00:00:00.000000Z".into(),
            action: "login".into(),
            severity: Severity::Info,
            json: format!("{{\"n\":{n}}}"),
        })
    }

    /// If this broke, a receiver that is down would make the gateway's memory grow
    /// without bound, or the newest events (the ones an incident needs) would be lost.
    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dropped = Counter::default();
        let queue = Queue::new(3, dropped.clone());
        for n in 0..5 {
            queue.push(record(n));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(dropped.get(), 2);
        assert_eq!(queue.take_unreported(), 2);
        assert_eq!(queue.take_unreported(), 0);
        let batch = queue.next_batch(2, Duration::ZERO).await;
        let ids: Vec<&str> = batch.iter().map(|r| r.json.as_str()).collect();
        assert_eq!(ids, ["{\"n\":2}", "{\"n\":3}"]);
        assert_eq!(queue.next_batch(10, Duration::ZERO).await.len(), 1);
        assert!(queue.is_empty());
    }

    /// If this broke, a batch would go out with its first event only, or wait past its
    /// time bound for a full batch.
    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_more_events_only_up_to_its_time_bound() {
        let queue = Arc::new(Queue::new(100, Counter::default()));
        queue.push(record(1));
        let pusher = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            pusher.push(record(2));
        });
        let started = tokio::time::Instant::now();
        let batch = queue.next_batch(10, Duration::from_secs(1)).await;
        assert_eq!(batch.len(), 2);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    /// If this broke, a receiver that answers every batch but too slowly would lose
    /// events to a full queue with no line in the log (only the metric would count them),
    /// or the log would get a line per batch.
    #[tokio::test(start_paused = true)]
    async fn drops_of_a_working_sink_are_logged_at_most_once_per_interval() {
        let queue = Queue::new(2, Counter::default());
        let mut complaints = Complaints::new("webhook", Duration::from_secs(10));
        assert_eq!(complaints.report_drops(&queue), None, "nothing dropped, nothing to say");
        for n in 0..5 {
            queue.push(record(n));
        }
        assert_eq!(complaints.report_drops(&queue), Some(3));
        for n in 0..4 {
            queue.push(record(n));
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(complaints.report_drops(&queue), None, "a line went out 9 s ago");
        queue.push(record(9));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            complaints.report_drops(&queue),
            Some(5),
            "every drop since the last line"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(complaints.report_drops(&queue), None, "none since");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), Backoff::START / 2);
        assert_eq!(b.next_delay(0.999_999).as_millis(), 399);
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = b.next_delay(0.999_999);
            assert!(last <= Backoff::CAP);
        }
        assert!(last >= Backoff::CAP.mul_f64(0.99), "{last:?}");
        b.reset();
        assert_eq!(b.next_delay(0.0), Backoff::START / 2);
    }
}
