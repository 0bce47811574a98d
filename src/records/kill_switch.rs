//! Kill switch records: what a switch covers ([`Scope`]) and the stored, tripped switch
//! ([`KillSwitch`]). Plain data; the rules for tripping and resetting live in
//! [`crate::killswitch::service`].

use serde::{Deserialize, Serialize};

/// What a kill switch covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum Scope {
    /// Every tenant of a tier.
    Tier {
        /// Tier name.
        tier: String,
    },
    /// One tenant.
    Tenant {
        /// Tier of the tenant.
        tier: String,
        /// Tenant id.
        tenant: String,
    },
    /// One account of a tenant.
    Account {
        /// Tier of the tenant.
        tier: String,
        /// Tenant id.
        tenant: String,
        /// The account key (see [`crate::account`]): the local user name, or
        /// `sso|<issuer id>|<sub>` for an SSO account, so a switch on one never covers
        /// the other.
        subject: String,
    },
}

impl Scope {
    /// The tier whose store holds the switch.
    pub fn tier(&self) -> &str {
        match self {
            Scope::Tier { tier } | Scope::Tenant { tier, .. } | Scope::Account { tier, .. } => tier,
        }
    }

    /// The tenant, for tenant and account scopes.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Tier { .. } => None,
            Scope::Tenant { tenant, .. } | Scope::Account { tenant, .. } => Some(tenant),
        }
    }

    /// A stable key: `tier`, `tenant:<id>`, `account:<id>:<subject>`; unique within a tier.
    pub fn key(&self) -> String {
        match self {
            Scope::Tier { .. } => "tier".to_string(),
            Scope::Tenant { tenant, .. } => format!("tenant:{tenant}"),
            Scope::Account { tenant, subject, .. } => format!("account:{tenant}:{subject}"),
        }
    }

    /// How the audit log names the target (`tier:prod`, `tenant:acme`, `account:acme:alice`).
    pub fn target(&self) -> String {
        match self {
            Scope::Tier { tier } => format!("tier:{tier}"),
            other => other.key(),
        }
    }

    /// Whether a session of `subject` on `tenant` in `tier` is in scope.
    pub fn covers(&self, tier: &str, tenant: &str, subject: &str) -> bool {
        match self {
            Scope::Tier { tier: t } => t == tier,
            Scope::Tenant { tier: t, tenant: n } => t == tier && n == tenant,
            Scope::Account {
                tier: t,
                tenant: n,
                subject: s,
            } => t == tier && n == tenant && s == subject,
        }
    }
}

/// A tripped switch, as stored (it survives restarts) and as shown by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// What it covers.
    #[serde(flatten)]
    pub scope: Scope,
    /// Why, for the audit log and operators.
    pub reason: String,
    /// What users are told (login page, 423 pages and JSON).
    pub message: String,
    /// When it was tripped (unix seconds).
    pub tripped_at: i64,
    /// Who tripped it (`operator:<name>`, `automation:<name>`, `user:<subject>`, `rule:<name>`).
    pub tripped_by: String,
    /// Through what (`api`, `cli`, `console`, `auto-rule`).
    pub system: String,
    /// When it resets on its own, if ever (unix seconds).
    pub expires_at: Option<i64>,
    /// The `Idempotency-Key` of the trip call; a repeat with the same key changes nothing.
    pub idempotency_key: Option<String>,
    /// Sessions the trip ended.
    pub sessions_ended: u64,
    /// The incident the trip belongs to (`INC-42`), named by the tripper or inherited by
    /// an auto-trip (see [`crate::incident`]); its reset and audit records carry it too.
    /// Absent from the JSON when none, as in switches stored before incidents existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

impl KillSwitch {
    /// In force at `now` (not yet expired).
    pub fn in_force(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}
