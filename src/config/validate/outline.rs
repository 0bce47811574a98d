//! What can still be read of a policy file that does not deserialize as a whole (an
//! unknown key, a missing one, a value of the wrong type): the names other files refer to
//! and what a tenant's relations to them are (its hosts, its upstream).
//!
//! Validation uses it so that one mistake in a file neither hides the file's problems
//! with other files (a host claimed twice) nor shows up again elsewhere as a problem of
//! its own (a tier's automation naming "an unknown tenant" whose file is only broken).
//! Reads TOML through the `toml` crate's spanned document; validates nothing itself.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The parts of a tenant file that other files depend on, as far as they are readable.
#[derive(Debug, Default)]
pub(super) struct TenantOutline {
    /// `id`, when it is a string.
    pub id: Option<Spanned<String>>,
    /// `tier`, when it is a string.
    pub tier: Option<Spanned<String>>,
    /// `upstream`, when it is a string.
    pub upstream: Option<Spanned<String>>,
    /// The strings of `hosts`, when it is an array (other items skipped).
    pub hosts: Vec<Spanned<String>>,
    /// Duration settings that are strings, by their dotted key (`session.idle_timeout`),
    /// among [`TENANT_DURATIONS`]: each is valid or not on its own.
    pub durations: Vec<(&'static str, Spanned<String>)>,
}

/// The duration settings of a tenant file that the outline reads: table, key, and how
/// errors name it.
const TENANT_DURATIONS: [(&str, &str, &str); 4] = [
    ("session", "idle_timeout", "session.idle_timeout"),
    ("session", "absolute_timeout", "session.absolute_timeout"),
    ("limits", "queue_wait", "limits.queue_wait"),
    ("limits", "breaker_cool_down", "limits.breaker_cool_down"),
];

/// The outline of a tenant file; empty when the text is not TOML at all.
pub(super) fn tenant(text: &str) -> TenantOutline {
    let Ok(doc) = DeTable::parse(text) else {
        return TenantOutline::default();
    };
    let doc = doc.get_ref();
    let hosts = top_level(doc, "hosts")
        .and_then(|v| v.get_ref().as_array())
        .map(|items| items.iter().filter_map(string).collect())
        .unwrap_or_default();
    let durations = TENANT_DURATIONS
        .iter()
        .filter_map(|(table, key, dotted)| {
            let table = top_level(doc, table)?.get_ref().as_table()?;
            Some((*dotted, string(top_level(table, key)?)?))
        })
        .collect();
    TenantOutline {
        durations,
        id: top_level(doc, "id").and_then(string),
        tier: top_level(doc, "tier").and_then(string),
        upstream: top_level(doc, "upstream").and_then(string),
        hosts,
    }
}

/// The `name` of a tier file, when it is readable.
pub(super) fn tier_name(text: &str) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    top_level(doc.get_ref(), "name")
        .and_then(string)
        .map(Spanned::into_inner)
}

fn top_level<'a, 'i>(doc: &'a DeTable<'i>, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
    doc.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v)
}

fn string(value: &Spanned<DeValue<'_>>) -> Option<Spanned<String>> {
    let text = value.get_ref().as_str()?;
    Some(Spanned::new(value.span(), text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, a tenant file with one unknown key would hide its hosts (a host
    /// claimed twice went unreported), its id (its tier's automation was reported), its
    /// upstream and its durations.
    #[test]
    fn a_file_with_an_unknown_key_still_names_what_others_check() {
        let text = "id = \"acme\"\ncolour = \"red\"\ntier = \"prod\"\nhosts = [\"acme.test\", 7, \"www.acme.test\"]\nupstream = \"http://app\"\n";
        let o = tenant(text);
        assert_eq!(o.upstream.as_ref().map(|u| u.get_ref().as_str()), Some("http://app"));
        let nested = tenant(
            "id = \"acme\"\n[session]\nidle_timeout = \"12 hours\"\nabsolute_timeout = 5\n[limits]\nqueue_wait = \"1s\"\n",
        );
        let durations: Vec<(&str, &str)> = nested
            .durations
            .iter()
            .map(|(k, v)| (*k, v.get_ref().as_str()))
            .collect();
        assert_eq!(
            durations,
            [("session.idle_timeout", "12 hours"), ("limits.queue_wait", "1s")]
        );
        assert_eq!(o.id.as_ref().map(|i| i.get_ref().as_str()), Some("acme"));
        assert_eq!(o.tier.as_ref().map(|t| t.get_ref().as_str()), Some("prod"));
        let hosts: Vec<&str> = o.hosts.iter().map(|h| h.get_ref().as_str()).collect();
        assert_eq!(hosts, ["acme.test", "www.acme.test"]);
        assert_eq!(&text[o.hosts[0].span()], "\"acme.test\"");
    }

    #[test]
    fn wrong_types_and_broken_toml_give_nothing() {
        let o = tenant("id = 5\nhosts = \"acme.test\"\n");
        assert!(o.id.is_none() && o.hosts.is_empty());
        let o = tenant("id = \"acme\"\nhosts = [\n");
        assert!(o.id.is_none());
        assert_eq!(
            tier_name("name = \"prod\"\nproduction = \"yes\"\n").as_deref(),
            Some("prod")
        );
        assert_eq!(tier_name("name = [\n"), None);
    }
}
