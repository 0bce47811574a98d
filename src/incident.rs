//! Incidents: the reference a kill switch trip may name (`INC-42`), and the timeline of
//! an incident built from the audit log, for `GET /v1/incidents/{id}` and
//! `portcullis incident timeline` alike (one function, two renderings: JSON and Markdown).
//!
//! An incident is not stored on its own: it is the set of audit records naming it. The
//! kill switch service writes the name into the switch, the audit records of its trip
//! and reset, and the security events (see `crate::killswitch::service`); this module
//! only reads the records back. It never writes to a store, knows no HTTP, and takes the
//! clock as an argument.
//!
//! # Timeline
//! The *window* of an incident runs from the first record naming it to its last reset, or
//! stays open while a switch tripped for it has not been reset. The timeline holds, oldest
//! first:
//! - every trip, auto-trip and reset naming the incident, with the sessions each trip
//!   ended as a `revocation` right after it;
//! - every session revocation, configuration change and four-eyes approval recorded in
//!   the window, whether or not it names the incident (a policy reload in the middle of
//!   an incident belongs in its postmortem even if nobody typed the reference).
//!
//! Event kinds ([`EventKind`]): `trip` (a person or machine tripped a switch), `auto_trip`
//! (a policy auto-trip rule did), `reset`, `revocation` (sessions ended; the count is in
//! `detail`), `config_change` (policy reload, SSO change, tenant or tier change, change
//! request steps, key rotation) and `approval` (a second operator approved a four-eyes
//! change).

use serde::Serialize;

use crate::audit::AuditRecord;
use crate::store::{AuditLog, StoreError};

/// Longest incident reference accepted.
pub const ID_MAX_CHARS: usize = 64;

/// Records read from the audit log per call.
const PAGE: usize = 1000;

/// Why an incident could not be shown; the text is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// The reference is not 1..=64 characters of `[A-Za-z0-9._:-]`.
    #[error("incident must be 1 to {ID_MAX_CHARS} characters of letters, digits, '.', '_', ':' and '-'")]
    InvalidId,
    /// No audit record names the incident.
    #[error("no record names this incident")]
    NotFound,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Checks an incident reference: 1 to [`ID_MAX_CHARS`] characters of letters, digits,
/// `.`, `_`, `:` and `-` (so it is safe in a log line, a URL path and a Markdown table).
pub fn check_id(id: &str) -> Result<(), IncidentError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > ID_MAX_CHARS || !id.chars().all(allowed) {
        return Err(IncidentError::InvalidId);
    }
    Ok(())
}

/// What one timeline entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A switch tripped by a person or a machine (API, CLI, console, automation token).
    Trip,
    /// A switch tripped by a policy auto-trip rule.
    AutoTrip,
    /// A switch reset (by hand, through four eyes, or on expiry).
    Reset,
    /// Sessions ended; the count is in `detail`.
    Revocation,
    /// The configuration changed: policy reload, SSO, tenant or tier change, keys.
    ConfigChange,
    /// A second operator approved a four-eyes change.
    Approval,
}

impl EventKind {
    /// The name used in JSON and Markdown.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Trip => "trip",
            EventKind::AutoTrip => "auto_trip",
            EventKind::Reset => "reset",
            EventKind::Revocation => "revocation",
            EventKind::ConfigChange => "config_change",
            EventKind::Approval => "approval",
        }
    }
}

/// One entry of a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEvent {
    /// When, RFC 3339 UTC (`2026-12-07T03:12:09Z`).
    pub time: String,
    /// What happened.
    pub kind: EventKind,
    /// Who (`operator:olivia`, `rule:mfa-guessing`, `cli:root`, ...).
    pub actor: String,
    /// Through what (`api`, `cli`, `console`, `auto-rule`, `expiry`).
    pub system: String,
    /// Why, as the actor said.
    pub reason: String,
    /// Tenant concerned, if any.
    pub tenant: Option<String>,
    /// Tier whose audit log holds the record.
    pub tier: String,
    /// What exactly: the target and, for revocations, how many sessions ended.
    pub detail: String,
    /// Unix time, for ordering and the window; the JSON has `time`.
    #[serde(skip)]
    pub at: i64,
}

