//! The audit log's records and their hash chain: what one change record holds, how its
//! hash is computed from the record before it, and how a whole log is verified.
//!
//! Stores append records (each store computes `seq`, `prev_hash` and `hash` atomically with
//! [`AuditRecord::chain`]); this module never touches a store, HTTP or the clock. Every
//! record's hash covers its sequence number, every field and the previous record's hash,
//! so [`verify`] finds a record that was changed, removed or moved. Secrets never enter a
//! record: callers pass `before`/`after` through [`redact`] first.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
/// Longest free text (a change's or a kill switch's reason, the message users see)
/// accepted, in characters.
pub const FREE_TEXT_MAX_CHARS: usize = 500;

/// The rule for free text people give with a change: judged as sent, at most
/// [`FREE_TEXT_MAX_CHARS`] and without control characters (a tab or line break at either
/// end is refused, not trimmed away, as the admin API's document states); returned
/// trimmed, `None` when blank. `field` names it in the error.
pub fn free_text(field: &str, value: &str) -> Result<Option<String>, String> {
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    if value.chars().count() > FREE_TEXT_MAX_CHARS {
        return Err(format!("{field} is longer than {FREE_TEXT_MAX_CHARS} characters"));
    }
    let value = value.trim();
    Ok((!value.is_empty()).then(|| value.to_string()))
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One change, as the caller describes it; the store adds the chain fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When (unix seconds).
    pub time: i64,
    /// Who: `operator:<name>`, `automation:<name>`, `user:<subject>`, `rule:<name>`, `cli`.
    pub actor: String,
    /// Where the call came from (`-` when there is no network peer, e.g. the CLI).
    pub source_ip: String,
    /// Through what: `api`, `cli`, `console`, `auto-rule`, `expiry`.
    pub system: String,
    /// What, as `noun.verb`: `breaker.trip`, `breaker.reset`, `breaker.drill`, ...
    pub action: String,
    /// The object acted on (`tenant:acme`, `account:acme:alice`, `tier:prod`).
    pub target: String,
    /// Tenant concerned, when there is one.
    pub tenant: Option<String>,
    /// Tier whose log holds the record.
    pub tier: String,
    /// Why, as the actor said.
    pub reason: String,
    /// State before the change (secrets redacted), or null.
    pub before: serde_json::Value,
    /// State after the change (secrets redacted), or null.
    pub after: serde_json::Value,
    /// The incident the change belongs to (`INC-42`), when one was named or inherited
    /// (see [`crate::incident`]). Written only when present, so records written before
    /// the field existed hash exactly as they did and their chains still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

/// Who acts, from where and through what: the first three fields of every
/// [`AuditEntry`] a service writes.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `operator:<name>`, `automation:<name>`, `user:<subject>`, `rule:<name>`, `cli:<user>`.
    pub name: String,
    /// Client address, or `-`.
    pub source_ip: String,
    /// `api`, `cli`, `console`, `auto-rule`.
    pub system: String,
}

impl AuditEntry {
    /// An entry of `action` by `actor` at `now`, with no target, tenant, tier, reason or
    /// states yet: fill those in with struct update.
    pub fn by(actor: &Actor, action: &str, now: i64) -> Self {
        AuditEntry {
            time: now,
            actor: actor.name.clone(),
            source_ip: actor.source_ip.clone(),
            system: actor.system.clone(),
            action: action.to_string(),
            target: String::new(),
            tenant: None,
            tier: String::new(),
            reason: String::new(),
            before: serde_json::Value::Null,
            after: serde_json::Value::Null,
            incident: None,
        }
    }
}

/// A stored record: the entry plus its place in the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Position in the tier's log, from 1, without gaps.
    pub seq: u64,
    /// The change.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// Hash of the record before (or [`GENESIS_HASH`]).
    pub prev_hash: String,
    /// SHA-256 over `seq`, `prev_hash` and the entry, hex.
    pub hash: String,
}

impl AuditRecord {
    /// The record that follows `prev` (None for the first record).
    pub fn chain(prev: Option<&AuditRecord>, entry: AuditEntry) -> AuditRecord {
        let seq = prev.map_or(1, |p| p.seq + 1);
        let prev_hash = prev.map_or_else(|| GENESIS_HASH.to_string(), |p| p.hash.clone());
        let hash = record_hash(seq, &prev_hash, &entry);
        AuditRecord {
            seq,
            entry,
            prev_hash,
            hash,
        }
    }
}

/// Hash of one record. The entry is serialised with serde_json, whose field order is the
/// struct's and whose maps are sorted, so the same record always hashes the same.
fn record_hash(seq: u64, prev_hash: &str, entry: &AuditEntry) -> String {
    let body = serde_json::to_string(entry).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"portcullis-audit-v1\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Where and how a log fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// A record's own hash does not match its content: it was edited.
    #[error("record {seq} was altered (its hash does not match its content)")]
    Altered { seq: u64 },
    /// A record does not point at the one before it: records were removed or reordered.
    #[error("record {seq} does not follow record {expected_prev} (a record was removed or moved)")]
    Broken { seq: u64, expected_prev: u64 },
    /// Sequence numbers are not 1, 2, 3, ...
    #[error("record at position {position} has sequence number {seq} (records were removed or moved)")]
    Gap { position: u64, seq: u64 },
}

