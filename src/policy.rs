//! Tenant route rules → access decision. Owns the route table (longest-prefix match on the
//! canonical path), the split between the gateway's reserved prefix and tenant routes, the
//! refusal of paths a backend could read differently from the gateway, and the final
//! allow / needs-session / forbidden decision.
//!
//! # One rule for case and readings
//! Route prefixes match ignoring ASCII case, on every reading of the path: the canonical
//! form and each alternate (`;` or `%3B` parameters stripped, `%2F` / `%5C` / `\` read as
//! `/`), each looked up once as written (a case-sensitive backend) and once lowercased
//! against the lowercased prefixes (a case-insensitive backend). The strictest decision
//! wins. `classify` refuses a path with alternates unless every reading, under both
//! lookups, lands on the same public rule; so `decide_path` only has to weigh the two
//! lookups of the canonical path. Two prefixes equal ignoring case are refused at load.
//!
//! Pure: no I/O, no HTTP types, no sessions. Reading rules from config belongs to
//! `config`; turning a decision into a status code belongs to `proxy`.

use std::collections::HashMap;

use crate::path::{self, NormalisedPath};

/// Who may reach a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user of the tenant.
    Authenticated,
    /// Signed-in users holding at least one of these roles.
    Roles(Vec<String>),
}

/// One tenant route rule as configured.
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// Canonical path prefix; a trailing `/` is ignored when matching (except for `/`).
    pub prefix: String,
    /// Who may reach paths under the prefix.
    pub access: Access,
    /// Body limit for this route, overriding the tenant's when set.
    pub max_body_bytes: Option<u64>,
}

/// A route table that was refused; messages are for the operator writing the policy.
/// Every variant names the offending prefix (see [`PolicyError::prefix`]) so config can
/// point at its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Requests always start with `/`, so such a rule could never match.
    #[error("prefix `{prefix}` must start with '/'")]
    NotAbsolute {
        /// The prefix as written.
        prefix: String,
    },
    /// A prefix no request path could be accepted with.
    #[error("prefix `{prefix}` is not a valid path: {reason}")]
    Invalid {
        /// The prefix as written.
        prefix: String,
        /// What is wrong with it.
        reason: path::PathError,
    },
    /// Rules are matched against canonical paths; a non-canonical prefix never matches
    /// the paths it seems to name.
    #[error("prefix `{prefix}` is not normalised (did you mean `{canonical}`?)")]
    NotCanonical {
        /// The prefix as written.
        prefix: String,
        /// What it normalises to.
        canonical: String,
    },
    /// A prefix with an encoded slash or `;` can be read two ways by backends.
    #[error("prefix `{prefix}` is ambiguous (encoded slash, backslash or ';')")]
    Ambiguous {
        /// The prefix as written.
        prefix: String,
    },
    /// The gateway serves `/.portcullis/` itself; a tenant rule there would never apply.
    #[error("prefix `{prefix}` is reserved for the gateway")]
    Reserved {
        /// The prefix as written.
        prefix: String,
    },
    /// Two rules for one prefix (`/a` and `/a/` count as one, and so do `/a` and `/A`,
    /// since a case-insensitive backend serves both) leave the winner undefined.
    #[error("prefix `{prefix}` is listed twice (prefixes compare ignoring case)")]
    Duplicate {
        /// The second spelling seen.
        prefix: String,
    },
}

impl PolicyError {
    /// The prefix as written, so the caller can point at the rule that was refused.
    pub fn prefix(&self) -> &str {
        match self {
            Self::NotAbsolute { prefix }
            | Self::Invalid { prefix, .. }
            | Self::NotCanonical { prefix, .. }
            | Self::Ambiguous { prefix }
            | Self::Reserved { prefix }
            | Self::Duplicate { prefix } => prefix,
        }
    }
}

type Index = HashMap<String, usize, foldhash::fast::RandomState>;

/// A tenant's route rules, validated once per policy load and immutable after; lookups
/// cost one hash probe per path segment.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// The rules in policy order; the indexes point into it.
    rules: Vec<RouteRule>,
    /// Match key (prefix without its trailing `/`, so `/` is "") as written: what a
    /// case-sensitive backend routes by.
    exact: Index,
    /// Match key ASCII-lowercased: what a case-insensitive backend routes by.
    folded: Index,
    /// Some prefix has an upper-case ASCII letter, so `folded` differs from `exact` and a
    /// lower-case path still needs its own folded lookup.
    has_upper: bool,
}

impl RouteTable {
    /// Validates and indexes `rules`.
    ///
    /// Errors: prefix not starting with '/', prefix not already canonical (normalise(prefix)
    /// differs) or with alternate readings, prefix under the reserved prefix, duplicate
    /// prefix (`/a`, `/a/` and `/A` are the same prefix).
    pub fn new(rules: Vec<RouteRule>) -> Result<Self, PolicyError> {
        let index = || Index::with_capacity_and_hasher(rules.len(), foldhash::fast::RandomState::default());
        let (mut exact, mut folded) = (index(), index());
        for (at, rule) in rules.iter().enumerate() {
            let prefix = rule.prefix.clone();
            if !prefix.starts_with('/') {
                return Err(PolicyError::NotAbsolute { prefix });
            }
            match path::normalise(&prefix) {
                Ok(NormalisedPath { canonical, .. }) if canonical != prefix => {
                    return Err(PolicyError::NotCanonical { prefix, canonical });
                }
                Ok(NormalisedPath { alternates, .. }) if !alternates.is_empty() => {
                    return Err(PolicyError::Ambiguous { prefix });
                }
                Ok(_) => {}
                Err(reason) => return Err(PolicyError::Invalid { prefix, reason }),
            }
            if looks_reserved(&prefix) {
                return Err(PolicyError::Reserved { prefix });
            }
            let key = match_key(&prefix);
            if folded.insert(key.to_ascii_lowercase(), at).is_some() {
                return Err(PolicyError::Duplicate { prefix });
            }
            exact.insert(key.to_owned(), at);
        }
        let has_upper = rules.iter().any(|r| has_upper(&r.prefix));
        Ok(Self {
            rules,
            exact,
            folded,
            has_upper,
        })
    }

