//! The clock, read in one place: now as unix seconds. Edges (a request, a CLI command, a
//! background loop) read it once and pass it down, so the records, the store and the
//! services below never read the clock themselves and their tests need no sleeps.
//! Depends on nothing.

/// Now as unix seconds (0 if the system clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
