//! Background housekeeping: every tier's store drops what has expired (sessions past
//! their absolute lifetime plus a grace, used TOTP steps, throttle windows, published
//! assertion keys) on a slow interval, so the embedded store does not grow with every
//! sign-in for ever. Redis keys also carry their own expiry; this purges the indexes
//! that point at them.

use std::sync::Arc;
use std::time::Duration;

use crate::live::Live;
use crate::session::Sessions;

/// How often every tier's store is purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Purges every tier's store each [`PURGE_INTERVAL`] (the first one an interval after
/// start, so a restart loop does not purge on every start) until `stop`. A failure is
/// logged and tried again at the next interval; nothing on the request path waits on it.
pub async fn purge_loop(sessions: Arc<Sessions>, live: Arc<Live>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let start = tokio::time::Instant::now() + PURGE_INTERVAL;
    let mut tick = tokio::time::interval_at(start, PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let config = live.snapshot().config.clone();
                purge_all(&sessions, config.tiers.keys().map(String::as_str), crate::clock::unix_now()).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// One purge of the stores of `tiers`; returns the records removed.
pub async fn purge_all<'t>(sessions: &Sessions, tiers: impl IntoIterator<Item = &'t str>, now: i64) -> u64 {
    let mut removed = 0;
    for tier in tiers {
        let purged = match sessions.store(tier) {
            Ok(store) => store.purge_expired(now).await,
            Err(e) => Err(e),
        };
        match purged {
            Ok(n) => {
                removed += n;
                if n > 0 {
                    tracing::info!(portcullis.tier = %tier, removed = n, "expired records purged");
                }
            }
            Err(e) => {
                tracing::warn!(portcullis.tier = %tier, error = %e, "purging expired records failed; trying again later")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{SessionRecord, session_id_hash};
    use crate::store::{PURGE_GRACE_SECS, Stores};

    fn record(tier: &str, token: &str, expires_at: i64) -> SessionRecord {
        SessionRecord {
            id_hash: session_id_hash(token.as_bytes()),
            tenant: "acme".into(),
            tier: tier.into(),
            subject: "alice".into(),
            idp: crate::account::LOCAL_IDP.to_string(),
            display_name: "Alice".into(),
            roles: Vec::new(),
            auth_method: "password".into(),
            amr: vec!["pwd".into(), "otp".into()],
            mfa_at: None,
            created_at: expires_at - 3600,
            last_seen: expires_at - 3600,
            idle_expires_at: expires_at,
            absolute_expires_at: expires_at,
            ip: "192.0.2.7".into(),
            user_agent: "test".into(),
            csrf_token: format!("csrf-{token}"),
            sso_sid: None,
            revoked: None,
        }
    }

    /// If this broke, the embedded store would keep every expired session (and throttle
    /// window) for ever, or one tier that cannot be opened would stop the others' purge.
    #[tokio::test]
    async fn every_tier_is_purged_of_what_expired() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().display());
        let sessions = Sessions::new(Stores::open(&url, ["prod", "staging"]).await.unwrap());
        let now = 1_800_000_000;
        let expired = now - PURGE_GRACE_SECS - 10;
        for tier in ["prod", "staging"] {
            let store = sessions.store(tier).unwrap();
            store.create_session(&record(tier, "old", expired)).await.unwrap();
        }
        let live = record("prod", "live", now + 600);
        sessions.store("prod").unwrap().create_session(&live).await.unwrap();

        let removed = purge_all(&sessions, ["prod", "missing", "staging"], now).await;
        assert_eq!(removed, 2);
        let prod = sessions.store("prod").unwrap();
        assert!(prod.get_session(&live.id_hash).await.unwrap().is_some());
        assert!(prod.get_session(&session_id_hash(b"old")).await.unwrap().is_none());
    }
}
