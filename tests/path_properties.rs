//! Property tests of the route decision (SECURITY-CASES §9, issue 17): a path and every
//! equivalent spelling of it get the same decision and the same forwarded path, or the
//! spelling is refused; and no spelling (case, `;` parameters) is ever treated more
//! permissively than the path it may mean. The fixture is SECURITY-CASES': `/public/*`
//! public, `/admin/*` for admins, the rest for signed-in users.
//!
//! "Forwarded" is the canonical path `classify` returns: the pipeline authorises that
//! string and sends it upstream unchanged (the black-box twin, `paths.rs`, checks what
//! the upstream receives).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use portcullis::policy::{Access, Decision, Identity, RouteRule, RouteTable, Target, classify, decide_path};
use proptest::prelude::*;

fn table() -> RouteTable {
    let rule = |prefix: &str, access: Access| RouteRule {
        prefix: prefix.to_string(),
        access,
        max_body_bytes: None,
    };
    RouteTable::new(vec![
        rule("/public/", Access::Public),
        rule("/admin/", Access::Roles(vec!["admin".into()])),
        rule("/", Access::Authenticated),
    ])
    .expect("valid table")
}

/// What the gateway does with `raw`: the path it forwards and the decision for an
/// anonymous client, a signed-in user without roles and an admin; `None` when refused
/// (400 or 404) or served by the gateway itself.
fn outcome(table: &RouteTable, raw: &str) -> Option<(String, [Decision; 3])> {
    let (path, rule) = match classify(table, raw) {
        Ok(Target::Route { path, rule }) => (path, rule),
        Ok(Target::Reserved(_)) | Err(_) => return None,
    };
    let user_roles: Vec<String> = Vec::new();
    let admin_roles = vec!["admin".to_string()];
    let user = Identity { roles: &user_roles };
    let admin = Identity { roles: &admin_roles };
    let decisions = [
        decide_path(table, &path, rule, None),
        decide_path(table, &path, rule, Some(&user)),
        decide_path(table, &path, rule, Some(&admin)),
    ];
    Some((path, decisions))
}

fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::NeedsSession => 1,
        Decision::Forbidden => 2,
    }
}

/// Canonical paths over the rules' own spelling (lower case), with names that touch
/// the rules' prefixes, dots that are not dot segments, and an encoded slash.
fn canonical_path() -> impl Strategy<Value = String> {
    let segment = prop::sample::select(vec![
        "public",
        "admin",
        "app",
        "data",
        "x",
        "public.txt",
        "admin-x",
        "a.b",
        "~u",
        "a%2Fb",
        "%20",
    ]);
    (prop::collection::vec(segment, 1..5), any::<bool>()).prop_map(|(segments, trailing)| {
        let mut path = format!("/{}", segments.join("/"));
        if trailing {
            path.push('/');
        }
        path
    })
}