/// The timeline of an incident: the body of `GET /v1/incidents/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// The incident reference.
    pub incident: String,
    /// Oldest first.
    pub events: Vec<TimelineEvent>,
    /// From the first record naming the incident to its last reset (unix seconds).
    #[serde(skip)]
    pub window: Window,
}

/// The span of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first record naming the incident.
    pub start: i64,
    /// The last reset naming it; `None` while a switch tripped for it is not reset.
    pub end: Option<i64>,
}

impl Window {
    /// Whether `time` falls within the window (an open window has no end).
    fn contains(&self, time: i64) -> bool {
        time >= self.start && self.end.is_none_or(|end| time <= end)
    }
}

/// The kind of timeline entry an audit record makes, if any.
fn kind_of(record: &AuditRecord) -> Option<EventKind> {
    let e = &record.entry;
    Some(match e.action.as_str() {
        "breaker.trip" if e.system == "auto-rule" => EventKind::AutoTrip,
        "breaker.trip" => EventKind::Trip,
        "breaker.reset" => EventKind::Reset,
        "session.revoke" => EventKind::Revocation,
        "change.approve" => EventKind::Approval,
        "policy.reload" | "sso.update" | "sso.activate" | "sso.rollback" | "tenant.update" | "tenant.delete"
        | "key.rotate" | "change.propose" | "change.edit" | "change.apply" | "change.reject" | "change.failed" => {
            EventKind::ConfigChange
        }
        _ => return None,
    })
}

/// Builds the timeline of `incident` from audit records of one or more tiers (in any
/// order). `None` when no record names the incident.
pub fn build(incident: &str, records: &[AuditRecord]) -> Option<Timeline> {
    let mut records: Vec<&AuditRecord> = records.iter().collect();
    records.sort_by(|a, b| (a.entry.time, &a.entry.tier, a.seq).cmp(&(b.entry.time, &b.entry.tier, b.seq)));
    let names = |r: &AuditRecord| r.entry.incident.as_deref() == Some(incident);
    let window = window_of(&records, &names)?;
    let mut events = Vec::new();
    for r in records {
        let Some(kind) = kind_of(r) else {
            continue;
        };
        let switch_event = matches!(kind, EventKind::Trip | EventKind::AutoTrip | EventKind::Reset);
        let included = if switch_event {
            names(r)
        } else {
            names(r) || window.contains(r.entry.time)
        };
        if !included {
            continue;
        }
        events.push(event(r, kind, detail(r, kind)));
        if matches!(kind, EventKind::Trip | EventKind::AutoTrip) {
            let ended = r.entry.after.get("sessions_ended").and_then(serde_json::Value::as_u64);
            if let Some(n) = ended.filter(|n| *n > 0) {
                let detail = format!("{} ended by the trip of {}", sessions(n), r.entry.target);
                events.push(event(r, EventKind::Revocation, detail));
            }
        }
    }
    Some(Timeline {
        incident: incident.to_string(),
        events,
        window,
    })
}

/// The window of the records named by `names` (sorted oldest first): from the first of
/// them to the last reset, open while the last trip-or-reset of any switch is a trip.
fn window_of(records: &[&AuditRecord], names: &dyn Fn(&AuditRecord) -> bool) -> Option<Window> {
    let named: Vec<&AuditRecord> = records.iter().copied().filter(|r| names(r)).collect();
    let start = named.first()?.entry.time;
    let mut last_of_switch: std::collections::BTreeMap<(&str, &str), &AuditRecord> = Default::default();
    for r in &named {
        if matches!(r.entry.action.as_str(), "breaker.trip" | "breaker.reset") {
            last_of_switch.insert((&r.entry.tier, &r.entry.target), r);
        }
    }
    let open = last_of_switch.values().any(|r| r.entry.action == "breaker.trip");
    let last = |resets_only: bool| {
        named
            .iter()
            .filter(|r| !resets_only || r.entry.action == "breaker.reset")
            .map(|r| r.entry.time)
            .max()
    };
    let end = if open { None } else { last(true).or(last(false)) };
    Some(Window { start, end })
}

