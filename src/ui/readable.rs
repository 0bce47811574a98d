//! Values as people read them on the pages: times relative to the moment the page was
//! rendered ("2 minutes ago", with the exact UTC time kept for a tooltip and for
//! machines), sign-in history codes and audit actions in plain words. Pure functions of their inputs
//! (the clock is passed in); the JSON API keeps the raw values.

/// A moment shown on a page: `<time datetime="{iso}" title="{utc}">{relative}</time>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    /// RFC 3339 (`2026-12-06T17:03:12Z`), for the `datetime` attribute.
    pub iso: String,
    /// The exact time for people (`2026-12-06 17:03:12 UTC`), for the tooltip.
    pub utc: String,
    /// Relative to the page's render time ("2 minutes ago", "in 3 hours").
    pub relative: String,
}

impl Moment {
    /// `secs` (unix seconds) as seen at `now` (unix seconds).
    pub fn at(secs: i64, now: i64) -> Self {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        let iso = humantime::format_rfc3339_seconds(t).to_string();
        let utc = format!("{} UTC", iso.trim_end_matches('Z').replacen('T', " ", 1));
        Moment {
            iso,
            utc,
            relative: relative(secs, now),
        }
    }
}

/// "just now", "5 seconds ago" is noise: anything under a minute either way reads "just
/// now"; then minutes, hours and days, rounded down, past ("ago") or future ("in").
pub fn relative(secs: i64, now: i64) -> String {
    let delta = now.saturating_sub(secs);
    let span = delta.unsigned_abs();
    if span < 60 {
        return "just now".to_string();
    }
    let (n, unit) = match span {
        s if s < 3_600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3_600, "hour"),
        s => (s / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta >= 0 {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    }
}

/// A wait in seconds as people say it: "30 seconds", "2 minutes", "1 hour".
pub fn duration(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s < 120 => (s.max(1), "second"),
        s if s < 7_200 => (s.div_ceil(60), "minute"),
        s => (s.div_ceil(3_600), "hour"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural}")
}

/// A sign-in attempt's result in plain words, from the history's `outcome` and `reason`
/// codes (every reason `auth::login` and `ui::sso` record). An unknown code is shown as
/// a neutral "failed" rather than raw.
pub fn attempt_result(outcome: &str, reason: Option<&str>) -> &'static str {
    if outcome == "success" {
        return "Signed in";
    }
    match reason.unwrap_or_default() {
        "bad_password" => "Wrong password",
        "unknown_user" => "Unknown user name",
        "bad_code" => "Wrong code",
        "locked" => "Too many wrong codes",
        "throttled" => "Too many attempts",
        "breaker" => "Refused: access suspended",
        "sso_required" => "Refused: single sign-on required",
        "state_mismatch" => "Sign-on expired or started elsewhere",
        "replayed_callback" => "Sign-on link used twice",
        "idp_token_refused" => "Identity provider's answer refused",
        "idp_mfa_required" => "No second factor at the identity provider",
        r if r.starts_with("idp_error") => "Refused by the identity provider",
        _ => "Failed",
    }
}

/// A sign-in method in plain words (`password`, `totp`, `recovery`, `oidc`).
pub fn method(method: &str) -> &'static str {
    match method {
        "password" => "Password",
        "totp" => "Authenticator code",
        "recovery" => "Recovery code",
        "oidc" => "Single sign-on",
        _ => "Other",
    }
}

/// An audit record's action (`noun.verb`) in plain words, for the tenant admin's audit
/// page; an action without words is shown as its code (the page keeps the code beside).
pub fn audit_action(action: &str) -> &str {
    match action {
        "breaker.trip" => "Breaker tripped",
        "breaker.reset" => "Breaker reset",
        "breaker.drill" => "Breaker drill",
        "user.create" => "Account created",
        "user.mfa_reset" => "MFA reset",
        "user.password_change" => "Password changed",
        "session.revoke" => "Sessions ended",
        "change.propose" => "Change proposed",
        "change.edit" => "Change edited",
        "change.approve" => "Change approved",
        "change.approve_denied" => "Approval refused",
        "change.reject" => "Change rejected",
        "change.apply" => "Change applied",
        "change.failed" => "Change failed",
        "tenant.update" => "Tenant policy changed",
        "tenant.delete" => "Tenant deleted",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_576_592; // 2026-12-06T17:03:12Z

    /// If this broke, the account page would show wrong or raw times.
    #[test]
    fn times_read_relative_with_the_exact_time_kept() {
        let m = Moment::at(NOW - 120, NOW);
        assert_eq!(m.iso, "2026-12-06T17:01:12Z");
        assert_eq!(m.utc, "2026-12-06 17:01:12 UTC");
        assert_eq!(m.relative, "2 minutes ago");
        for (at, text) in [
            (NOW, "just now"),
            (NOW - 59, "just now"),
            (NOW - 60, "1 minute ago"),
            (NOW - 3_599, "59 minutes ago"),
            (NOW - 3_600, "1 hour ago"),
            (NOW - 86_400 * 3, "3 days ago"),
            (NOW + 7_200, "in 2 hours"),
            (NOW + 30, "just now"),
        ] {
            assert_eq!(relative(at, NOW), text, "{}", NOW - at);
        }
    }

    #[test]
    fn waits_read_in_their_unit() {
        assert_eq!(duration(0), "1 second");
        assert_eq!(duration(30), "30 seconds");
        assert_eq!(duration(900), "15 minutes");
        assert_eq!(duration(7_200), "2 hours");
    }

    /// If this broke, a history row would show a code such as `bad_code`.
    #[test]
    fn every_recorded_reason_has_words() {
        for reason in [
            "bad_password",
            "unknown_user",
            "bad_code",
            "locked",
            "throttled",
            "breaker",
            "sso_required",
            "state_mismatch",
            "replayed_callback",
            "idp_token_refused",
            "idp_mfa_required",
            "idp_error:access_denied",
        ] {
            let words = attempt_result("failure", Some(reason));
            assert_ne!(words, "Failed", "{reason}");
            assert!(!words.contains('_'), "{reason}: {words}");
        }
        assert_eq!(attempt_result("failure", Some("bad_code")), "Wrong code");
        assert_eq!(attempt_result("success", None), "Signed in");
        assert_eq!(method("totp"), "Authenticator code");
    }

    /// If this broke, the tenant admin's audit page would show codes such as
    /// `user.mfa_reset` where words are due, or hide an action it has no words for.
    #[test]
    fn audit_actions_read_as_words_or_their_code() {
        for action in [
            "breaker.trip",
            "breaker.reset",
            "user.mfa_reset",
            "session.revoke",
            "user.create",
        ] {
            let words = audit_action(action);
            assert!(!words.contains('.') && !words.contains('_'), "{action}: {words}");
        }
        assert_eq!(audit_action("user.mfa_reset"), "MFA reset");
        assert_eq!(audit_action("keys.cookie"), "keys.cookie");
    }
}
