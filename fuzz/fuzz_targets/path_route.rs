//! Path normalisation and the route decision, differentially: whatever a request path
//! is, the gateway either refuses it or forwards a canonical path that (a) normalises to
//! itself, (b) is classified the same way when sent as it is, and (c) gets the same
//! decision for every identity as the path as received. A spelling of the reserved
//! prefix is never forwarded.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis::policy::{Access, Decision, Identity, RouteRule, RouteTable, Target, classify, decide_path};

static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
    let rule = |prefix: &str, access: Access| RouteRule {
        prefix: prefix.to_string(),
        access,
        max_body_bytes: None,
    };
    RouteTable::new(vec![
        rule("/public/", Access::Public),
        rule("/Files/", Access::Public),
        rule("/admin/", Access::Roles(vec!["admin".into()])),
        rule("/files/admin/", Access::Roles(vec!["admin".into()])),
        rule("/", Access::Authenticated),
    ])
    .unwrap_or_default()
});

/// `/.portcullis` in any case, alone or followed by `/`, an escape or a parameter (and
/// not, say, `/.portcullisx`, another path).
fn names_reserved(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower
        .strip_prefix("/.portcullis")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '%', ';']))
}

fn decisions(table: &RouteTable, path: &str, rule: Option<&RouteRule>) -> [Decision; 3] {
    let none: Vec<String> = Vec::new();
    let admin = vec!["admin".to_string()];
    [
        decide_path(table, path, rule, None),
        decide_path(table, path, rule, Some(&Identity { roles: &none })),
        decide_path(table, path, rule, Some(&Identity { roles: &admin })),
    ]
}

fuzz_target!(|raw: &str| {
    let table = &*TABLE;
    match classify(table, raw) {
        Ok(Target::Route { path, rule }) => {
            assert!(!names_reserved(&path), "reserved prefix forwarded: {raw:?} as {path:?}");
            let again = portcullis::path::normalise(&path).expect("a canonical path normalises");
            assert_eq!(again.canonical, path, "canonical form is not a fixed point");
            let first = decisions(table, &path, rule);
            match classify(table, &path) {
                Ok(Target::Route { path: same, rule: rule2 }) => {
                    assert_eq!(same, path);
                    assert_eq!(decisions(table, &same, rule2), first, "{raw:?}");
                }
                other => panic!("{raw:?} was forwarded as {path:?}, which is then {other:?}"),
            }
        }
        Ok(Target::Reserved(path)) => {
            assert!(raw.starts_with("/.portcullis/") && path.starts_with("/.portcullis/"), "{raw:?} → {path:?}");
        }
        Err(_) => {}
    }
});