    /// Longest matching prefix; a prefix (its trailing '/' ignored, except "/" itself)
    /// matches the path equal to it and every path below it: "/admin/" and "/admin" both
    /// match "/admin", "/admin/", "/admin/x", never "/administrator". None when nothing
    /// matches.
    pub fn lookup(&self, canonical_path: &str) -> Option<&RouteRule> {
        self.longest(&self.exact, canonical_path)
    }

    /// The rule a backend that ignores ASCII case applies to `path`: `lookup` of the
    /// lowercased path against the lowercased prefixes. Allocates only when `path` has an
    /// upper-case letter.
    pub fn lookup_folded(&self, path: &str) -> Option<&RouteRule> {
        if has_upper(path) {
            self.longest(&self.folded, &path.to_ascii_lowercase())
        } else if self.has_upper {
            self.longest(&self.folded, path)
        } else {
            self.lookup(path)
        }
    }

    /// `lookup_folded(path)`, or None when it cannot differ from `lookup(path)` (no
    /// upper-case letter in the path or any prefix), so the common case costs no second
    /// lookup.
    fn folded_if_different(&self, path: &str) -> Option<Option<&RouteRule>> {
        (self.has_upper || has_upper(path)).then(|| self.lookup_folded(path))
    }

    fn longest(&self, index: &Index, path: &str) -> Option<&RouteRule> {
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        loop {
            if let Some(&at) = index.get(candidate) {
                return self.rules.get(at);
            }
            let cut = candidate.rfind('/')?;
            candidate = candidate.get(..cut)?;
        }
    }
}

fn has_upper(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_uppercase())
}

/// The key a prefix is stored under: no trailing `/`, so `/` becomes "" and matches all.
fn match_key(prefix: &str) -> &str {
    prefix.strip_suffix('/').unwrap_or(prefix)
}

/// Reserved prefix served by the gateway itself.
pub const RESERVED_PREFIX: &str = "/.portcullis/";

/// Where a request goes, once its path has been checked.
#[derive(Debug)]
pub enum Target<'a> {
    /// Exactly under "/.portcullis/" (raw path starts with the exact bytes "/.portcullis/"
    /// and the canonical path too); carries the canonical path.
    Reserved(String),
    /// A tenant route; `rule` None means no rule matched (callers treat it as
    /// Authenticated). `path` is canonical: authorise it and forward it unchanged.
    Route {
        /// Canonical path, to forward byte for byte.
        path: String,
        /// The longest-prefix rule for `path`.
        rule: Option<&'a RouteRule>,
    },
}

/// Why a request path is answered by the gateway without routing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed path, or one a backend could read as a differently protected path;
    /// carries a short message safe to show the client.
    BadRequest(String),
    /// A spelling of the reserved prefix other than the exact one: neither served by the
    /// gateway nor forwarded, so it cannot reach the upstream or the gateway's own API.
    NotFound,
}

/// Splits a request between the gateway's reserved area and tenant routes.
///
/// raw_path = path part of the request target as received.
pub fn classify<'a>(table: &'a RouteTable, raw_path: &str) -> Result<Target<'a>, Refusal> {
    let normalised = path::normalise(raw_path).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let exactly_reserved = raw_path.starts_with(RESERVED_PREFIX) && normalised.canonical.starts_with(RESERVED_PREFIX);
    if exactly_reserved {
        return Ok(Target::Reserved(normalised.canonical));
    }
    let readings = || std::iter::once(&normalised.canonical).chain(&normalised.alternates);
    if readings().any(|reading| looks_reserved(reading)) {
        return Err(Refusal::NotFound);
    }
    let rule = table.lookup(&normalised.canonical);
    if !normalised.alternates.is_empty() {
        // A path with another reading is only safe when every reading, as written and
        // folded, lands on the same public rule: otherwise the backend could serve a
        // protected path we never checked.
        let public = rule.filter(|r| r.access == Access::Public);
        let all_same_public = public.is_some_and(|p| {
            let same = |r: Option<&RouteRule>| r.is_some_and(|r| r.prefix == p.prefix);
            readings().all(|reading| same(table.lookup(reading)) && table.folded_if_different(reading).is_none_or(same))
        });
        if !all_same_public {
            return Err(Refusal::BadRequest("ambiguous path".to_owned()));
        }
    }
    Ok(Target::Route {
        path: normalised.canonical,
        rule,
    })
}

