//! `portcullis check`: every problem reported as `file:line: message`, all at once,
//! exit code 2 (SPEC "Tiers and isolation", "Bad input").

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

struct Case {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Case {
    /// A valid fixture (upstreams are never contacted by `check`).
    fn new() -> Case {
        Case::with(|_| {})
    }

    /// The valid fixture as `edit` changes it.
    fn with(edit: impl FnOnce(&mut PolicyFixture)) -> Case {
        let tmp = tempfile::Builder::new().prefix("portcullis-check-").tempdir().unwrap();
        let dir = tmp.path().join("policy");
        let mut fixture = PolicyFixture::new(
            "http://127.0.0.1:9101",
            "http://127.0.0.1:9102",
            "http://127.0.0.1:9103",
        );
        edit(&mut fixture);
        fixture.write(&dir);
        Case { _tmp: tmp, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Replaces the first line containing `needle` by `new_line`; returns its line number.
    fn replace_line(&self, rel: &str, needle: &str, new_line: &str) -> usize {
        let text = self.read(rel);
        let line = line_of(&text, needle);
        let out: Vec<&str> = text
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line { new_line } else { l })
            .collect();
        std::fs::write(self.path(rel), out.join("\n") + "\n").unwrap();
        assert_eq!(line_of(&self.read(rel), new_line), line);
        line
    }

    /// Inserts `new_line` after the first line containing `after`; returns its line number.
    fn insert_after(&self, rel: &str, after: &str, new_line: &str) -> usize {
        let text = self.read(rel);
        let at = line_of(&text, after);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(at, new_line);
        std::fs::write(self.path(rel), lines.join("\n") + "\n").unwrap();
        at + 1
    }

    fn check(&self) -> (Option<i32>, String) {
        check_dir(&self.dir)
    }

    /// Runs check and asserts exactly `expected` problems, each `(file, line, fragment)`,
    /// and no other: nothing that only follows from them.
    fn expect_only(&self, expected: &[(&str, usize, &str)]) -> String {
        let stderr = expected
            .iter()
            .map(|(rel, line, fragment)| self.expect_error(rel, *line, fragment))
            .next_back()
            .unwrap();
        let problems: Vec<&str> = stderr.lines().filter(|l| !l.ends_with(" found")).collect();
        assert_eq!(problems.len(), expected.len(), "only the real problems:\n{stderr}");
        let n = expected.len();
        let summary = format!("{n} problem{} found", if n == 1 { "" } else { "s" });
        assert!(stderr.contains(&summary), "{stderr}");
        stderr
    }

    /// Runs check and asserts exit code 2 and `<file>:<line>: ...<fragment>...` on stderr.
    fn expect_error(&self, rel: &str, line: usize, fragment: &str) -> String {
        let (code, stderr) = self.check();
        assert_eq!(code, Some(2), "exit code; stderr:\n{stderr}");
        let prefix = format!("{}:{line}:", self.path(rel).display());
        let found = stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(fragment));
        assert!(
            found,
            "expected a line `{prefix} ...{fragment}...` in stderr:\n{stderr}"
        );
        stderr
    }
}

fn check_dir(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(dir)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The fixture itself is valid, so each error below comes from its one edit.
#[test]
fn the_fixture_and_the_repos_own_policies_pass() {
    let case = Case::new();
    let (code, stderr) = case.check();
    assert_eq!(code, Some(0), "{stderr}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let (code, stderr) = check_dir(&repo);
    assert_eq!(code, Some(0), "policies/ must pass `portcullis check`:\n{stderr}");
}

/// A typo in a key must not be silently ignored (it could be a security setting).
#[test]
fn unknown_key_is_reported_with_file_and_line() {
    let case = Case::new();
    let line = case.insert_after("tenants/acme.toml", "tier = ", "colour = \"red\"");
    case.expect_error("tenants/acme.toml", line, "unknown field `colour`");
    let case = Case::new();
    let line = case.insert_after("gateway.toml", "max_headers", "max_bodee_bytes = 5");
    case.expect_error("gateway.toml", line, "max_bodee_bytes");
}

/// A host claimed by two tenants would route one tenant's users to another's app.
#[test]
fn duplicate_host_across_tenants_is_reported() {
    let case = Case::new();
    let line = case.replace_line(
        "tenants/globex.toml",
        "hosts = ",
        "hosts = [\"globex.test\", \"ACME.test\"]",
    );
    case.expect_error(
        "tenants/globex.toml",
        line,
        "`acme.test` is already claimed by tenant `acme`",
    );
}

#[test]
fn unknown_tier_is_reported() {
    let case = Case::new();
    let line = case.replace_line("tenants/acme.toml", "tier = ", "tier = \"qa\"");
    case.expect_error("tenants/acme.toml", line, "unknown tier `qa`");
}

/// An upstream outside the tier's allowlist could send prod traffic into another network.
#[test]
fn upstream_outside_the_tier_allowlist_is_reported() {
    let case = Case::new();
    let line = case.replace_line(
        "tenants/acme.toml",
        "upstream = ",
        "upstream = \"http://10.9.8.7:8080\"",
    );
    case.expect_error("tenants/acme.toml", line, "outside the allowlist of tier `prod`");
}

/// The same key in two tiers breaks tier isolation (a staging cookie would open prod).
#[test]
fn the_same_secret_in_two_tiers_is_reported() {
    let case = Case::new();
    std::fs::copy(case.path("secrets/prod.key"), case.path("secrets/staging.key")).unwrap();
    let line = case.replace_line(
        "tiers/staging.toml",
        "cookie = ",
        "cookie = \"file:secrets/staging.key\"",
    );
    case.expect_error(
        "tiers/staging.toml",
        line,
        "the same secret material is already used by tier `prod`",
    );
}

#[test]
fn inline_secret_in_a_production_tier_is_reported() {
    let case = Case::new();
    let line = case.replace_line(
        "tiers/prod.toml",
        "cookie = ",
        "cookie = \"inline:prod-inline-cookie-key-0123456789-abcdefghij\"",
    );
    let stderr = case.expect_error(
        "tiers/prod.toml",
        line,
        "inline secrets are not allowed in a production tier",
    );
    assert!(
        !stderr.contains("prod-inline-cookie-key"),
        "check printed the secret value:\n{stderr}"
    );
}

#[test]
fn bad_duration_is_reported() {
    let case = Case::new();
    let line = case.replace_line("gateway.toml", "idle_timeout = ", "idle_timeout = \"soon\"");
    case.expect_error("gateway.toml", line, "`soon` is not a duration");
}

#[test]
fn bad_upstream_url_is_reported() {
    let case = Case::new();
    let line = case.replace_line("tenants/acme.toml", "upstream = ", "upstream = \"ftp://x\"");
    case.expect_error("tenants/acme.toml", line, "`ftp` is not supported");
}

#[test]
fn bad_listen_address_is_reported() {
    let case = Case::new();
    let line = case.replace_line("gateway.toml", "public = ", "public = \"localhost:https\"");
    case.expect_error("gateway.toml", line, "is not a socket address");
}

/// An operator fixing a policy set must see every problem in one run, not one per run.
#[test]
fn problems_in_several_files_are_reported_at_once() {
    let case = Case::new();
    let tier_line = case.replace_line("tenants/acme.toml", "tier = ", "tier = \"qa\"");
    let url_line = case.replace_line("tenants/globex.toml", "upstream = ", "upstream = \"ftp://x\"");
    let dur_line = case.replace_line("gateway.toml", "idle_timeout = ", "idle_timeout = \"soon\"");
    let stderr = case.expect_error("tenants/acme.toml", tier_line, "unknown tier `qa`");
    case.expect_error("tenants/globex.toml", url_line, "`ftp` is not supported");
    case.expect_error("gateway.toml", dur_line, "`soon` is not a duration");
    assert!(stderr.contains("3 problems found"), "{stderr}");
}

/// The fixture with a SIEM automation token of tier prod that may trip acme and globex.
fn with_automation(f: &mut PolicyFixture) {
    f.automation.push(AutomationSpec {
        tier: "prod".into(),
        name: "siem".into(),
        token_sha256: sha256_hex(b"siem-token"),
        scopes: vec!["breaker:trip".into()],
        tenants: vec!["acme".into(), "globex".into()],
    });
}

/// If this broke, one typo in a tenant file would also be reported as "`acme` is not a
/// tenant of tier `prod`" in the tier file, and a newcomer might "fix" that by deleting
/// the tenant from the automation token. The same for every kind of tenant file error.
#[test]
fn a_broken_tenant_file_is_not_reported_again_where_the_tenant_is_named() {
    let case = Case::with(with_automation);
    assert_eq!(case.check().0, Some(0), "{}", case.check().1);
    let line = case.insert_after("tenants/acme.toml", "tier = ", "colour = \"red\"");
    case.expect_only(&[("tenants/acme.toml", line, "unknown field `colour`")]);

    // A validation error (not a parse error) of the tenant, and a missing key.
    let case = Case::with(with_automation);
    let line = case.replace_line("tenants/acme.toml", "upstream = ", "upstream = \"ftp://x\"");
    case.expect_only(&[("tenants/acme.toml", line, "`ftp` is not supported")]);
    let case = Case::with(with_automation);
    case.replace_line("tenants/acme.toml", "upstream = ", "# no upstream");
    case.expect_only(&[("tenants/acme.toml", 1, "missing field `upstream`")]);

    // Not even TOML: the file's name stands for the tenant it would define.
    let case = Case::with(with_automation);
    let line = case.replace_line("tenants/acme.toml", "hosts = ", "hosts = [\"acme.test\"");
    let stderr = case.expect_error("tenants/acme.toml", line + 1, "");
    assert!(!stderr.contains("automation.tenants"), "{stderr}");
    assert!(stderr.contains("1 problem found"), "{stderr}");

    // A tenant file naming a tier that does not exist: the tier's reference to it may
    // be wrong only because of that, and says so.
    let case = Case::with(with_automation);
    let tier = case.replace_line("tenants/acme.toml", "tier = ", "tier = \"prdo\"");
    let acme = case.path("tenants/acme.toml").display().to_string();
    let line = line_of(&case.read("tiers/prod.toml"), "tenants = ");
    case.expect_only(&[
        ("tenants/acme.toml", tier, "unknown tier `prdo`"),
        (
            "tiers/prod.toml",
            line,
            &format!("automation.tenants: `acme` is not a tenant of tier `prod` (may follow from the error in {acme})"),
        ),
    ]);

    // A tenant that really is missing from the tier is still reported.
    let case = Case::with(with_automation);
    std::fs::remove_file(case.path("tenants/acme.toml")).unwrap();
    let line = line_of(&case.read("tiers/prod.toml"), "tenants = ");
    case.expect_only(&[(
        "tiers/prod.toml",
        line,
        "automation.tenants: `acme` is not a tenant of tier `prod`",
    )]);
}

/// If this broke, a tier whose key cannot be read would make every one of its tenants
/// report "unknown tier", sending the operator to the wrong files.
#[test]
fn a_broken_tier_file_is_not_reported_again_in_its_tenants() {
    let case = Case::new();
    let line = case.replace_line(
        "tiers/prod.toml",
        "cookie = ",
        "cookie = \"env:PORTCULLIS_TEST_UNSET_COOKIE\"",
    );
    case.expect_only(&[("tiers/prod.toml", line, "PORTCULLIS_TEST_UNSET_COOKIE")]);

    let case = Case::new();
    let line = case.insert_after("tiers/prod.toml", "production = ", "colour = \"red\"");
    case.expect_only(&[("tiers/prod.toml", line, "unknown field `colour`")]);

    // A tenant naming a tier that does not exist at all is still reported.
    let case = Case::new();
    let line = case.replace_line("tenants/acme.toml", "tier = ", "tier = \"qa\"");
    case.expect_only(&[("tenants/acme.toml", line, "unknown tier `qa`")]);
}

/// If this broke, a mistyped allowlist entry would also be reported as a tenant's
/// upstream outside the allowlist, with nothing saying the two are one problem.
#[test]
fn an_upstream_outside_a_broken_allowlist_says_it_may_follow_from_it() {
    let case = Case::new();
    let entry = case.replace_line(
        "tiers/prod.toml",
        "upstream_allowlist = ",
        "upstream_allowlist = [\"127.0.0.1\", \"10.0.0.0/33\"]",
    );
    let upstream = case.replace_line(
        "tenants/acme.toml",
        "upstream = ",
        "upstream = \"http://10.1.2.3:8080\"",
    );
    let allowlist = case.path("tiers/prod.toml").display().to_string();
    case.expect_only(&[
        ("tiers/prod.toml", entry, "`10.0.0.0/33` is not a host"),
        (
            "tenants/acme.toml",
            upstream,
            &format!(
                "outside the allowlist of tier `prod` (may follow from the error in the allowlist in {allowlist})"
            ),
        ),
    ]);
}

/// If this broke, a certificate file that cannot be read would also be reported as
/// "no TLS certificate" for every host it serves.
#[test]
fn hosts_of_a_certificate_that_failed_are_not_reported_as_uncovered() {
    let case = Case::new();
    case.replace_line("gateway.toml", "plaintext = ", "plaintext = false");
    let line = case.insert_after(
        "gateway.toml",
        "# Gateway-wide settings",
        "tls.certificates = [{ hosts = [\"acme.test\", \"globex.test\"], cert = \"file:tls/missing.pem\", key = \"file:tls/missing-key.pem\" }]",
    );
    // initech.test has no certificate at all: reported at the tenant's host line.
    let initech = line_of(&case.read("tenants/initech.toml"), "hosts = ");
    case.expect_only(&[
        ("gateway.toml", line, "tls.certificates.cert"),
        (
            "tenants/initech.toml",
            initech,
            "no TLS certificate for host `initech.test` of tenant `initech`",
        ),
    ]);
}

/// If this broke, a wrong session timeout would be compared with the default of the
/// other one and reported twice, once falsely.
#[test]
fn a_wrong_timeout_is_not_compared_with_the_other_one() {
    let case = Case::new();
    case.replace_line("tenants/acme.toml", "idle_timeout = ", "idle_timeout = \"13h\"");
    let line = case.replace_line(
        "tenants/acme.toml",
        "absolute_timeout = ",
        "absolute_timeout = \"1000y\"",
    );
    case.expect_only(&[("tenants/acme.toml", line, "`1000y` is not a duration")]);
}

/// If this broke, a host claimed twice would go unreported while the other tenant's file
/// has an unrelated error, and appear only after that one is fixed.
#[test]
fn a_host_claimed_twice_is_reported_when_a_claimant_has_other_errors() {
    // The first claimant is broken.
    let case = Case::new();
    let colour = case.insert_after("tenants/acme.toml", "tier = ", "colour = \"red\"");
    let dup = case.replace_line(
        "tenants/globex.toml",
        "hosts = ",
        "hosts = [\"globex.test\", \"acme.test\"]",
    );
    case.expect_only(&[
        ("tenants/acme.toml", colour, "unknown field `colour`"),
        (
            "tenants/globex.toml",
            dup,
            "host `acme.test` is already claimed by tenant `acme`",
        ),
    ]);
    // The second claimant is broken.
    let case = Case::new();
    let dup = case.replace_line(
        "tenants/globex.toml",
        "hosts = ",
        "hosts = [\"globex.test\", \"acme.test\"]",
    );
    let colour = case.insert_after("tenants/globex.toml", "tier = ", "colour = \"red\"");
    case.expect_only(&[
        ("tenants/globex.toml", colour, "unknown field `colour`"),
        (
            "tenants/globex.toml",
            dup + 1,
            "host `acme.test` is already claimed by tenant `acme`",
        ),
    ]);
    // The second claimant has a validation error elsewhere; its auto-trip rules too.
    let case = Case::new();
    let dup = case.replace_line(
        "tenants/globex.toml",
        "hosts = ",
        "hosts = [\"globex.test\", \"acme.test\"]",
    );
    let upstream = case.replace_line("tenants/globex.toml", "upstream = ", "upstream = \"ftp://x\"");
    let text = case.read("tenants/globex.toml")
        + "\n[[auto_trip]]\nname = \"stuffing\"\nkind = \"tenant_login_failures\"\nthreshold = 5\nwindow = \"1 minute\"\n";
    std::fs::write(case.path("tenants/globex.toml"), &text).unwrap();
    let window = line_of(&text, "window = ");
    case.expect_only(&[
        ("tenants/globex.toml", dup, "already claimed by tenant `acme`"),
        ("tenants/globex.toml", upstream, "`ftp` is not supported"),
        ("tenants/globex.toml", window, "`1 minute` is not a duration"),
    ]);
}

/// If this broke, the operator would be told what is wrong but not where.
#[test]
fn every_cross_field_and_cross_file_problem_has_a_line() {
    let case = Case::new();
    let idle = case.replace_line("tenants/acme.toml", "idle_timeout = ", "idle_timeout = \"13h\"");
    case.expect_only(&[(
        "tenants/acme.toml",
        idle,
        "session.idle_timeout (13h) must not be longer than session.absolute_timeout (12h)",
    )]);

    let case = Case::new();
    let id = case.replace_line("tenants/globex.toml", "id = ", "id = \"acme\"");
    case.replace_line("tenants/globex.toml", "hosts = ", "hosts = [\"globex.test\"]");
    let first = case.path("tenants/acme.toml").display().to_string();
    case.expect_only(&[(
        "tenants/globex.toml",
        id,
        &format!("tenant id `acme` is already used by {first}"),
    )]);
}

/// If this broke, `absolute_timeout = "1000y"` or `"12 hours"` would be accepted (the
/// first as a session that never ends), or a length out of a setting's sane range.
#[test]
fn durations_have_one_syntax_and_sane_bounds() {
    for bad in ["1000y", "12 hours", "1h30m"] {
        let case = Case::new();
        let line = case.replace_line(
            "tenants/acme.toml",
            "absolute_timeout = ",
            &format!("absolute_timeout = \"{bad}\""),
        );
        case.expect_only(&[(
            "tenants/acme.toml",
            line,
            &format!("session.absolute_timeout: `{bad}` is not a duration; write a whole number and one unit: ms, s, m, h or d"),
        )]);
    }
    let case = Case::new();
    let absolute = case.replace_line("tenants/acme.toml", "absolute_timeout = ", "absolute_timeout = \"90d\"");
    let grace = case.replace_line("gateway.toml", "shutdown_grace = ", "shutdown_grace = \"0s\"");
    case.expect_only(&[
        (
            "tenants/acme.toml",
            absolute,
            "session.absolute_timeout: `90d` is out of range; it must be at least 1s and at most 30d",
        ),
        (
            "gateway.toml",
            grace,
            "limits.shutdown_grace: `0s` is out of range; it must be at least 1s and at most 1h",
        ),
    ]);
    let case = Case::new();
    case.replace_line("tenants/acme.toml", "absolute_timeout = ", "absolute_timeout = \"7d\"");
    case.replace_line(
        "gateway.toml",
        "header_read_timeout = ",
        "header_read_timeout = \"2500ms\"",
    );
    let (code, stderr) = case.check();
    assert_eq!(code, Some(0), "{stderr}");
}

/// If this broke, `run --upstream` with a wrong URL would print the same problem once per
/// tenant, each at a policy line that does not hold the value.
#[test]
fn a_wrong_upstream_override_is_reported_once() {
    let case = Case::new();
    let out = Command::new(BIN)
        .args(["run", "--upstream", "ftp://127.0.0.1", "--config"])
        .arg(&case.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "--upstream: scheme `ftp` is not supported (http or https)\n1 problem found\n"
    );
}

/// If this broke, a typo in one key would hide the file's problems with the rest of the
/// policy (its upstream outside its tier's allowlist, its tier unknown, its id invalid)
/// until the typo is fixed: one problem per run.
#[test]
fn a_tenant_file_that_does_not_parse_still_has_its_relations_checked() {
    let case = Case::new();
    let colour = case.insert_after("tenants/acme.toml", "tier = ", "colour = \"red\"");
    let upstream = case.replace_line(
        "tenants/acme.toml",
        "upstream = ",
        "upstream = \"http://10.9.8.7:8080\"",
    );
    case.expect_only(&[
        ("tenants/acme.toml", colour, "unknown field `colour`"),
        ("tenants/acme.toml", upstream, "outside the allowlist of tier `prod`"),
    ]);
    let case = Case::new();
    let colour = case.insert_after("tenants/acme.toml", "tier = ", "colour = \"red\"");
    let tier = case.replace_line("tenants/acme.toml", "tier = ", "tier = \"qa\"");
    let id = case.replace_line("tenants/acme.toml", "id = ", "id = \"Acme!\"");
    case.expect_only(&[
        ("tenants/acme.toml", colour, "unknown field `colour`"),
        ("tenants/acme.toml", tier, "unknown tier `qa`"),
        ("tenants/acme.toml", id, "tenant id `Acme!` must be"),
    ]);
}

/// If this broke, `absolute_timeout = "12 hours"` in a file with a typo elsewhere would
/// only be reported once the typo is fixed.
#[test]
fn a_tenant_file_that_does_not_parse_still_has_its_durations_checked() {
    let case = Case::new();
    let colour = case.insert_after("tenants/acme.toml", "tier = ", "colour = \"red\"");
    let absolute = case.replace_line(
        "tenants/acme.toml",
        "absolute_timeout = ",
        "absolute_timeout = \"12 hours\"",
    );
    // Not compared with the idle timeout: the file's other values are not all known.
    case.replace_line("tenants/acme.toml", "idle_timeout = ", "idle_timeout = \"13h\"");
    case.expect_only(&[
        ("tenants/acme.toml", colour, "unknown field `colour`"),
        ("tenants/acme.toml", absolute, "`12 hours` is not a duration"),
    ]);
}
