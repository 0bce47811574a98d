//! The one schema of security events (ECS names), documented in `docs/security-events.md`:
//! every `event.action` the gateway emits ([`ACTIONS`]), every field ([`FIELDS`]), and the
//! [`Record`] an event becomes for the sinks. Tests keep the document, this list and the
//! code that emits events in step.

use std::time::SystemTime;

/// Every `event.action` a security event may carry. `SecurityEvent::new` is called with
/// one of these; a test checks every action spelt at a call site is listed here, and
/// that the document lists exactly these.
pub const ACTIONS: &[&str] = &[
    "login",
    "mfa",
    "logout",
    "password_change",
    "session_revoked",
    "cross_tenant",
    "cross_tier",
    "breaker_trip",
    "breaker_reset",
    "auto_trip",
    "upstream_refused",
    "config_change",
    "admin_access",
];

/// Every field a security event may carry, in the order records write them. Fields with
/// no value in an event are left out.
pub const FIELDS: &[&str] = &[
    "@timestamp",
    "event.kind",
    "event.id",
    "event.action",
    "event.outcome",
    "event.reason",
    "log.level",
    "message",
    "source.ip",
    "user.id",
    "organization.id",
    "portcullis.tier",
    "portcullis.credential_tier",
    "portcullis.target",
    "portcullis.system",
    "portcullis.method",
    "upstream.host",
    "upstream.ip",
    "portcullis.sessions",
    "portcullis.incident",
    "http.request.id",
];

/// How much an event matters: `warn` for what an operator should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The normal record of a security-relevant action.
    Info,
    /// Something an operator should look at.
    Warn,
}

impl Severity {
    /// ECS `log.level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
        }
    }
}

/// One event as the sinks send it: its JSON object (the fields of [`FIELDS`]) and what
/// the syslog header needs. Holds no secret: events never carry one.
#[derive(Clone, Debug)]
pub struct Record {
    /// `event.id`: unique per event, the same in every sink (receivers dedupe on it).
    pub id: String,
    /// `@timestamp`, RFC 3339 with microseconds, UTC.
    pub timestamp: String,
    /// `event.action`.
    pub action: String,
    /// Syslog severity and `log.level`.
    pub severity: Severity,
    /// The whole event as one JSON object.
    pub json: String,
}

/// A field's value.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// A string.
    Text(&'a str),
    /// A count.
    Number(u64),
}

impl Record {
    /// Builds the record of one event from its fields (each a name of [`FIELDS`]; `None`
    /// values are left out). `@timestamp`, `event.kind`, `event.id`, `event.action` and
    /// `log.level` come from the arguments.
    pub fn build(
        id: &str,
        timestamp: &str,
        action: &str,
        severity: Severity,
        fields: &[(&'static str, Option<Value<'_>>)],
    ) -> Record {
        let fixed = [
            ("@timestamp", Some(Value::Text(timestamp))),
            ("event.kind", Some(Value::Text("security"))),
            ("event.id", Some(Value::Text(id))),
            ("event.action", Some(Value::Text(action))),
            ("log.level", Some(Value::Text(severity.as_str()))),
        ];
        // Written by hand in the documented order (serde_json's map would sort them).
        let mut json = String::from("{");
        for name in FIELDS {
            let value = fixed
                .iter()
                .chain(fields)
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| *v);
            let text = match value {
                Some(Value::Text(text)) => serde_json::Value::from(text).to_string(),
                Some(Value::Number(n)) => n.to_string(),
                None => continue,
            };
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(&serde_json::Value::from(*name).to_string());
            json.push(':');
            json.push_str(&text);
        }
        json.push('}');
        Record {
            id: id.to_string(),
            timestamp: timestamp.to_string(),
            action: action.to_string(),
            severity,
            json,
        }
    }
}

/// A new `event.id`: 128 random bits in hex.
pub fn new_event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `@timestamp` for `now`: RFC 3339, microseconds, UTC.
pub fn timestamp(now: SystemTime) -> String {
    humantime::format_rfc3339_micros(now).to_string()
}

#[cfg(test)]
mod tests {
    use super::{ACTIONS, FIELDS};

    const DOC: &str = include_str!("../../docs/security-events.md");

    /// The first column (`name` in backticks) of the Markdown table under `heading`.
    fn table_names(heading: &str) -> Vec<String> {
        let section = DOC
            .split("\n## ")
            .find(|s| s.starts_with(heading))
            .unwrap_or_else(|| panic!("no `## {heading}` section"));
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1).map(str::to_string))
            .collect()
    }

    /// If this broke, the document a SIEM team writes its rules from would list an action
    /// the gateway never sends, or miss one it does.
    #[test]
    fn the_document_lists_exactly_the_actions() {
        let mut documented = table_names("Actions");
        let mut listed: Vec<String> = ACTIONS.iter().map(|a| a.to_string()).collect();
        documented.sort();
        listed.sort();
        assert_eq!(documented, listed);
    }

    /// If this broke, the document would name a field no event carries, or miss one.
    #[test]
    fn the_document_lists_exactly_the_fields() {
        assert_eq!(table_names("Fields"), FIELDS);
    }

    /// Every action written at a `SecurityEvent::new("...")` call, or chosen into a
    /// variable just before one, is in [`ACTIONS`]; every listed action is spelt in the
    /// code outside this module. If this broke, the gateway would send an action the
    /// document does not describe, or the document would describe a dead one.
    #[test]
    fn the_code_emits_only_listed_actions_and_every_listed_one() {
        let mut sources = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if !path.ends_with("siem") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    sources.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let mut spelt = std::collections::BTreeSet::new();
        for (path, text) in &sources {
            for call in text.split("SecurityEvent::new(").skip(1) {
                if let Some(literal) = call.strip_prefix('"') {
                    let action = literal.split('"').next().unwrap_or_default();
                    assert!(
                        ACTIONS.contains(&action),
                        "{}: `{action}` is not in ACTIONS",
                        path.display()
                    );
                    spelt.insert(action.to_string());
                }
            }
            // Actions chosen at run time are string literals the code spells elsewhere.
            for action in ACTIONS {
                if text.contains(&format!("\"{action}\"")) {
                    spelt.insert(action.to_string());
                }
            }
        }
        for action in ACTIONS {
            assert!(spelt.contains(*action), "`{action}` is listed but no code spells it");
        }
    }

    #[test]
    fn a_record_writes_the_documented_fields_in_order_and_leaves_out_unset_ones() {
        use super::{Record, Severity, Value};
        let r = Record::build(
            "00000000000000000000000000000001",
            "2026-12-07T00:00:00.000001Z",
            "login",
            Severity::Warn,
            &[
                ("event.outcome", Some(Value::Text("failure"))),
                ("user.id", None),
                ("portcullis.sessions", Some(Value::Number(3))),
            ],
        );
        assert_eq!(
            r.json,
            "{\"@timestamp\":\"2026-12-07T00:00:00.000001Z\",\"event.kind\":\"security\",\
             \"event.id\":\"00000000000000000000000000000001\",\"event.action\":\"login\",\
             \"event.outcome\":\"failure\",\"log.level\":\"warn\",\"portcullis.sessions\":3}"
        );
    }
}