fn event(r: &AuditRecord, kind: EventKind, detail: String) -> TimelineEvent {
    TimelineEvent {
        time: rfc3339(r.entry.time),
        kind,
        actor: r.entry.actor.clone(),
        system: r.entry.system.clone(),
        reason: r.entry.reason.clone(),
        tenant: r.entry.tenant.clone(),
        tier: r.entry.tier.clone(),
        detail,
        at: r.entry.time,
    }
}

/// `1 session` / `3 sessions`.
fn sessions(n: u64) -> String {
    format!("{n} session{}", if n == 1 { "" } else { "s" })
}

/// The detail of a record: its target and what the record says about it.
fn detail(r: &AuditRecord, kind: EventKind) -> String {
    let e = &r.entry;
    let after = |k: &str| e.after.get(k);
    match kind {
        EventKind::Trip | EventKind::AutoTrip => {
            let mut d = format!("{} tripped", e.target);
            if let Some(m) = after("message").and_then(|v| v.as_str()) {
                d.push_str(&format!("; users told: {m}"));
            }
            if let Some(x) = after("expires_at").and_then(serde_json::Value::as_i64) {
                d.push_str(&format!("; expires {}", rfc3339(x)));
            }
            d
        }
        EventKind::Reset => format!("{} reset", e.target),
        EventKind::Revocation => match after("sessions_ended").and_then(serde_json::Value::as_u64) {
            Some(n) => format!("{} ended ({})", sessions(n), e.target),
            None => format!("sessions ended ({})", e.target),
        },
        EventKind::Approval => match after("id").and_then(|v| v.as_str()) {
            Some(id) => format!("change {id} approved ({})", e.target),
            None => format!("change approved ({})", e.target),
        },
        EventKind::ConfigChange => match after("id").and_then(|v| v.as_str()) {
            Some(id) => format!("{} {} (change {id})", e.action, e.target),
            None => format!("{} {}", e.action, e.target),
        },
    }
}

/// Unix seconds as RFC 3339 UTC; times before 1970 (never written) as the number.
fn rfc3339(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
        }
        Err(_) => unix.to_string(),
    }
}

/// Reads a tier's whole audit log, oldest first.
pub async fn read_log(log: &dyn AuditLog) -> Result<Vec<AuditRecord>, StoreError> {
    let mut records: Vec<AuditRecord> = Vec::new();
    loop {
        let after = records.last().map_or(0, |r| r.seq);
        let page = log.audit_records(after, PAGE).await?;
        // A tampered log may number records out of order: stop rather than loop.
        let more = page.len() == PAGE && page.last().is_some_and(|r| r.seq > after);
        records.extend(page);
        if !more {
            return Ok(records);
        }
    }
}

/// The timeline of `incident` from the audit logs of `logs` (the caller's tiers): the
/// one function behind the admin API and the CLI.
pub async fn timeline(incident: &str, logs: &[&dyn AuditLog]) -> Result<Timeline, IncidentError> {
    check_id(incident)?;
    let mut records = Vec::new();
    for log in logs {
        records.extend(read_log(*log).await?);
    }
    build(incident, &records).ok_or(IncidentError::NotFound)
}