/// One RFC 3986 equivalent rewrite of a path (same resource for a conforming server).
#[derive(Debug, Clone)]
enum Equivalent {
    /// `%XX` (random hex case) for an unreserved character at this index.
    EncodeUnreserved(usize, bool),
    /// An empty segment (`//`) before segment boundary `n` (collapsed by the gateway).
    EmptySegment(usize),
    /// `./` at segment boundary `n`.
    Dot(usize),
    /// `<name>/../` at segment boundary `n`.
    DotDot(usize, &'static str),
    /// An existing escape's hex digits in lower case.
    LowerHex,
}

fn equivalent() -> impl Strategy<Value = Equivalent> {
    prop_oneof![
        (0usize..40, any::<bool>()).prop_map(|(i, lower)| Equivalent::EncodeUnreserved(i, lower)),
        (0usize..6).prop_map(Equivalent::EmptySegment),
        (0usize..6).prop_map(Equivalent::Dot),
        (0usize..6, prop::sample::select(vec!["x", "admin", "public", "..."]))
            .prop_map(|(n, s)| Equivalent::DotDot(n, s)),
        Just(Equivalent::LowerHex),
    ]
}

/// The byte index just after the `n`-th `/` (the start of a segment), if there is one.
fn boundary(path: &str, n: usize) -> Option<usize> {
    path.match_indices('/').nth(n).map(|(i, _)| i + 1)
}

fn rewrite(path: &str, how: &Equivalent) -> String {
    let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    match how {
        Equivalent::EncodeUnreserved(i, lower) => {
            let Some((at, c)) = path.char_indices().filter(|(_, c)| unreserved(*c)).nth(*i) else {
                return path.to_string();
            };
            // Not a character that is part of an escape (`%2F` keeps its hex digits).
            let in_escape = path[..at].ends_with('%') || path[..at].len() >= 2 && path[..at - 1].ends_with('%');
            if in_escape {
                return path.to_string();
            }
            let hex = format!("%{:02X}", c as u32);
            let hex = if *lower { hex.to_lowercase() } else { hex };
            format!("{}{hex}{}", &path[..at], &path[at + c.len_utf8()..])
        }
        Equivalent::EmptySegment(n) => insert_at(path, *n, "/"),
        Equivalent::Dot(n) => insert_at(path, *n, "./"),
        Equivalent::DotDot(n, name) => insert_at(path, *n, &format!("{name}/../")),
        Equivalent::LowerHex => path.replace("%2F", "%2f"),
    }
}

fn insert_at(path: &str, n: usize, what: &str) -> String {
    match boundary(path, n) {
        Some(at) => format!("{}{what}{}", &path[..at], &path[at..]),
        None => path.to_string(),
    }
}

/// A spelling a case-insensitive or parameter-stripping backend may read as the path:
/// never more permissive than the path.
#[derive(Debug, Clone)]
enum Reading {
    /// The ASCII letter at this index in upper case.
    Upper(usize),
    /// Every letter in upper case.
    AllUpper,
    /// `;p=1` (or `%3Bp`) after segment `n`.
    Parameter(usize, bool),
}

fn reading() -> impl Strategy<Value = Reading> {
    prop_oneof![
        (0usize..40).prop_map(Reading::Upper),
        Just(Reading::AllUpper),
        (0usize..6, any::<bool>()).prop_map(|(n, encoded)| Reading::Parameter(n, encoded)),
    ]
}

fn reread(path: &str, how: &Reading) -> String {
    match how {
        Reading::Upper(i) => {
            let Some((at, c)) = path.char_indices().filter(|(_, c)| c.is_ascii_lowercase()).nth(*i) else {
                return path.to_string();
            };
            format!("{}{}{}", &path[..at], c.to_ascii_uppercase(), &path[at + 1..])
        }
        Reading::AllUpper => path.to_ascii_uppercase(),
        Reading::Parameter(n, encoded) => {
            let param = if *encoded { "%3Bp=1" } else { ";p=1" };
            // Just before the (n+1)-th `/`, i.e. at the end of segment n.
            match path.match_indices('/').nth(n + 1) {
                Some((at, _)) => format!("{}{param}{}", &path[..at], &path[at..]),
                None => format!("{path}{param}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// If this failed, some spelling of a path would reach the upstream with another
    /// decision than the path it names (or the upstream would get other bytes than the
    /// ones authorised).
    #[test]
    fn equivalent_spellings_get_the_same_decision_and_forwarded_path(
        path in canonical_path(),
        rewrites in prop::collection::vec(equivalent(), 1..4),
    ) {
        let table = table();
        let original = outcome(&table, &path);
        let mut spelled = path.clone();
        for how in &rewrites {
            spelled = rewrite(&spelled, how);
        }
        if let (Some(original), Some(variant)) = (&original, outcome(&table, &spelled)) {
            prop_assert_eq!(&variant, original, "{} spelled {}", path, spelled);
        }
    }

    /// If this failed, upper case or a path parameter would make a protected path public
    /// or an admin path reachable without the role.
    #[test]
    fn no_reading_is_more_permissive_than_the_path(
        path in canonical_path(),
        readings in prop::collection::vec(reading(), 1..3),
    ) {
        let table = table();
        let mut read = path.clone();
        for how in &readings {
            read = reread(&read, how);
        }
        let Some((_, base)) = outcome(&table, &path) else { return Ok(()); };
        if let Some((forwarded, decisions)) = outcome(&table, &read) {
            for (who, (variant, original)) in ["anonymous", "user", "admin"].iter().zip(decisions.iter().zip(base.iter())) {
                prop_assert!(
                    strictness(*variant) >= strictness(*original),
                    "{}: {} ({:?}) is read as {} ({:?}), forwarded as {}", who, path, original, read, variant, forwarded
                );
            }
        }
    }

    /// If this failed, a spelling of the gateway's own prefix would be forwarded to the
    /// tenant's upstream, or reach the gateway's API without the exact prefix.
    #[test]
    fn no_spelling_of_the_reserved_prefix_is_forwarded(
        rest in canonical_path(),
        rewrites in prop::collection::vec(equivalent(), 0..3),
        readings in prop::collection::vec(reading(), 0..2),
    ) {
        let table = table();
        let mut spelled = format!("/.portcullis{rest}");
        for how in &rewrites {
            spelled = rewrite(&spelled, how);
        }
        for how in &readings {
            spelled = reread(&spelled, how);
        }
        match classify(&table, &spelled) {
            Ok(Target::Route { path, .. }) => prop_assert!(
                !path.to_ascii_lowercase().starts_with("/.portcullis"),
                "{} forwarded as {}", spelled, path
            ),
            Ok(Target::Reserved(path)) => prop_assert!(
                spelled.starts_with("/.portcullis/") && path.starts_with("/.portcullis/"),
                "{} served by the gateway as {}", spelled, path
            ),
            Err(_) => {}
        }
    }
}
