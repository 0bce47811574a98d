//! Kill switches (security circuit breakers): a tier, a tenant or one account cut off at
//! once. New logins are refused, live sessions end, open streams close, and requests in
//! scope get `423 Locked` until the switch is reset or expires.
//!
//! # Layout
//! - this file: [`Scope`], the stored [`KillSwitch`] record, and [`Board`], the in-memory
//!   table the request path reads (lock-free, one atomic load when nothing is tripped).
//! - [`service`]: tripping, resetting, dry runs, expiry, auto-trip rules and keeping the
//!   board in step with the stores.
//!
//! Not to be confused with the upstream circuit breakers in `upstream::guard`, which stop
//! traffic to a failing upstream; the two share no code.

pub mod service;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

pub use crate::records::kill_switch::{KillSwitch, Scope};
pub use service::{DryRun, Expiry, ExpiryError, KillSwitchError, KillSwitches, TripRequest, TripResult};

/// The switches in force on this node, indexed for the request path.
#[derive(Default)]
struct Table {
    tiers: HashMap<String, Arc<KillSwitch>>,
    tenants: HashMap<(String, String), Arc<KillSwitch>>,
    accounts: HashMap<(String, String, String), Arc<KillSwitch>>,
    /// Tenants (tier, id) with at least one account switch.
    tenants_with_accounts: HashSet<(String, String)>,
}

/// The in-memory table of switches every request consults. Reads are lock-free; a read
/// when nothing is tripped anywhere is one atomic load.
#[derive(Default)]
pub struct Board {
    table: ArcSwap<Table>,
    any: AtomicBool,
}

impl Board {
    /// Replaces the whole table (the service keeps the authoritative list).
    pub fn replace(&self, switches: &[KillSwitch]) {
        let mut t = Table::default();
        for ks in switches {
            let ks_arc = Arc::new(ks.clone());
            match &ks.scope {
                Scope::Tier { tier } => {
                    t.tiers.insert(tier.clone(), ks_arc);
                }
                Scope::Tenant { tier, tenant } => {
                    t.tenants.insert((tier.clone(), tenant.clone()), ks_arc);
                }
                Scope::Account { tier, tenant, subject } => {
                    t.tenants_with_accounts.insert((tier.clone(), tenant.clone()));
                    t.accounts
                        .insert((tier.clone(), tenant.clone(), subject.clone()), ks_arc);
                }
            }
        }
        let any = !switches.is_empty();
        self.table.store(Arc::new(t));
        self.any.store(any, Ordering::SeqCst);
    }

    /// The switch covering a whole tenant (its tier's, else its own), if in force.
    pub fn tenant_switch(&self, tier: &str, tenant: &str, now: i64) -> Option<Arc<KillSwitch>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let t = self.table.load();
        if let Some(ks) = t.tiers.get(tier).filter(|k| k.in_force(now)) {
            return Some(ks.clone());
        }
        t.tenants
            .get(&(tier.to_string(), tenant.to_string()))
            .filter(|k| k.in_force(now))
            .cloned()
    }

    /// The switch covering one account (tier, tenant or account scope), if in force.
    pub fn account_switch(&self, tier: &str, tenant: &str, subject: &str, now: i64) -> Option<Arc<KillSwitch>> {
        if let Some(ks) = self.tenant_switch(tier, tenant, now) {
            return Some(ks);
        }
        if !self.has_account_switches(tier, tenant) {
            return None;
        }
        self.table
            .load()
            .accounts
            .get(&(tier.to_string(), tenant.to_string(), subject.to_string()))
            .filter(|k| k.in_force(now))
            .cloned()
    }

    /// Switches on the board.
    pub fn len(&self) -> usize {
        let t = self.table.load();
        t.tiers.len() + t.tenants.len() + t.accounts.len()
    }

    /// Whether no switch is on the board.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Whether any account of the tenant has a switch (so a dead session cookie is worth
    /// a second look to answer 423 instead of 401).
    pub fn has_account_switches(&self, tier: &str, tenant: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .table
                .load()
                .tenants_with_accounts
                .contains(&(tier.to_string(), tenant.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(scope: Scope, expires_at: Option<i64>) -> KillSwitch {
        KillSwitch {
            scope,
            reason: "r".into(),
            message: "m".into(),
            tripped_at: 0,
            tripped_by: "operator:olivia".into(),
            system: "api".into(),
            expires_at,
            idempotency_key: None,
            sessions_ended: 0,
            incident: None,
        }
    }

    fn tenant(t: &str) -> Scope {
        Scope::Tenant {
            tier: "prod".into(),
            tenant: t.into(),
        }
    }

    #[test]
    fn an_empty_board_covers_nothing() {
        let b = Board::default();
        assert!(b.tenant_switch("prod", "acme", 0).is_none());
        assert!(b.account_switch("prod", "acme", "alice", 0).is_none());
    }

    #[test]
    fn scopes_cover_exactly_their_sessions() {
        let b = Board::default();
        b.replace(&[
            switch(tenant("acme"), None),
            switch(
                Scope::Account {
                    tier: "staging".into(),
                    tenant: "initech".into(),
                    subject: "ivan".into(),
                },
                None,
            ),
        ]);
        assert!(b.tenant_switch("prod", "acme", 0).is_some());
        assert!(b.tenant_switch("prod", "globex", 0).is_none());
        assert!(b.tenant_switch("staging", "acme", 0).is_none(), "same id, other tier");
        assert!(b.account_switch("staging", "initech", "ivan", 0).is_some());
        assert!(b.account_switch("staging", "initech", "iris", 0).is_none());
        assert!(b.tenant_switch("staging", "initech", 0).is_none());
        assert!(b.has_account_switches("staging", "initech"));
    }

    #[test]
    fn a_tier_switch_covers_every_tenant_of_the_tier_only() {
        let b = Board::default();
        b.replace(&[switch(Scope::Tier { tier: "prod".into() }, None)]);
        assert!(b.tenant_switch("prod", "acme", 0).is_some());
        assert!(b.account_switch("prod", "globex", "gina", 0).is_some());
        assert!(b.tenant_switch("staging", "initech", 0).is_none());
    }

    #[test]
    fn expired_switches_are_not_in_force() {
        let b = Board::default();
        b.replace(&[switch(tenant("acme"), Some(100))]);
        assert!(b.tenant_switch("prod", "acme", 99).is_some());
        assert!(b.tenant_switch("prod", "acme", 100).is_none());
    }

    #[test]
    fn scope_keys_and_json_are_stable() {
        let s = Scope::Account {
            tier: "prod".into(),
            tenant: "acme".into(),
            subject: "alice".into(),
        };
        assert_eq!(s.key(), "account:acme:alice");
        assert!(s.covers("prod", "acme", "alice"));
        assert!(!s.covers("prod", "acme", "bob"));
        let json = serde_json::to_value(switch(s.clone(), None)).unwrap();
        assert_eq!(json["scope"], "account");
        assert_eq!(json["subject"], "alice");
        let back: KillSwitch = serde_json::from_value(json).unwrap();
        assert_eq!(back.scope, s);
    }
}
