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
        let tmp = tempfile::Builder::new().prefix("portcullis-check-").tempdir().unwrap();
        let dir = tmp.path().join("policy");
        PolicyFixture::new(
            "http://127.0.0.1:9101",
            "http://127.0.0.1:9102",
            "http://127.0.0.1:9103",
        )
        .write(&dir);
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
