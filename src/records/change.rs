//! Change request records: what a four-eyes change request changes ([`ChangeKind`]),
//! where it is in its life ([`ChangeStatus`]), the stored [`ChangeRequest`], its id and
//! its [`digest`]. Plain data; the flow lives in [`crate::changes::service`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What a change request changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A tenant's `hosts`, `tier` or `upstream`; target is the tenant id.
    #[serde(rename = "tenant.update")]
    TenantUpdate,
    /// A tier's `[keys]` references (`cookie`, `assertion`, `upstream_token`); target is the tier.
    #[serde(rename = "tier.credentials")]
    TierCredentials,
    /// Reset of the tier's kill switch; target is the tier.
    #[serde(rename = "tier.breaker_reset")]
    TierBreakerReset,
    /// Reset of a tenant's kill switch (the operator console resets through four eyes);
    /// target is the tenant id.
    #[serde(rename = "tenant.breaker_reset")]
    TenantBreakerReset,
}

impl ChangeKind {
    /// Every kind, as the API names it.
    pub const NAMES: [&'static str; 4] = [
        "tenant.update",
        "tier.credentials",
        "tier.breaker_reset",
        "tenant.breaker_reset",
    ];

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "tenant.update" => Some(ChangeKind::TenantUpdate),
            "tier.credentials" => Some(ChangeKind::TierCredentials),
            "tier.breaker_reset" => Some(ChangeKind::TierBreakerReset),
            "tenant.breaker_reset" => Some(ChangeKind::TenantBreakerReset),
            _ => None,
        }
    }

    /// Whether the target is a tenant id (otherwise a tier name).
    pub fn names_tenant(self) -> bool {
        matches!(self, ChangeKind::TenantUpdate | ChangeKind::TenantBreakerReset)
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::TenantUpdate => "tenant.update",
            ChangeKind::TierCredentials => "tier.credentials",
            ChangeKind::TierBreakerReset => "tier.breaker_reset",
            ChangeKind::TenantBreakerReset => "tenant.breaker_reset",
        }
    }
}

/// Where a change request is in its life. Expiry is not stored: a pending request past
/// its `expires_at` is reported as `expired` (see [`ChangeRequest::status_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Waiting for a second operator.
    Pending,
    /// Claimed by an approver and being applied (the claim is what makes one approval win).
    Approved,
    /// Applied to the policy (or the kill switch).
    Applied,
    /// Rejected or withdrawn; never applies.
    Rejected,
    /// Approved, but applying it failed (e.g. the resulting policy did not validate);
    /// nothing was changed.
    Failed,
}

/// One change request as stored in its tier's store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// `chg-` and 32 hex digits; random, so ids tell nothing and never collide.
    pub id: String,
    /// Bumped on every stored change; `ChangeStore::replace_change_if`
    /// compares it so two concurrent decisions cannot both win.
    pub version: u64,
    /// The tier that owns the target and whose store and audit log hold the request.
    pub tier: String,
    /// What is changed.
    pub kind: ChangeKind,
    /// Tenant id or tier name.
    pub target: String,
    /// The validated change (see `changes::validate_change`); references only, never secrets.
    pub change: Map<String, Value>,
    /// Why, as the proposer (or last editor) said.
    pub reason: String,
    /// [`digest`] of kind, target, change and reason: what an approver reviewed.
    pub digest: String,
    /// Stored status.
    pub status: ChangeStatus,
    /// Operator name of the proposer.
    pub proposed_by: String,
    /// Operator names of later editors, in order; none of them may approve either.
    #[serde(default)]
    pub edited_by: Vec<String>,
    /// When proposed (unix seconds).
    pub created_at: i64,
    /// When last changed (proposal, edit or decision).
    pub updated_at: i64,
    /// A pending request cannot be approved from this time on.
    pub expires_at: i64,
    /// Operator who approved or rejected it.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// When it was approved or rejected.
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// Why applying failed (policy validation errors), for `failed` requests.
    #[serde(default)]
    pub errors: Vec<String>,
}

impl ChangeRequest {
    /// Whether it can still be edited, approved or rejected at `now`.
    pub fn is_open(&self, now: i64) -> bool {
        self.status == ChangeStatus::Pending && now < self.expires_at
    }

    /// The status shown to callers: the stored one, or `expired` for a pending request
    /// past its time to live.
    pub fn status_at(&self, now: i64) -> &'static str {
        match self.status {
            ChangeStatus::Pending if now >= self.expires_at => "expired",
            ChangeStatus::Pending => "pending",
            ChangeStatus::Approved => "approved",
            ChangeStatus::Applied => "applied",
            ChangeStatus::Rejected => "rejected",
            ChangeStatus::Failed => "failed",
        }
    }

    /// Whether `name` wrote any of its content (proposer or editor): such a person
    /// cannot be the second pair of eyes.
    pub fn authored_by(&self, name: &str) -> bool {
        self.proposed_by == name || self.edited_by.iter().any(|n| n == name)
    }

    /// The JSON the admin API answers with.
    pub fn view(&self, now: i64) -> Value {
        serde_json::json!({
            "id": self.id,
            "status": self.status_at(now),
            "digest": self.digest,
            "kind": self.kind.as_str(),
            "target": self.target,
            "tier": self.tier,
            "change": self.change,
            "reason": self.reason,
            "proposed_by": self.proposed_by,
            "edited_by": self.edited_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "errors": self.errors,
        })
    }
}

/// Whether `id` looks like an id [`new_change_id`] makes (so junk never reaches a store).
pub fn is_change_id(id: &str) -> bool {
    id.strip_prefix("chg-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// A fresh random change id.
pub fn new_change_id() -> String {
    format!("chg-{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Hex SHA-256 of the canonical JSON (object keys sorted at every depth, no spaces) of
/// `{"change","kind","reason","target"}`: what an approver reviewed. Any edit of any of
/// the four gives another digest.
pub fn digest(kind: ChangeKind, target: &str, change: &Map<String, Value>, reason: &str) -> String {
    let doc = serde_json::json!({
        "kind": kind.as_str(),
        "target": target,
        "change": change,
        "reason": reason,
    });
    let mut text = String::new();
    canonical_json(&doc, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Writes `v` as JSON with object keys sorted, whatever map type serde_json was built with.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(k) {
                    canonical_json(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