/// Any spelling of the reserved prefix, ignoring ASCII case: the exact name, or followed by
/// `/`, an escape, or a path parameter.
fn looks_reserved(path: &str) -> bool {
    const NAME: &str = "/.portcullis";
    let Some(head) = path.get(..NAME.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(NAME) {
        return false;
    }
    let rest = path.get(NAME.len()..).unwrap_or_default();
    rest.is_empty() || rest.starts_with(['/', '%', ';'])
}

/// The signed-in user, as far as route access cares.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Roles granted to the user in this tenant.
    pub roles: &'a [String],
}

/// The outcome of the route check; `proxy` maps it to forward / login / `403`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request.
    Allow,
    /// No session: send to login (HTML) or answer `401`.
    NeedsSession,
    /// Signed in but lacking a required role: `403`.
    Forbidden,
}

/// Applies a rule to an identity; a path no rule matches needs a session (deny by
/// default). identity None = anonymous.
pub fn decide(rule: Option<&RouteRule>, identity: Option<&Identity<'_>>) -> Decision {
    match (rule.map(|r| &r.access), identity) {
        (Some(Access::Public), _) => Decision::Allow,
        (_, None) => Decision::NeedsSession,
        (Some(Access::Authenticated) | None, Some(_)) => Decision::Allow,
        (Some(Access::Roles(wanted)), Some(who)) => {
            if who.roles.iter().any(|role| wanted.contains(role)) {
                Decision::Allow
            } else {
                Decision::Forbidden
            }
        }
    }
}

/// The rules a canonical path (from `classify`) meets: its own, and the one a backend
/// that ignores case applies (it serves `/ADMIN/x` as `/admin/x`, and `/reports` under a
/// `/Reports/` rule). Found once per request; every question about the path weighs both,
/// so case can never dodge a rule and folding can never widen one. The path's other
/// readings need no look here: `classify` refuses a path unless all of them land on its
/// one public rule.
#[derive(Debug, Clone, Copy)]
pub struct PathRules<'a> {
    own: Option<&'a RouteRule>,
    /// The same as `own` when folding cannot make a difference (the common case).
    folded: Option<&'a RouteRule>,
}

impl<'a> PathRules<'a> {
    /// The rules of `path`, whose own rule (`table.lookup(path)`) is `rule`.
    pub fn of(table: &'a RouteTable, path: &str, rule: Option<&'a RouteRule>) -> Self {
        let folded = table.folded_if_different(path).unwrap_or(rule);
        PathRules { own: rule, folded }
    }

    fn differ(&self) -> bool {
        match (self.own, self.folded) {
            (Some(a), Some(b)) => !std::ptr::eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        }
    }

    /// The stricter of the two rules' decisions.
    pub fn decide(&self, identity: Option<&Identity<'_>>) -> Decision {
        let decision = decide(self.own, identity);
        if !self.differ() {
            return decision;
        }
        stricter(decision, decide(self.folded, identity))
    }

    /// Public under both rules: only then may the path be served without a session and
    /// forwarded without identity headers.
    pub fn is_public(&self) -> bool {
        self.decide(None) == Decision::Allow
    }

