//! The limits of a tenant upstream's circuit breaker and bulkhead, as the policy sets them
//! (a tenant file's `[limits]`), and the rules they must meet.
//!
//! Plain settings with their validation; `validate.rs` reads them from the policy and
//! reports what [`GuardSettings::validate`] finds at the line that set the value. The
//! circuit breaker and bulkhead that use them are in `crate::upstream::guard`.

use std::time::Duration;

use tokio::sync::Semaphore;

/// Limits of one upstream's circuit breaker and bulkhead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// Consecutive failures that open the circuit breaker; one success in between starts over.
    pub failure_threshold: u32,
    /// How long an open circuit breaker refuses everything before it lets one probe through.
    pub cool_down: Duration,
    /// Requests in flight to this upstream at once (a request holds its slot until its
    /// response body has streamed).
    pub max_in_flight: usize,
    /// Requests that may wait for a free slot; beyond it a request is refused at once.
    pub max_queued: usize,
    /// Longest a request waits for a slot before it is refused.
    pub max_queue_wait: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            failure_threshold: 5,
            cool_down: Duration::from_secs(10),
            max_in_flight: 256,
            max_queued: 512,
            max_queue_wait: Duration::from_secs(5),
        }
    }
}

/// A guard setting out of range, worded for the operator who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardSettingsError {
    #[error("failure_threshold must be at least 1")]
    FailureThreshold,
    #[error("cool_down must be at least 1s (got {0:?})")]
    CoolDown(Duration),
    #[error("max_in_flight must be between 1 and {max} (got {got})", max = Semaphore::MAX_PERMITS)]
    MaxInFlight { got: usize },
}

impl GuardSettings {
    /// Every problem at once, so `portcullis check` can report them together.
    pub fn validate(&self) -> Result<(), Vec<GuardSettingsError>> {
        let mut problems = Vec::new();
        if self.failure_threshold < 1 {
            problems.push(GuardSettingsError::FailureThreshold);
        }
        if self.cool_down < Duration::from_secs(1) {
            problems.push(GuardSettingsError::CoolDown(self.cool_down));
        }
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.max_in_flight) {
            problems.push(GuardSettingsError::MaxInFlight {
                got: self.max_in_flight,
            });
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validation_reports_every_problem() {
        assert_eq!(GuardSettings::default().validate(), Ok(()));
        let bad = GuardSettings {
            failure_threshold: 0,
            cool_down: Duration::from_millis(999),
            max_in_flight: 0,
            max_queued: 0,
            max_queue_wait: Duration::ZERO,
        };
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 3);
        assert_eq!(problems[1].to_string(), "cool_down must be at least 1s (got 999ms)");
    }
}