/// Checks a whole log, oldest first.
pub fn verify(records: &[AuditRecord]) -> Result<(), ChainBreak> {
    let mut prev: Option<&AuditRecord> = None;
    for (i, r) in records.iter().enumerate() {
        let position = i as u64 + 1;
        if r.seq != position {
            return Err(ChainBreak::Gap { position, seq: r.seq });
        }
        if record_hash(r.seq, &r.prev_hash, &r.entry) != r.hash {
            return Err(ChainBreak::Altered { seq: r.seq });
        }
        let expected = prev.map_or(GENESIS_HASH, |p| p.hash.as_str());
        if r.prev_hash != expected {
            return Err(ChainBreak::Broken {
                seq: r.seq,
                expected_prev: position - 1,
            });
        }
        prev = Some(r);
    }
    Ok(())
}

/// Field names whose values never enter the audit log.
const SECRET_KEYS: [&str; 7] = [
    "secret",
    "client_secret",
    "password",
    "token",
    "key",
    "private_key",
    "token_sha256",
];

/// A copy of `value` with secret-looking fields replaced by `"[redacted]"`, at any depth.
pub fn redact(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let secret = SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s))
                        || k.to_ascii_lowercase().ends_with("_secret")
                        || k.to_ascii_lowercase().ends_with("_token");
                    let v = if secret {
                        Value::String("[redacted]".into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            time: 1_700_000_000,
            actor: "operator:olivia".into(),
            source_ip: "127.0.0.1".into(),
            system: "api".into(),
            action: action.into(),
            target: "tenant:acme".into(),
            tenant: Some("acme".into()),
            tier: "prod".into(),
            reason: "incident 42".into(),
            before: serde_json::Value::Null,
            after: serde_json::json!({"message": "suspended"}),
            incident: None,
        }
    }

    fn log(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let r = AuditRecord::chain(out.last(), entry(&format!("breaker.trip{i}")));
            out.push(r);
        }
        out
    }

    #[test]
    fn an_untouched_log_verifies() {
        let l = log(5);
        assert_eq!(l[0].prev_hash, GENESIS_HASH);
        assert_eq!(l[4].seq, 5);
        assert_eq!(verify(&l), Ok(()));
        assert_eq!(verify(&[]), Ok(()));
    }

    #[test]
    fn an_edited_record_is_found() {
        let mut l = log(5);
        l[2].entry.reason = "nothing to see".into();
        assert_eq!(verify(&l), Err(ChainBreak::Altered { seq: 3 }));
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let mut l = log(5);
        l[2].entry.reason = "nothing to see".into();
        l[2].hash = record_hash(3, &l[2].prev_hash.clone(), &l[2].entry);
        assert_eq!(
            verify(&l),
            Err(ChainBreak::Broken {
                seq: 4,
                expected_prev: 3
            })
        );
    }

    #[test]
    fn a_removed_record_is_found() {
        let mut l = log(5);
        l.remove(1);
        assert_eq!(verify(&l), Err(ChainBreak::Gap { position: 2, seq: 3 }));
    }

    #[test]
    fn reordered_records_are_found() {
        let mut l = log(5);
        l.swap(1, 3);
        assert!(verify(&l).is_err());
        // Renumbering to hide the move changes the hashed content.
        let mut l = log(5);
        l.swap(1, 3);
        l[1].seq = 2;
        l[3].seq = 4;
        assert!(verify(&l).is_err());
    }

    /// If this broke, every audit log written before incidents existed would fail
    /// `portcullis audit verify` after an upgrade. The record below (and its hash) was
    /// written by the version without the `incident` field.
    #[test]
    fn a_record_written_before_incidents_still_verifies() {
        let old = r#"{"seq":1,"time":1700000000,"actor":"operator:olivia","source_ip":"127.0.0.1","system":"api","action":"breaker.trip","target":"tenant:acme","tenant":"acme","tier":"prod","reason":"incident 42","before":null,"after":{"message":"suspended"},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"e5232d9f474ee3fc45e05ead5d91c05959211c05ecbabc0d345c6ef142fb0e80"}"#;
        let record: AuditRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.entry.incident, None);
        assert_eq!(verify(std::slice::from_ref(&record)), Ok(()));
        // Read back and written again, it keeps its shape (no `"incident": null`).
        assert_eq!(serde_json::to_string(&record).unwrap(), old);
        // A record naming an incident chains after it, and the name is covered by the hash.
        let next = AuditRecord::chain(
            Some(&record),
            AuditEntry {
                incident: Some("INC-42".into()),
                ..entry("breaker.reset")
            },
        );
        let mut log = vec![record, next];
        assert_eq!(verify(&log), Ok(()));
        assert!(
            serde_json::to_string(&log[1])
                .unwrap()
                .contains(r#""incident":"INC-42""#)
        );
        log[1].entry.incident = Some("INC-43".into());
        assert_eq!(verify(&log), Err(ChainBreak::Altered { seq: 2 }));
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = serde_json::json!({
            "issuer": "https://idp",
            "client_secret": "hunter2",
            "nested": {"token": "abc", "list": [{"password": "pw", "name": "x"}]},
            "upstream_token": "t"
        });
        let r = redact(&v).to_string();
        for s in ["hunter2", "\"abc\"", "\"pw\"", "\"t\""] {
            assert!(!r.contains(s), "{s} leaked: {r}");
        }
        assert!(r.contains("https://idp") && r.contains("\"x\""));
    }
}