    /// The smaller body limit the two rules set (`None` when neither sets one, and the
    /// tenant's limit applies).
    pub fn body_limit(&self) -> Option<u64> {
        let own = self.own.and_then(|r| r.max_body_bytes);
        let folded = self.folded.and_then(|r| r.max_body_bytes);
        match (own, folded) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// [`PathRules::decide`] in one call.
pub fn decide_path(
    table: &RouteTable,
    path: &str,
    rule: Option<&RouteRule>,
    identity: Option<&Identity<'_>>,
) -> Decision {
    PathRules::of(table, path, rule).decide(identity)
}

fn stricter(a: Decision, b: Decision) -> Decision {
    let rank = |d: Decision| match d {
        Decision::Allow => 0,
        Decision::NeedsSession => 1,
        Decision::Forbidden => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, a path public as written but protected in another case would be
    /// forwarded without the identity the upstream needs, or with the public body limit.
    #[test]
    fn public_and_body_limit_follow_every_rule_a_path_meets() {
        let mut public = rule("/Files/", Access::Public);
        public.max_body_bytes = Some(1000);
        let mut admin = rule("/files/admin/", admin_roles());
        admin.max_body_bytes = Some(10);
        let table = RouteTable::new(vec![public, admin, rule("/", Access::Authenticated)]).unwrap();
        let at = |path: &str| {
            let rules = PathRules::of(&table, path, table.lookup(path));
            (rules.is_public(), rules.body_limit())
        };
        assert_eq!(at("/Files/x"), (true, Some(1000)));
        assert_eq!(at("/Files/admin/x"), (false, Some(10)));
        assert_eq!(at("/other"), (false, None));
    }

    #[test]
    fn case_cannot_dodge_a_rule() {
        let table = RouteTable::new(vec![
            rule("/public/", Access::Public),
            rule("/admin/", Access::Roles(vec!["admin".into()])),
            rule("/", Access::Authenticated),
        ])
        .unwrap();
        let user = Identity { roles: &[] };
        let at = |path: &str, who: Option<&Identity<'_>>| decide_path(&table, path, table.lookup(path), who);
        assert_eq!(at("/ADMIN/x", Some(&user)), Decision::Forbidden);
        assert_eq!(at("/Admin/x", None), Decision::NeedsSession);
        assert_eq!(at("/PUBLIC/x", None), Decision::NeedsSession);
        assert_eq!(at("/public/x", None), Decision::Allow);
        assert_eq!(at("/App/x", Some(&user)), Decision::Allow);
    }

    fn rule(prefix: &str, access: Access) -> RouteRule {
        RouteRule {
            prefix: prefix.to_owned(),
            access,
            max_body_bytes: None,
        }
    }

    fn admin_roles() -> Access {
        Access::Roles(vec!["admin".to_owned()])
    }

    /// The fixture of SECURITY-CASES §9: `/public/*` public, `/admin/*` admins, rest
    /// signed-in users.
    fn table() -> RouteTable {
        RouteTable::new(vec![
            rule("/public/", Access::Public),
            rule("/admin/", admin_roles()),
            rule("/", Access::Authenticated),
        ])
        .unwrap()
    }

    fn route<'a>(table: &'a RouteTable, raw: &str) -> (String, Option<&'a RouteRule>) {
        match classify(table, raw) {
            Ok(Target::Route { path, rule }) => (path, rule),
            other => panic!("{raw:?}: expected a route, got {other:?}"),
        }
    }

    fn prefix_of(rule: Option<&RouteRule>) -> Option<&str> {
        rule.map(|r| r.prefix.as_str())
    }

    /// What an anonymous request for `raw` is allowed to do; `Err` when refused first.
    fn anonymous(raw: &str) -> Result<Decision, Refusal> {
        let table = table();
        match classify(&table, raw)? {
            Target::Route { rule, .. } => Ok(decide(rule, None)),
            Target::Reserved(path) => panic!("{raw:?} reached reserved {path:?}"),
        }
    }

    // --- RouteTable::new -------------------------------------------------------------

    #[test]
    fn table_refuses_bad_prefixes() {
        let cases: &[(&str, PolicyError)] = &[
            (
                "admin/",
                PolicyError::NotAbsolute {
                    prefix: "admin/".into(),
                },
            ),
            ("", PolicyError::NotAbsolute { prefix: String::new() }),
            (
                "/a/../b",
                PolicyError::NotCanonical {
                    prefix: "/a/../b".into(),
                    canonical: "/b".into(),
                },
            ),
            (
                "//admin",
                PolicyError::NotCanonical {
                    prefix: "//admin".into(),
                    canonical: "/admin".into(),
                },
            ),
            (
                "/%7Ea",
                PolicyError::NotCanonical {
                    prefix: "/%7Ea".into(),
                    canonical: "/~a".into(),
                },
            ),
            (
                "/a%2fb",
                PolicyError::NotCanonical {
                    prefix: "/a%2fb".into(),
                    canonical: "/a%2Fb".into(),
                },
            ),
            (
                "/a%2Fb",
                PolicyError::Ambiguous {
                    prefix: "/a%2Fb".into(),
                },
            ),
            ("/a;b/", PolicyError::Ambiguous { prefix: "/a;b/".into() }),
            (
                "/a%00",
                PolicyError::Invalid {
                    prefix: "/a%00".into(),
                    reason: path::PathError::ControlCharacter,
                },
            ),
            (
                "/a%zz",
                PolicyError::Invalid {
                    prefix: "/a%zz".into(),
                    reason: path::PathError::MalformedEscape,
                },
            ),
            (
                "/.portcullis/",
                PolicyError::Reserved {
                    prefix: "/.portcullis/".into(),
                },
            ),
            (
                "/.Portcullis",
                PolicyError::Reserved {
                    prefix: "/.Portcullis".into(),
                },
            ),
        ];
        for (prefix, want) in cases {
            let got = RouteTable::new(vec![rule(prefix, Access::Public)]).unwrap_err();
            assert_eq!(got, *want, "{prefix:?}");
            assert!(got.to_string().contains(prefix), "{got}");
        }
    }

    #[test]
    fn table_refuses_duplicate_prefixes_including_trailing_slash_variants() {
        for (a, b) in [
            ("/admin/", "/admin/"),
            ("/admin", "/admin/"),
            ("/admin/", "/admin"),
            ("/", "/"),
        ] {
            let got = RouteTable::new(vec![rule(a, Access::Public), rule(b, Access::Authenticated)]).unwrap_err();
            assert_eq!(got, PolicyError::Duplicate { prefix: b.to_owned() }, "{a:?} + {b:?}");
        }
    }

    #[test]
    fn table_accepts_empty_and_nested_rules() {
        assert!(RouteTable::new(vec![]).unwrap().lookup("/x").is_none());
        let table = RouteTable::new(vec![
            rule("/a/", Access::Public),
            rule("/a/b", admin_roles()),
            rule("/.well-known/", Access::Public),
        ])
        .unwrap();
        assert_eq!(prefix_of(table.lookup("/a/b/c")), Some("/a/b"));
        assert_eq!(prefix_of(table.lookup("/.well-known/x")), Some("/.well-known/"));
    }

    // --- lookup ----------------------------------------------------------------------

    #[test]
    fn lookup_matches_whole_segments_with_longest_prefix() {
        let table = table();
        let cases: &[(&str, Option<&str>)] = &[
            ("/", Some("/")),
            ("/admin", Some("/admin/")),
            ("/admin/", Some("/admin/")),
            ("/admin/x", Some("/admin/")),
            ("/admin/x/y/", Some("/admin/")),
            ("/administrator", Some("/")),
            ("/admin;x", Some("/")),
            ("/admin.json", Some("/")),
            ("/public", Some("/public/")),
            ("/public/", Some("/public/")),
            ("/public/a/b", Some("/public/")),
            ("/publicity", Some("/")),
            ("/PUBLIC/x", Some("/")),
            ("/x/public/y", Some("/")),
        ];
        for (path, want) in cases {
            assert_eq!(prefix_of(table.lookup(path)), *want, "{path:?}");
        }
    }

    #[test]
    fn lookup_treats_prefix_with_or_without_trailing_slash_alike() {
        for prefix in ["/admin", "/admin/"] {
            let table = RouteTable::new(vec![rule(prefix, admin_roles())]).unwrap();
            for path in ["/admin", "/admin/", "/admin/x"] {
                assert_eq!(prefix_of(table.lookup(path)), Some(prefix), "{prefix:?} vs {path:?}");
            }
            for path in ["/administrator", "/", "/x/admin", "/adm"] {
                assert!(table.lookup(path).is_none(), "{prefix:?} must not match {path:?}");
            }
        }
    }

    #[test]
    fn lookup_without_root_rule_can_miss() {
        let table = RouteTable::new(vec![rule("/public/", Access::Public)]).unwrap();
        assert!(table.lookup("/admin").is_none());
        assert!(table.lookup("/").is_none());
        // An unmatched path needs a session: deny by default.
        assert_eq!(decide(table.lookup("/admin"), None), Decision::NeedsSession);
    }

    // --- decide ----------------------------------------------------------------------

    #[test]
    fn decide_covers_every_access_and_identity() {
        let admin = vec!["admin".to_owned(), "ops".to_owned()];
        let user = vec!["viewer".to_owned()];
        let none: Vec<String> = vec![];
        let admin_id = Identity { roles: &admin };
        let user_id = Identity { roles: &user };
        let bare_id = Identity { roles: &none };
        let public = rule("/p/", Access::Public);
        let authed = rule("/a/", Access::Authenticated);
        let roles = rule("/r/", Access::Roles(vec!["ops".into(), "root".into()]));
        let cases: &[(Option<&RouteRule>, Option<&Identity<'_>>, Decision)] = &[
            (Some(&public), None, Decision::Allow),
            (Some(&public), Some(&bare_id), Decision::Allow),
            (Some(&authed), None, Decision::NeedsSession),
            (Some(&authed), Some(&bare_id), Decision::Allow),
            (Some(&roles), None, Decision::NeedsSession),
            (Some(&roles), Some(&admin_id), Decision::Allow),
            (Some(&roles), Some(&user_id), Decision::Forbidden),
            (Some(&roles), Some(&bare_id), Decision::Forbidden),
            (None, None, Decision::NeedsSession),
            (None, Some(&bare_id), Decision::Allow),
        ];
        for (i, (rule, identity, want)) in cases.iter().enumerate() {
            assert_eq!(decide(*rule, *identity), *want, "case {i}");
        }
    }

    #[test]
    fn role_names_match_exactly() {
        let roles = rule("/r/", admin_roles());
        for name in ["Admin", "admin ", "administrator", "adm"] {
            let held = vec![name.to_owned()];
            assert_eq!(
                decide(Some(&roles), Some(&Identity { roles: &held })),
                Decision::Forbidden,
                "{name:?}"
            );
        }
    }

    // --- classify: reserved prefix ---------------------------------------------------

    #[test]
    fn exact_reserved_prefix_is_served_by_the_gateway() {
        let table = table();
        for (raw, want) in [
            ("/.portcullis/login", "/.portcullis/login"),
            ("/.portcullis/", "/.portcullis/"),
            ("/.portcullis/api/login", "/.portcullis/api/login"),
            ("/.portcullis//jwks.json", "/.portcullis/jwks.json"),
            ("/.portcullis/a/../status", "/.portcullis/status"),
            ("/.portcullis/../.portcullis/api", "/.portcullis/api"),
        ] {
            match classify(&table, raw) {
                Ok(Target::Reserved(path)) => assert_eq!(path, want, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }

    /// PATH-04 (reserved part): other spellings of the reserved prefix must neither reach
    /// the gateway's own API nor be proxied.
    #[test]
    fn other_spellings_of_the_reserved_prefix_are_not_found() {
        let table = table();
        for raw in [
            "/.PORTCULLIS/api/x",
            "/.Portcullis/login",
            "/%2eportcullis/api/x",
            "/%2Eportcullis/api/x",
            "/.portcullis%2fapi/x",
            "/.portcullis%2Fapi/x",
            "/.portcullis%5capi/x",
            "/.portcullis\\api/x",
            "/.portcullis;x/api",
            "/.portcullis",
            "/.portcullis%20/api",
            "/x/../.portcullis/api",
            "/public/../.portcullis/api",
            "//.portcullis/api",
            "/./.portcullis/api",
            "/x%2F..%2F.portcullis/api",
            "/x;/../.portcullis/api",
            "/.portcullis%3Bx/api",
            "/.PORTCULLIS%3bx/api",
            "/x%3B/../.portcullis/api",
            "/.Portcullis%2F../api",
        ] {
            assert_eq!(classify(&table, raw).map(|_| ()), Err(Refusal::NotFound), "{raw:?}");
        }
    }

    #[test]
    fn names_that_merely_resemble_the_reserved_prefix_are_tenant_routes() {
        let table = table();
        for raw in [
            "/.portcullisx",
            "/.portcullis.json",
            "/x/.portcullis/api",
            "/portcullis/api",
        ] {
            let (path, rule) = route(&table, raw);
            assert_eq!(path, raw);
            assert_eq!(prefix_of(rule), Some("/"), "{raw:?}");
        }
    }

    // --- classify: SECURITY-CASES §9 -------------------------------------------------

    /// PATH-01: traversal from the public area to /admin, in every spelling, must need a
    /// session or be refused — never be allowed anonymously.
    #[test]
    fn path_01_traversal_out_of_public_needs_auth_or_is_refused() {
        let cases: &[(&str, Result<Decision, ()>)] = &[
            ("/public/../admin", Ok(Decision::NeedsSession)),
            ("/public/%2e%2e/admin", Ok(Decision::NeedsSession)),
            ("/public/.%2e/admin", Ok(Decision::NeedsSession)),
            ("/public/%2e%2e%2fadmin", Err(())),
            ("/public/..%2fadmin", Err(())),
            ("/public/..%5cadmin", Err(())),
            ("/public/..;/admin", Err(())),
            ("/admin;/public", Err(())),
        ];
        for (raw, want) in cases {
            let got = anonymous(raw);
            match want {
                Ok(decision) => assert_eq!(got, Ok(*decision), "{raw:?}"),
                Err(()) => assert!(matches!(got, Err(Refusal::BadRequest(_))), "{raw:?}: {got:?}"),
            }
        }
        let table = table();
        assert_eq!(prefix_of(route(&table, "/public/../admin").1), Some("/admin/"));
        assert_eq!(route(&table, "/public/%2e%2e/admin").0, "/admin");
    }

    /// PATH-02: the query is not part of the path: `/admin` is classified as the admin
    /// route, and a query smuggled into the path argument is refused, not matched.
    #[test]
    fn path_02_query_never_affects_the_route() {
        let table = table();
        let (path, rule) = route(&table, "/admin");
        assert_eq!(path, "/admin");
        assert_eq!(prefix_of(rule), Some("/admin/"));
        assert_eq!(decide(rule, None), Decision::NeedsSession);
        for raw in ["/admin?x=/public", "/admin?/public"] {
            assert!(matches!(classify(&table, raw), Err(Refusal::BadRequest(_))), "{raw:?}");
        }
    }

    /// PATH-04: slash, dot, case, NUL and overlong variants need a session or are refused.
    #[test]
    fn path_04_variants_need_auth_or_are_refused() {
        let cases: &[(&str, Result<Decision, ()>)] = &[
            ("//admin", Ok(Decision::NeedsSession)),
            ("/public//../admin", Ok(Decision::NeedsSession)),
            ("/./admin", Ok(Decision::NeedsSession)),
            ("/%2Fadmin", Err(())),
            ("/PUBLIC/../admin", Ok(Decision::NeedsSession)),
            ("/PUBLIC/x", Ok(Decision::NeedsSession)),
            ("/public%00/../admin", Err(())),
            ("/public/%c0%ae%c0%ae/admin", Err(())),
        ];
        for (raw, want) in cases {
            let got = anonymous(raw);
            match want {
                Ok(decision) => assert_eq!(got, Ok(*decision), "{raw:?}"),
                Err(()) => assert!(matches!(got, Err(Refusal::BadRequest(_))), "{raw:?}: {got:?}"),
            }
        }
    }

    /// More encodings aimed at the protected area: none may be allowed anonymously, and
    /// whatever is allowed is forwarded exactly as authorised (PATH-05).
    #[test]
    fn no_encoded_variant_reaches_admin_anonymously() {
        let table = table();
        let variants = [
            "/admin",
            "/admin/",
            "/admin/x",
            "//admin//x",
            "/public/../admin/x",
            "/public/./../admin",
            "/public/%2E%2E/admin",
            "/public/.%2E/admin/",
            "/public/%2e./admin",
            "/public/x/../../admin",
            "/public/..%2Fadmin",
            "/public/..%2F..%2Fadmin",
            "/public/x/..%2F..%2Fadmin",
            "/public/%2e%2e%5cadmin",
            "/public\\..\\admin",
            "/public/..\\admin",
            "/public/..;/admin",
            "/public/..;jsessionid=1/admin",
            "/public/.;/../admin",
            "/public/..%3Badmin",
            "/public;/../admin",
            "/admin;/public/",
            "/admin;x",
            "/admin%3B/public",
            "/%61dmin",
            "/%41dmin",
            "/ADMIN",
            "/admin%2F",
            "/admin%2Fx",
            "/admin%5Cx",
            "/public/%252e%252e/admin",
            "/public/%c0%ae%c0%ae/admin",
            "/public/%e0%80%ae%e0%80%ae/admin",
            "/public%00/../admin",
            "/public%0a/../admin",
            "/public/..%00/admin",
            "/public/%2e%2e%00/admin",
            "/public /../admin",
            "/public/../admin#",
            "/public/..%2f..%2f..%2fadmin",
            "/public%2F..%2Fadmin",
            "/public/x%2F..;/admin",
            "/public/%2e%2e;/admin",
            "/./public/../admin",
            "/public/../../../admin",
            "/public/..//admin",
            "/public/.../admin",
            "/public/%2e%2e%2e/admin",
            "/public/...;/admin",
            "/a/../admin",
        ];
        assert!(variants.len() >= 50);
        for raw in variants {
            match classify(&table, raw) {
                Ok(Target::Route { path, rule }) => {
                    if decide(rule, None) == Decision::Allow {
                        // Allowed only when every reading stays in the public area.
                        assert!(path.starts_with("/public/"), "{raw:?} allowed as {path:?}");
                        let again = path::normalise(&path).unwrap();
                        assert_eq!(again.canonical, path, "{raw:?}");
                        for alt in again.alternates {
                            assert!(alt.starts_with("/public/"), "{raw:?}: alternate {alt:?}");
                        }
                    }
                }
                Ok(Target::Reserved(path)) => panic!("{raw:?} reached reserved {path:?}"),
                Err(_) => {}
            }
        }
    }

    // --- classify: ambiguity rule ----------------------------------------------------

    #[test]
    fn alternates_inside_one_public_rule_are_accepted() {
        let table = table();
        for (raw, want) in [
            ("/public/a%2Fb", "/public/a%2Fb"),
            ("/public/a;v=1/b", "/public/a;v=1/b"),
            ("/public/a%5Cb", "/public/a%5Cb"),
            ("/public/x/..%2Fy", "/public/x/..%2Fy"),
        ] {
            let (path, rule) = route(&table, raw);
            assert_eq!(path, want, "{raw:?}");
            assert_eq!(rule.map(|r| &r.access), Some(&Access::Public), "{raw:?}");
        }
    }

    #[test]
    fn alternates_outside_public_or_across_rules_are_refused() {
        let table = table();
        for raw in [
            // Same protected rule: the backend could still route differently.
            "/admin/a%2Fb",
            "/app;jsessionid=1",
            "/x%2Fy",
            // Public canonical, protected alternate.
            "/public/..%2Fadmin",
            // Protected canonical, public alternate.
            "/public;/x",
        ] {
            assert_eq!(
                classify(&table, raw).map(|_| ()),
                Err(Refusal::BadRequest("ambiguous path".to_owned())),
                "{raw:?}"
            );
        }
        let two_public = RouteTable::new(vec![rule("/a/", Access::Public), rule("/a/b/", Access::Public)]).unwrap();
        // Both rules are public, but the readings land on different rules: refused.
        for raw in ["/a/b%2Fc", "/a/b;x"] {
            assert_eq!(
                classify(&two_public, raw).map(|_| ()),
                Err(Refusal::BadRequest("ambiguous path".to_owned())),
                "{raw:?}"
            );
        }
        let (path, rule) = route(&two_public, "/a/x%2Fy");
        assert_eq!((path.as_str(), prefix_of(rule)), ("/a/x%2Fy", Some("/a/")));
        let no_rules = RouteTable::new(vec![]).unwrap();
        assert!(matches!(classify(&no_rules, "/a%2Fb"), Err(Refusal::BadRequest(_))));
    }

    // --- case and readings together -------------------------------------------------

    /// Rules with an upper-case prefix and a protected rule nested in a public one: the
    /// shapes the audit used to reach protected paths with another spelling.
    fn case_table() -> RouteTable {
        RouteTable::new(vec![
            rule("/public/", Access::Public),
            rule("/public/admin/", admin_roles()),
            rule("/Reports/", admin_roles()),
            rule("/admin/", admin_roles()),
            rule("/", Access::Authenticated),
        ])
        .unwrap()
    }

    fn rank(decision: Decision) -> u8 {
        match decision {
            Decision::Allow => 0,
            Decision::NeedsSession => 1,
            Decision::Forbidden => 2,
        }
    }

    /// Every spelling of a protected path built from letter case × `;` / `%3B` parameters
    /// × encoded or backslash separators × dot segments gets at least the decision of the
    /// protected path itself, or a refusal. If this failed, a backend that ignores case,
    /// strips parameters or decodes separators would serve a protected path to someone
    /// the gateway let through on a weaker rule.
    #[test]
    fn no_spelling_of_a_protected_path_gets_a_weaker_decision() {
        let table = case_table();
        let none: Vec<String> = vec![];
        let user = Identity { roles: &none };
        let cases: [fn(&str) -> String; 4] = [
            |s| s.to_owned(),
            |s| s.to_ascii_lowercase(),
            |s| s.to_ascii_uppercase(),
            |s| {
                s.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect()
            },
        ];
        let leads = ["", "/public/..", "/PUBLIC/.%2E", "/x/y/../.."];
        let seps = ["/", "%2F", "%5c", "\\", "/./", "/x/../", "/X/%2E%2e/"];
        let params = ["", ";x", "%3Bx", "%3b"];
        let mut checked = 0;
        for target in ["/public/admin/x", "/Reports/q3", "/admin/x", "/public/admin"] {
            let segments: Vec<&str> = target.trim_start_matches('/').split('/').collect();
            let reference = |who: Option<&Identity<'_>>| decide_path(&table, target, table.lookup(target), who);
            assert_eq!(reference(None), Decision::NeedsSession, "{target}");
            assert_eq!(reference(Some(&user)), Decision::Forbidden, "{target}");
            // Each spelling picks a separator (before every segment but the first) and a
            // parameter (after every segment): the digits of one counter.
            let choices: Vec<usize> = (0..segments.len())
                .map(|i| {
                    if i == 0 {
                        params.len()
                    } else {
                        seps.len() * params.len()
                    }
                })
                .collect();
            for combo in 0..choices.iter().product::<usize>() {
                let mut rest = combo;
                let mut body = String::new();
                for (segment, n) in segments.iter().zip(&choices) {
                    let choice = rest % n;
                    rest /= n;
                    body.push_str(if *n == params.len() {
                        "/"
                    } else {
                        seps[choice / params.len()]
                    });
                    body.push_str(segment);
                    body.push_str(params[choice % params.len()]);
                }
                for case in &cases {
                    let cased = case(&body);
                    for lead in leads {
                        let raw = format!("{lead}{cased}");
                        checked += 1;
                        let Ok(routed) = classify(&table, &raw) else {
                            continue;
                        };
                        let Target::Route { path, rule } = routed else {
                            panic!("{raw:?} reached the reserved prefix")
                        };
                        for (who, name) in [(None, "anonymous"), (Some(&user), "role-less user")] {
                            let got = decide_path(&table, &path, rule, who);
                            assert!(
                                rank(got) >= rank(reference(who)),
                                "{raw:?} (as {path:?}, rule {:?}) gives {name} {got:?}, the target {:?}",
                                prefix_of(rule),
                                reference(who)
                            );
                        }
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    /// The spellings the audit reproduced, one by one, so a failure names the case.
    #[test]
    fn audited_spellings_do_not_dodge_their_rule() {
        let table = case_table();
        let none: Vec<String> = vec![];
        let user = Identity { roles: &none };
        let at = |raw: &str, who: Option<&Identity<'_>>| -> Result<Decision, Refusal> {
            match classify(&table, raw)? {
                Target::Route { path, rule } => Ok(decide_path(&table, &path, rule, who)),
                Target::Reserved(path) => panic!("{raw:?} reached reserved {path:?}"),
            }
        };
        for raw in ["/Reports/q3", "/reports/q3", "/REPORTS/q3", "/rePorts/q3"] {
            assert_eq!(at(raw, Some(&user)), Ok(Decision::Forbidden), "{raw:?}");
            assert_eq!(at(raw, None), Ok(Decision::NeedsSession), "{raw:?}");
        }
        for raw in [
            "/public/ADMIN;x/y",
            "/public/ADMIN%2Fx",
            "/public/Admin%5Cx",
            "/public/ADMIN/x",
        ] {
            let got = at(raw, None);
            assert!(
                matches!(got, Ok(Decision::NeedsSession) | Err(Refusal::BadRequest(_))),
                "{raw:?}: {got:?}"
            );
        }
        for raw in ["/admin%3Bx/y", "/ADMIN%3bx/y", "/admin%3B/public/x"] {
            let got = at(raw, Some(&user));
            assert!(
                matches!(got, Ok(Decision::Forbidden) | Err(Refusal::BadRequest(_))),
                "{raw:?}: {got:?}"
            );
        }
    }

    /// A case-sensitive backend serves `/Admin/x` from the `/` rule, a case-insensitive
    /// one from `/admin/`: the stricter of the two must apply, so folding case can never
    /// widen access either.
    #[test]
    fn the_stricter_of_exact_and_folded_rules_applies() {
        let table = RouteTable::new(vec![rule("/admin/", Access::Public), rule("/", admin_roles())]).unwrap();
        let none: Vec<String> = vec![];
        let admin = vec!["admin".to_owned()];
        let at = |raw: &str, who: Option<&Identity<'_>>| match classify(&table, raw) {
            Ok(Target::Route { path, rule }) => decide_path(&table, &path, rule, who),
            other => panic!("{raw:?}: {other:?}"),
        };
        assert_eq!(at("/admin/x", None), Decision::Allow);
        for raw in ["/Admin/x", "/ADMIN/x", "/aDmIn"] {
            assert_eq!(at(raw, None), Decision::NeedsSession, "{raw:?}");
            assert_eq!(
                at(raw, Some(&Identity { roles: &none })),
                Decision::Forbidden,
                "{raw:?}"
            );
            assert_eq!(at(raw, Some(&Identity { roles: &admin })), Decision::Allow, "{raw:?}");
        }
        // Alternates are only accepted when every reading, folded or not, is that same
        // public rule.
        for raw in ["/admin/a%2Fb", "/admin/a;x/b"] {
            assert!(matches!(classify(&table, raw), Ok(Target::Route { .. })), "{raw:?}");
        }
        for raw in ["/Admin/a%2Fb", "/admin;x/b", "/ADMIN/a;x"] {
            assert!(matches!(classify(&table, raw), Err(Refusal::BadRequest(_))), "{raw:?}");
        }
    }

    /// Two prefixes equal ignoring case would leave the winner on a case-insensitive
    /// backend undefined.
    #[test]
    fn table_refuses_prefixes_equal_ignoring_case() {
        for (a, b) in [("/admin/", "/Admin/"), ("/Reports", "/reports/"), ("/a/B/", "/A/b")] {
            let got = RouteTable::new(vec![rule(a, Access::Public), rule(b, admin_roles())]).unwrap_err();
            assert_eq!(got, PolicyError::Duplicate { prefix: b.to_owned() }, "{a:?} + {b:?}");
            assert!(got.to_string().contains("ignoring case"), "{got}");
        }
    }

    #[test]
    fn malformed_paths_are_bad_requests_with_a_safe_message() {
        let table = table();
        for raw in ["", "admin", "/a%", "/a%zz", "/a b", "/a\0", "/%ff"] {
            match classify(&table, raw) {
                Err(Refusal::BadRequest(message)) => {
                    assert!(message.starts_with("path "), "{message:?}");
                }
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }
}