impl Timeline {
    /// The timeline as Markdown for a postmortem: a heading, the window, a table.
    /// `now` says until when an open incident was read.
    pub fn to_markdown(&self, now: i64) -> String {
        let mut out = format!("## Incident {}\n\n", self.incident);
        let end = match self.window.end {
            Some(end) => rfc3339(end),
            None => format!("still open at {}", rfc3339(now)),
        };
        out.push_str(&format!("Window: {} to {end}\n\n", rfc3339(self.window.start)));
        out.push_str("| Time (UTC) | Kind | Actor | System | Tenant | Reason | Detail |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for e in &self.events {
            let cells = [
                e.time.as_str(),
                e.kind.as_str(),
                &e.actor,
                &e.system,
                e.tenant.as_deref().unwrap_or("-"),
                &e.reason,
                &e.detail,
            ];
            let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// A table cell: `|` escaped and line breaks flattened, so free text (reasons, user
/// messages) cannot break the table.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;
    use serde_json::json;

    const T: i64 = 1_796_612_400; // 2026-12-07T03:00:00Z

    /// A record of `action` at `T + dt` in tier prod, naming `incident`.
    fn rec(seq: u64, dt: i64, action: &str, target: &str, incident: Option<&str>) -> AuditRecord {
        AuditRecord {
            seq,
            entry: AuditEntry {
                time: T + dt,
                actor: "operator:olivia".into(),
                source_ip: "127.0.0.1".into(),
                system: "api".into(),
                action: action.into(),
                target: target.into(),
                tenant: target.strip_prefix("tenant:").map(str::to_string),
                tier: "prod".into(),
                reason: format!("{action} reason"),
                before: serde_json::Value::Null,
                after: serde_json::Value::Null,
                incident: incident.map(str::to_string),
            },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn kinds(t: &Timeline) -> Vec<&'static str> {
        t.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn ids_are_short_plain_references() {
        for ok in ["INC-42", "a", "sev1:2026.12_07-x", &"9".repeat(64)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "INC 42", "INC/42", "inc-42\n", "é", "<b>", &"9".repeat(65), "a|b"] {
            assert!(matches!(check_id(bad), Err(IncidentError::InvalidId)), "{bad:?}");
        }
    }

    /// If this broke, a postmortem would miss the sessions a trip ended, the reload in the
    /// middle of the incident or the approval, or list another incident's trip.
    #[test]
    fn the_timeline_holds_the_incident_and_what_happened_in_its_window() {
        let mut trip = rec(2, 10, "breaker.trip", "tenant:acme", Some("INC-42"));
        trip.entry.after = json!({"message": "Paused", "sessions_ended": 3});
        let mut auto = rec(4, 30, "breaker.trip", "account:acme:bob", Some("INC-42"));
        auto.entry.system = "auto-rule".into();
        auto.entry.actor = "rule:mfa-guessing".into();
        auto.entry.after = json!({"sessions_ended": 1});
        let mut approve = rec(6, 50, "change.approve", "tier:prod", None);
        approve.entry.after = json!({"id": "ch-1"});
        let mut revoke = rec(7, 55, "session.revoke", "tenant:acme", None);
        revoke.entry.after = json!({"sessions_ended": 2});
        let records = vec![
            rec(1, 0, "policy.reload", "tier:prod", None), // before the window
            trip,
            rec(3, 20, "breaker.trip", "tenant:globex", Some("INC-7")), // another incident
            auto,
            rec(5, 40, "policy.reload", "tier:prod", None),
            approve,
            revoke,
            rec(8, 60, "breaker.reset", "account:acme:bob", Some("INC-42")),
            rec(9, 70, "breaker.reset", "tenant:acme", Some("INC-42")),
            rec(10, 80, "sso.update", "tenant:acme", None), // after the window
            rec(11, 85, "breaker.drill", "tenant:acme", Some("INC-42")), // not a timeline kind
        ];
        let t = build("INC-42", &records).unwrap();
        assert_eq!(
            kinds(&t),
            [
                "trip",
                "revocation",
                "auto_trip",
                "revocation",
                "config_change",
                "approval",
                "revocation",
                "reset",
                "reset"
            ]
        );
        assert_eq!(
            t.window,
            Window {
                start: T + 10,
                end: Some(T + 70)
            }
        );
        assert_eq!(t.events[0].time, "2026-12-07T03:00:10Z");
        assert_eq!(t.events[0].detail, "tenant:acme tripped; users told: Paused");
        assert_eq!(t.events[1].detail, "3 sessions ended by the trip of tenant:acme");
        assert_eq!(t.events[3].detail, "1 session ended by the trip of account:acme:bob");
        assert_eq!(t.events[3].actor, "rule:mfa-guessing");
        assert_eq!(t.events[5].detail, "change ch-1 approved (tier:prod)");
        assert_eq!(t.events[6].detail, "2 sessions ended (tenant:acme)");
        let body = serde_json::to_value(&t).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        let keys: Vec<&String> = body["events"][0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["actor", "detail", "kind", "reason", "system", "tenant", "tier", "time"]
        );
        assert!(build("INC-404", &records).is_none());
    }

    /// If this broke, an incident still in progress would look closed, and changes made
    /// since its last reset of one switch would be left out.
    #[test]
    fn an_incident_stays_open_while_one_of_its_switches_is_tripped() {
        let records = vec![
            rec(1, 0, "breaker.trip", "tenant:acme", Some("INC-42")),
            rec(2, 10, "breaker.trip", "tenant:globex", Some("INC-42")),
            rec(3, 20, "breaker.reset", "tenant:acme", Some("INC-42")),
            rec(4, 500, "policy.reload", "tier:prod", None),
        ];
        let t = build("INC-42", &records).unwrap();
        assert_eq!(t.window.end, None);
        assert_eq!(kinds(&t), ["trip", "trip", "reset", "config_change"]);
        // Tripped again after its reset: open again.
        let again = vec![
            rec(1, 0, "breaker.trip", "tenant:acme", Some("INC-42")),
            rec(2, 10, "breaker.reset", "tenant:acme", Some("INC-42")),
            rec(3, 20, "breaker.trip", "tenant:acme", Some("INC-42")),
        ];
        assert_eq!(build("INC-42", &again).unwrap().window.end, None);
    }

    /// If this broke, a timeline merged from two tiers (the CLI's) would interleave them
    /// by tier instead of by time.
    #[test]
    fn records_of_several_tiers_are_ordered_by_time() {
        let mut staging = rec(1, 5, "breaker.trip", "tenant:initech", Some("INC-42"));
        staging.entry.tier = "staging".into();
        let records = vec![
            rec(2, 9, "breaker.reset", "tenant:acme", Some("INC-42")),
            staging,
            rec(1, 1, "breaker.trip", "tenant:acme", Some("INC-42")),
        ];
        let t = build("INC-42", &records).unwrap();
        let order: Vec<(&str, &str)> = t.events.iter().map(|e| (e.tier.as_str(), e.kind.as_str())).collect();
        assert_eq!(order, [("prod", "trip"), ("staging", "trip"), ("prod", "reset")]);
    }

    /// If this broke, a reason with a `|` or a line break would tear the postmortem's table.
    #[test]
    fn markdown_is_one_table_row_per_event() {
        let mut trip = rec(1, 0, "breaker.trip", "tenant:acme", Some("INC-42"));
        trip.entry.reason = "keys | leaked\nagain".into();
        let t = build("INC-42", &[trip]).unwrap();
        let md = t.to_markdown(T + 60);
        assert!(md.starts_with("## Incident INC-42\n"), "{md}");
        assert!(
            md.contains("Window: 2026-12-07T03:00:00Z to still open at 2026-12-07T03:01:00Z"),
            "{md}"
        );
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 3, "{md}");
        assert_eq!(
            rows[2],
            "| 2026-12-07T03:00:00Z | trip | operator:olivia | api | acme | keys \\| leaked again | tenant:acme tripped |"
        );
    }
}
