//! Upstream circuit breakers and bulkheads (SPEC "Upstream breakers and bulkheads"): one
//! [`UpstreamGuard`] per tenant upstream owns
//! - a circuit breaker: closed → open after N consecutive failures → after a cool-down,
//!   half-open with exactly one probe out → closed on its success, open again on its failure;
//! - a bulkhead: a limit on requests in flight, with a bounded, time-limited wait queue, so
//!   one tenant's slow upstream cannot starve the others.
//!
//! Plain Rust, no HTTP: the caller answers a [`Rejection`] with `503` (plus `Retry-After`
//! for an open circuit) and tells each [`Admission`] how the upstream did. This module must
//! not touch connections, config files or metrics registries. Its limits are
//! [`GuardSettings`], which the policy sets and `config` validates. Time comes from a
//! [`Clock`], so tests never wait out a cool-down.
//!
//! What counts as a failure: connect errors, response timeouts and upstream `502`, `503`
//! and `504` ([`is_failure_status`]). Every other answer, `500` included, is a success:
//! the upstream is up and answering, and an application error is not a reason to shed load.
//! An admission dropped without an outcome (the client went away) counts as neither.
//!
//! Not the kill switches (`crate::killswitch`, which the admin API and CLI call
//! "breakers"): those cut a tier, tenant or account off for security; this sheds load from
//! a failing upstream. The policy keys (`breaker_failures`, `breaker_cool_down`) and the
//! `upstream_breaker_state` metric keep their names; in code this one is the circuit.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::GuardSettings;

/// True for the upstream statuses that count against its circuit breaker: it is down or drowning.
pub fn is_failure_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// Where the circuit breaker's time comes from; a trait so tests can move time by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The circuit breaker's state, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    /// One probe is out; everything else is refused until it answers.
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The value of the circuit breaker state gauge (`upstream_breaker_state`): 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// Why a request was not let through; the caller answers `503` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The circuit breaker is open (or its probe is out): `Retry-After: retry_after_secs` (≥ 1).
    #[error("upstream circuit breaker open, next probe in {retry_after_secs}s")]
    CircuitOpen { retry_after_secs: u64 },
    /// The bulkhead is full: the queue was full, or the wait for a slot timed out.
    #[error("upstream at its concurrency limit")]
    Overloaded,
}

const CLOSED: u8 = 0;
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What an admission is to the circuit breaker: an ordinary request, or the one half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Normal,
    Probe,
}

/// Lock-free on the hot path (one atomic load while closed); the mutex only orders the
/// transitions out of closed and out of half-open.
struct CircuitBreaker {
    /// `CLOSED`, `HALF_OPEN` or `OPEN`.
    state: AtomicU8,
    /// Consecutive failures seen while closed.
    failures: AtomicU32,
    /// While open: when the next probe may go, in nanoseconds since `epoch`.
    probe_at: AtomicU64,
    /// While not closed: when it opened from closed, in nanoseconds since `epoch`. A
    /// failed probe re-opens it without moving this: the outage began at the first opening.
    opened_at: AtomicU64,
    /// Origin of `probe_at`, so an instant fits in an atomic.
    epoch: Instant,
    threshold: u32,
    cool_down: Duration,
    transition: Mutex<()>,
}

impl CircuitBreaker {
    fn new(settings: &GuardSettings, epoch: Instant) -> Self {
        CircuitBreaker {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            probe_at: AtomicU64::new(0),
            opened_at: AtomicU64::new(0),
            epoch,
            threshold: settings.failure_threshold.max(1),
            cool_down: settings.cool_down,
            transition: Mutex::new(()),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn state(&self) -> CircuitState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => CircuitState::Closed,
            HALF_OPEN => CircuitState::HalfOpen,
            _ => CircuitState::Open,
        }
    }

    /// How long ago (at `now`) it opened from closed; `None` while closed.
    fn open_for(&self, now: Instant) -> Option<Duration> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return None;
        }
        let opened = self.opened_at.load(Ordering::Acquire);
        Some(Duration::from_nanos(self.nanos(now).saturating_sub(opened)))
    }

    /// Seconds to wait if a request at `now` would be refused, without claiming the probe:
    /// lets the guard refuse before a request queues for a slot.
    /// `now` is read only when the circuit breaker is open: a closed one (the usual case) costs
    /// one atomic load per request, no clock read.
    fn refusal(&self, now: impl FnOnce() -> Instant) -> Option<u64> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => None,
            // The probe's answer is due within the response timeout; ask again soon.
            HALF_OPEN => Some(1),
            _ => {
                let wait = self.probe_at.load(Ordering::Acquire).saturating_sub(self.nanos(now()));
                (wait > 0).then(|| wait.div_ceil(NANOS_PER_SEC).max(1))
            }
        }
    }

    /// Lets a request through, claiming the probe when an open circuit breaker's cool-down is over.
    fn try_pass(&self, now: impl FnOnce() -> Instant) -> Result<Pass, u64> {
        if let Some(secs) = self.refusal(now) {
            return Err(secs);
        }
        match self
            .state
            .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(Pass::Probe),
            Err(CLOSED) => Ok(Pass::Normal),
            Err(_) => Err(1),
        }
    }

    fn succeeded(&self, pass: Pass) {
        match pass {
            Pass::Normal => {
                // Only a closed circuit breaker counts; avoid the write when there is nothing to reset.
                if self.state.load(Ordering::Acquire) == CLOSED && self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
            }
            Pass::Probe => {
                let _transition = self.transition.lock().unwrap_or_else(PoisonError::into_inner);
                self.failures.store(0, Ordering::Relaxed);
                self.state.store(CLOSED, Ordering::Release);
            }
        }
    }

    fn failed(&self, pass: Pass, now: Instant) {
        let _transition = match pass {
            Pass::Normal => {
                // Late answers of requests let through before the circuit breaker opened are ignored.
                if self.state.load(Ordering::Acquire) != CLOSED {
                    return;
                }
                let failures = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
                if failures < self.threshold {
                    return;
                }
                let transition = self.transition.lock().unwrap_or_else(PoisonError::into_inner);
                if self.state.load(Ordering::Acquire) != CLOSED {
                    return;
                }
                transition
            }
            Pass::Probe => self.transition.lock().unwrap_or_else(PoisonError::into_inner),
        };
        let cool_down = u64::try_from(self.cool_down.as_nanos()).unwrap_or(u64::MAX);
        if pass == Pass::Normal {
            self.opened_at.store(self.nanos(now), Ordering::Release);
        }
        self.probe_at
            .store(self.nanos(now).saturating_add(cool_down), Ordering::Release);
        self.failures.store(0, Ordering::Relaxed);
        self.state.store(OPEN, Ordering::Release);
    }

    /// An admission ended without an outcome: a probe gives its slot back (its cool-down is
    /// already over, so the next request probes); an ordinary request changes nothing.
    fn abandoned(&self, pass: Pass) {
        if pass == Pass::Probe {
            let _ = self
                .state
                .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// State shared by the guard and its admissions (which outlive the call that made them).
struct Shared {
    circuit: CircuitBreaker,
    /// The bulkhead's slots.
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot now.
    queued: AtomicUsize,
    max_in_flight: usize,
    max_queued: usize,
    max_queue_wait: Duration,
    clock: Arc<dyn Clock>,
    /// As configured, so a reload can tell whether this guard still fits.
    settings: GuardSettings,
}

/// The circuit breaker and bulkhead of one tenant upstream. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct UpstreamGuard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UpstreamGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamGuard")
            .field("state", &self.state())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

impl UpstreamGuard {
    /// A guard on the system clock. Call [`GuardSettings::validate`] first; out-of-range
    /// values are clamped here so that building a guard never panics.
    pub fn new(settings: GuardSettings) -> Self {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// A guard whose circuit breaker reads time from `clock` (tests move it by hand).
    pub fn with_clock(settings: GuardSettings, clock: Arc<dyn Clock>) -> Self {
        let max_in_flight = settings.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        UpstreamGuard {
            shared: Arc::new(Shared {
                circuit: CircuitBreaker::new(&settings, clock.now()),
                slots: Arc::new(Semaphore::new(max_in_flight)),
                queued: AtomicUsize::new(0),
                max_in_flight,
                max_queued: settings.max_queued,
                max_queue_wait: settings.max_queue_wait,
                clock,
                settings,
            }),
        }
    }

    /// Lets a request through to the upstream, or says why not. An open circuit breaker refuses
    /// at once, before the request would queue; a request that gets a slot then claims
    /// its pass (possibly the probe), so the probe is never held while queueing.
    pub async fn admit(&self) -> Result<Admission, Rejection> {
        let shared = &self.shared;
        if let Some(retry_after_secs) = shared.circuit.refusal(|| shared.clock.now()) {
            return Err(Rejection::CircuitOpen { retry_after_secs });
        }
        let permit = self.slot().await?;
        let pass = shared
            .circuit
            .try_pass(|| shared.clock.now())
            .map_err(|retry_after_secs| Rejection::CircuitOpen { retry_after_secs })?;
        Ok(Admission {
            shared: Arc::clone(shared),
            pass,
            reported: false,
            _permit: permit,
        })
    }

    /// A bulkhead slot: at once if one is free, else after a bounded wait in the queue.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, Rejection> {
        let shared = &self.shared;
        match Arc::clone(&shared.slots).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Rejection::Overloaded),
            Err(TryAcquireError::NoPermits) => {}
        }
        // Boxed: the wait is rare, and its timer would make every request's future larger.
        Box::pin(self.queue_for_slot()).await
    }

    /// Waits in the queue for a slot, within the queue's bounds.
    async fn queue_for_slot(&self) -> Result<OwnedSemaphorePermit, Rejection> {
        let shared = &self.shared;
        let _place = QueuePlace::take(&shared.queued, shared.max_queued).ok_or(Rejection::Overloaded)?;
        match tokio::time::timeout(shared.max_queue_wait, Arc::clone(&shared.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a wait that timed out is refused.
            Ok(Err(_)) | Err(_) => Err(Rejection::Overloaded),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &GuardSettings {
        &self.shared.settings
    }

    /// The circuit breaker's state now.
    pub fn state(&self) -> CircuitState {
        self.shared.circuit.state()
    }

    /// How long the circuit breaker has been open (or half-open, its probe out) since it
    /// opened from closed; `None` while closed. The tenant's status page reports it as
    /// "degraded since".
    pub fn open_for(&self) -> Option<Duration> {
        self.shared.circuit.open_for(self.shared.clock.now())
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.shared
            .max_in_flight
            .saturating_sub(self.shared.slots.available_permits())
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

/// A place in the wait queue, given back when the wait ends (or its future is dropped).
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    fn take(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| QueuePlace(queued))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request let through: holds its bulkhead slot until dropped, so keep it alive until
/// the response body has finished streaming. Report the outcome once, when the response
/// head arrives (or the exchange fails); later reports are ignored.
pub struct Admission {
    shared: Arc<Shared>,
    pass: Pass,
    reported: bool,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("probe", &self.is_probe())
            .field("reported", &self.reported)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// True for the half-open probe, whose outcome closes or re-opens the circuit breaker.
    pub fn is_probe(&self) -> bool {
        self.pass == Pass::Probe
    }

    /// The upstream answered (any status but 502, 503, 504).
    pub fn succeeded(&mut self) {
        if !std::mem::replace(&mut self.reported, true) {
            self.shared.circuit.succeeded(self.pass);
        }
    }

    /// The upstream could not be reached, timed out, or answered 502, 503 or 504.
    pub fn failed(&mut self) {
        if !std::mem::replace(&mut self.reported, true) {
            self.shared.circuit.failed(self.pass, self.shared.clock.now());
        }
    }

    /// Reports the upstream's status as [`is_failure_status`] classifies it.
    pub fn record_status(&mut self, status: u16) {
        if is_failure_status(status) {
            self.failed()
        } else {
            self.succeeded()
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.reported {
            self.shared.circuit.abandoned(self.pass);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock moved by hand.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn guard(settings: GuardSettings) -> (UpstreamGuard, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        (UpstreamGuard::with_clock(settings, clock.clone()), clock)
    }

    fn circuit_guard() -> (UpstreamGuard, Arc<ManualClock>) {
        guard(GuardSettings {
            failure_threshold: 3,
            ..GuardSettings::default()
        })
    }

    async fn fail(guard: &UpstreamGuard) {
        guard.admit().await.unwrap().failed();
    }

    async fn succeed(guard: &UpstreamGuard) {
        guard.admit().await.unwrap().succeeded();
    }

    fn retry_after(rejection: Result<Admission, Rejection>) -> u64 {
        match rejection {
            Err(Rejection::CircuitOpen { retry_after_secs }) => retry_after_secs,
            other => panic!("expected an open circuit breaker, got {other:?}"),
        }
    }

    /// Opens the circuit breaker of `circuit_guard`.
    async fn open(guard: &UpstreamGuard) {
        for _ in 0..3 {
            fail(guard).await;
        }
    }

    /// Opens the circuit breaker of `circuit_guard` and lets its cool-down pass.
    async fn due_for_probe(guard: &UpstreamGuard, clock: &ManualClock) {
        open(guard).await;
        clock.advance(Duration::from_secs(10));
    }

    #[tokio::test]
    async fn opens_after_exactly_n_consecutive_failures() {
        let (guard, _clock) = circuit_guard();
        fail(&guard).await;
        fail(&guard).await;
        assert_eq!(guard.state(), CircuitState::Closed, "N-1 failures must not open it");
        fail(&guard).await;
        assert_eq!(guard.state(), CircuitState::Open);
        assert_eq!(retry_after(guard.admit().await), 10);
    }

    /// If this broke, the status page's "degraded since" would restart at every failed
    /// probe (hiding how long the outage has lasted) or show a time while closed.
    #[tokio::test]
    async fn open_for_counts_from_the_first_opening_until_closed() {
        let (guard, clock) = circuit_guard();
        assert_eq!(guard.open_for(), None);
        open(&guard).await;
        assert_eq!(guard.open_for(), Some(Duration::ZERO));
        clock.advance(Duration::from_secs(10));
        let mut probe = guard.admit().await.unwrap();
        assert!(probe.is_probe());
        assert_eq!(
            guard.open_for(),
            Some(Duration::from_secs(10)),
            "half-open counts as open"
        );
        probe.failed();
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            guard.open_for(),
            Some(Duration::from_secs(15)),
            "a failed probe restarted it"
        );
        clock.advance(Duration::from_secs(10));
        guard.admit().await.unwrap().succeeded();
        assert_eq!(guard.state(), CircuitState::Closed);
        assert_eq!(guard.open_for(), None);
        open(&guard).await;
        assert_eq!(guard.open_for(), Some(Duration::ZERO), "a new outage starts afresh");
    }

    #[tokio::test]
    async fn success_in_between_restarts_the_count() {
        let (guard, _clock) = circuit_guard();
        fail(&guard).await;
        fail(&guard).await;
        succeed(&guard).await;
        fail(&guard).await;
        fail(&guard).await;
        assert_eq!(guard.state(), CircuitState::Closed);
        fail(&guard).await;
        assert_eq!(guard.state(), CircuitState::Open);
    }

    #[tokio::test]
    async fn statuses_count_as_documented() {
        let (guard, _clock) = circuit_guard();
        for status in [502, 503, 500, 504, 504] {
            guard.admit().await.unwrap().record_status(status);
        }
        assert_eq!(
            guard.state(),
            CircuitState::Closed,
            "500 is an answer, so it breaks the run"
        );
        guard.admit().await.unwrap().record_status(503);
        assert_eq!(guard.state(), CircuitState::Open);
    }

    #[tokio::test]
    async fn open_refuses_with_seconds_until_the_probe() {
        let (guard, clock) = circuit_guard();
        open(&guard).await;
        clock.advance(Duration::from_millis(3_500));
        assert_eq!(retry_after(guard.admit().await), 7, "6.5 s left rounds up");
        clock.advance(Duration::from_millis(6_400));
        assert_eq!(retry_after(guard.admit().await), 1, "never 0");
    }

    #[tokio::test]
    async fn half_open_lets_exactly_one_probe_through() {
        let (guard, clock) = circuit_guard();
        due_for_probe(&guard, &clock).await;
        let probe = guard.admit().await.unwrap();
        assert!(probe.is_probe());
        assert_eq!(guard.state(), CircuitState::HalfOpen);
        assert_eq!(retry_after(guard.admit().await), 1);
        drop(probe);
    }

    #[tokio::test]
    async fn probe_success_closes_and_resets_the_count() {
        let (guard, clock) = circuit_guard();
        due_for_probe(&guard, &clock).await;
        guard.admit().await.unwrap().succeeded();
        assert_eq!(guard.state(), CircuitState::Closed);
        fail(&guard).await;
        fail(&guard).await;
        assert_eq!(guard.state(), CircuitState::Closed);
        assert!(!guard.admit().await.unwrap().is_probe());
    }

    #[tokio::test]
    async fn probe_failure_reopens_with_a_fresh_cool_down() {
        let (guard, clock) = circuit_guard();
        due_for_probe(&guard, &clock).await;
        guard.admit().await.unwrap().failed();
        assert_eq!(guard.state(), CircuitState::Open);
        assert_eq!(retry_after(guard.admit().await), 10);
        clock.advance(Duration::from_secs(9));
        assert_eq!(retry_after(guard.admit().await), 1);
        clock.advance(Duration::from_secs(1));
        assert!(guard.admit().await.unwrap().is_probe());
    }

    #[tokio::test]
    async fn dropped_probe_frees_the_probe_slot() {
        let (guard, clock) = circuit_guard();
        due_for_probe(&guard, &clock).await;
        drop(guard.admit().await.unwrap());
        assert_eq!(guard.state(), CircuitState::Open);
        assert!(
            guard.admit().await.unwrap().is_probe(),
            "the next request probes at once"
        );
    }

    #[tokio::test]
    async fn dropped_admission_counts_as_neither() {
        let (guard, _clock) = circuit_guard();
        fail(&guard).await;
        fail(&guard).await;
        drop(guard.admit().await.unwrap());
        fail(&guard).await;
        assert_eq!(guard.state(), CircuitState::Open, "the drop neither failed nor reset");
    }

    fn bulkhead(limit: usize, queue: usize) -> UpstreamGuard {
        let settings = GuardSettings {
            max_in_flight: limit,
            max_queued: queue,
            ..GuardSettings::default()
        };
        guard(settings).0
    }

    async fn until_queued(guard: &UpstreamGuard, n: usize) {
        while guard.queued() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bulkhead_admits_limit_queues_then_refuses() {
        let guard = bulkhead(2, 1);
        let first = guard.admit().await.unwrap();
        let _second = guard.admit().await.unwrap();
        assert_eq!(guard.in_flight(), 2);
        let waiter = tokio::spawn({
            let guard = guard.clone();
            async move { guard.admit().await.map(|_| ()) }
        });
        until_queued(&guard, 1).await;
        let started = tokio::time::Instant::now();
        assert_eq!(guard.admit().await.unwrap_err(), Rejection::Overloaded);
        assert_eq!(started.elapsed(), Duration::ZERO, "a full queue refuses at once");
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()), "a freed slot goes to the waiter");
        assert_eq!(guard.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_wait_times_out() {
        let guard = bulkhead(1, 4);
        let _held = guard.admit().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(guard.admit().await.unwrap_err(), Rejection::Overloaded);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(guard.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_and_queue_places_are_released_on_drop() {
        let guard = bulkhead(1, 1);
        let held = guard.admit().await.unwrap();
        let abandoned_wait = tokio::spawn({
            let guard = guard.clone();
            async move { guard.admit().await.map(|_| ()) }
        });
        until_queued(&guard, 1).await;
        abandoned_wait.abort();
        assert!(abandoned_wait.await.unwrap_err().is_cancelled());
        assert_eq!(guard.queued(), 0, "a cancelled wait leaves the queue");
        drop(held);
        assert_eq!(guard.in_flight(), 0);
        let again = guard.admit().await.unwrap();
        assert_eq!(guard.in_flight(), 1);
        drop(again);
        assert_eq!(guard.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_refuses_before_queueing() {
        let settings = GuardSettings {
            failure_threshold: 3,
            max_in_flight: 2,
            ..GuardSettings::default()
        };
        let (guard, clock) = guard(settings);
        let _slow = guard.admit().await.unwrap();
        due_for_probe(&guard, &clock).await;
        let _probe = guard.admit().await.unwrap();
        assert_eq!(guard.in_flight(), 2, "bulkhead full");
        let started = tokio::time::Instant::now();
        assert_eq!(retry_after(guard.admit().await), 1);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "refused at once, not after a wait for a slot"
        );
    }

    #[test]
    fn guard_and_admission_cross_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        fn owned<T: Send + 'static>() {}
        shared::<UpstreamGuard>();
        owned::<Admission>();
    }

    #[test]
    fn gauge_values_are_stable() {
        let values = [CircuitState::Closed, CircuitState::HalfOpen, CircuitState::Open].map(CircuitState::gauge_value);
        assert_eq!(values, [0, 1, 2]);
    }
}
