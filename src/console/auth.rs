//! Who is signed in to the operator console: the operator token check at sign-in, the
//! in-memory console sessions (random ids in an HttpOnly cookie, never the token), their
//! CSRF tokens, and the cookie itself. Plain Rust with the clock passed in; knows no
//! routes and renders nothing.
//!
//! A console session lives in this process only (a restart signs everyone out). The map
//! is keyed by the SHA-256 of the session id, so a memory dump shows no usable cookie. A
//! session ends after [`IDLE_SECS`] without a request, after [`ABSOLUTE_SECS`] in any
//! case, at sign-out, and as soon as the policy no longer lists the token it was opened
//! with (a token removed from the policy signs its consoles out at the next request).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::secret::token_matches_sha256;

/// A console session ends after this long without a request (30 minutes).
pub const IDLE_SECS: i64 = 30 * 60;

/// A console session ends this long after sign-in whatever happens (8 hours).
pub const ABSOLUTE_SECS: i64 = 8 * 60 * 60;

/// Console sessions held at most; the least recently used goes first beyond it, so
/// nobody can grow the map without bound by signing in again and again.
const SESSIONS_MAX: usize = 1000;

/// Cookie name over plaintext (the admin listener's default).
pub const COOKIE_PLAIN: &str = "portcullis-console";

/// Cookie name over TLS (`__Host-`: Secure, `Path=/`, no `Domain`, so no other host or
/// path can plant it).
pub const COOKIE_TLS: &str = "__Host-portcullis-console";

/// The operator a console session acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorId {
    /// Operator name in the tier policy (one person, whatever token).
    pub name: String,
    /// The tier whose policy lists the token: it bounds everything shown and done.
    pub tier: String,
}

impl OperatorId {
    /// How the audit log names the operator (as the admin API does).
    pub fn actor_name(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// A live console session, as a request sees it.
#[derive(Clone)]
pub struct ConsoleSession {
    /// Who.
    pub operator: OperatorId,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("operator", &self.operator)
            .field("csrf", &"[redacted]")
            .finish()
    }
}

/// One stored session.
struct Entry {
    operator: OperatorId,
    /// Hash of the token signed in with; the session ends when the policy drops it.
    token_sha256: [u8; 32],
    csrf: String,
    created_at: i64,
    last_seen: i64,
}

/// The console sessions of this process.
#[derive(Default)]
pub struct ConsoleSessions {
    /// SHA-256 of the session id → session.
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// The operator of any tier holding `token`, checking every entry of every tier (a
/// constant-time comparison each, no early exit), as the admin API does. Automation
/// tokens never sign in: the console is for people.
pub fn operator_for_token(config: &Config, token: &str) -> Option<(OperatorId, [u8; 32])> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let mut found = None;
    for tier in config.tiers.values() {
        for op in &tier.operators {
            if token_matches_sha256(token.as_bytes(), &op.token_sha256) {
                found = Some((
                    OperatorId {
                        name: op.name.clone(),
                        tier: tier.name.clone(),
                    },
                    op.token_sha256,
                ));
            }
        }
    }
    found
}

/// Whether the policy still lists this operator with the token of that hash.
fn still_listed(config: &Config, operator: &OperatorId, token_sha256: &[u8; 32]) -> bool {
    config.tiers.get(&operator.tier).is_some_and(|tier| {
        tier.operators
            .iter()
            .any(|op| op.name == operator.name && bool::from(op.token_sha256.ct_eq(token_sha256)))
    })
}

fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl ConsoleSessions {
    /// Opens a session for `operator` (signed in with the token hashed `token_sha256`);
    /// returns the session id for the cookie.
    pub fn open(&self, operator: OperatorId, token_sha256: [u8; 32], now: i64) -> String {
        let id = random_hex();
        let entry = Entry {
            operator,
            token_sha256,
            csrf: random_hex(),
            created_at: now,
            last_seen: now,
        };
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|_, e| live(e, now));
        while entries.len() >= SESSIONS_MAX {
            let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| *k) else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(id_hash(&id), entry);
        id
    }

    /// The live session of cookie value `id` at `now`, its idle time restarted; `None`
    /// (and the session gone) when it expired or its token left the policy.
    pub fn find(&self, config: &Config, id: &str, now: i64) -> Option<ConsoleSession> {
        let key = id_hash(id);
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.get_mut(&key)?;
        if !live(entry, now) || !still_listed(config, &entry.operator, &entry.token_sha256) {
            entries.remove(&key);
            return None;
        }
        entry.last_seen = now;
        Some(ConsoleSession {
            operator: entry.operator.clone(),
            csrf: entry.csrf.clone(),
        })
    }

    /// Ends the session of cookie value `id`, if any.
    pub fn close(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.remove(&id_hash(id));
    }
}

fn live(e: &Entry, now: i64) -> bool {
    now < e.last_seen.saturating_add(IDLE_SECS) && now < e.created_at.saturating_add(ABSOLUTE_SECS)
}

/// Whether a form's CSRF field is the session's token (constant time).
pub fn csrf_matches(session: &ConsoleSession, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// The cookie's name on a listener with or without TLS.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls { COOKIE_TLS } else { COOKIE_PLAIN }
}

/// `Set-Cookie` for a console session (`None`: end it now). HttpOnly and
/// SameSite=Strict always; over TLS `__Host-` with Secure and `Path=/`, over plaintext
/// (where a browser would drop a Secure cookie) `Path=/console`.
pub fn set_cookie(tls: bool, id: Option<&str>) -> String {
    let name = cookie_name(tls);
    let (value, age) = match id {
        Some(id) => (id, ABSOLUTE_SECS),
        None => ("", 0),
    };
    if tls {
        format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={age}")
    } else {
        format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={age}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy of tiers `prod` and `staging` (one tenant each) whose operators are
    /// `(tier, name, token)`.
    fn config_with(tokens: &[(&str, &str, &str)]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![
            (
                "gateway.toml".to_string(),
                "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nplaintext = true\n".to_string(),
            ),
            (
                "tenants/acme.toml".into(),
                "id = \"acme\"\ntier = \"prod\"\nhosts = [\"acme.test\"]\nupstream = \"http://127.0.0.1:3000\"\n".into(),
            ),
            (
                "tenants/initech.toml".into(),
                "id = \"initech\"\ntier = \"staging\"\nhosts = [\"initech.test\"]\nupstream = \"http://127.0.0.1:3000\"\n"
                    .into(),
            ),
        ];
        for tier in ["prod", "staging"] {
            let mut text = format!(
                "name = \"{tier}\"\nupstream_allowlist = [\"127.0.0.1\"]\n\n[keys]\ncookie = \"inline:{tier}-cookie-key-0123456789abcdef-xyz\"\n"
            );
            for (_, name, token) in tokens.iter().filter(|(t, _, _)| *t == tier) {
                let hash = hex::encode(Sha256::digest(token.as_bytes()));
                text.push_str(&format!(
                    "\n[[operators]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n"
                ));
            }
            files.push((format!("tiers/{tier}.toml"), text));
        }
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let env = HashMap::<String, String>::new();
        crate::config::load(dir.path(), &env, &crate::config::Overrides::default()).unwrap()
    }

    /// If this broke, a wrong, empty or automation-like token would open the console,
    /// or the right one would open it on the wrong tier.
    #[test]
    fn only_an_operator_token_signs_in_and_names_its_tier() {
        let config = config_with(&[("prod", "olivia", "tok-prod"), ("staging", "sam", "tok-staging")]);
        let (op, _) = operator_for_token(&config, "tok-staging").unwrap();
        assert_eq!(
            op,
            OperatorId {
                name: "sam".into(),
                tier: "staging".into()
            }
        );
        assert!(
            operator_for_token(&config, "tok-prod ").is_some(),
            "pasted with a space"
        );
        for bad in ["", "  ", "tok-pro", "tok-prodx", "TOK-PROD"] {
            assert!(operator_for_token(&config, bad).is_none(), "{bad:?}");
        }
    }

    /// If this broke, a console session would outlive its idle or absolute limit, its
    /// sign-out, or the removal of its token from the policy.
    #[test]
    fn sessions_end_when_idle_too_old_closed_or_unlisted() {
        let config = config_with(&[("prod", "olivia", "tok")]);
        let sessions = ConsoleSessions::default();
        let (op, hash) = operator_for_token(&config, "tok").unwrap();
        let id = sessions.open(op.clone(), hash, 1000);
        assert_eq!(sessions.find(&config, &id, 1000).unwrap().operator, op);
        assert!(sessions.find(&config, "other", 1000).is_none());
        // Used every 20 minutes: alive until the absolute limit.
        let mut now = 1000;
        while now + 1200 < 1000 + ABSOLUTE_SECS {
            now += 1200;
            assert!(sessions.find(&config, &id, now).is_some(), "at {now}");
        }
        assert!(sessions.find(&config, &id, 1000 + ABSOLUTE_SECS).is_none());

        let id = sessions.open(op.clone(), hash, 1000);
        assert!(sessions.find(&config, &id, 1000 + IDLE_SECS).is_none(), "idle");

        let id = sessions.open(op.clone(), hash, 1000);
        sessions.close(&id);
        assert!(sessions.find(&config, &id, 1001).is_none(), "closed");

        let id = sessions.open(op, hash, 1000);
        let without = config_with(&[("prod", "olivia", "another token")]);
        assert!(sessions.find(&without, &id, 1001).is_none(), "token left the policy");
        assert!(sessions.find(&config, &id, 1002).is_none(), "and stays ended");
    }

    /// If this broke, a form with a missing, empty or other session's CSRF token would
    /// be accepted.
    #[test]
    fn csrf_must_be_the_sessions_own() {
        let config = config_with(&[("prod", "olivia", "tok")]);
        let sessions = ConsoleSessions::default();
        let (op, hash) = operator_for_token(&config, "tok").unwrap();
        let a = sessions.find(&config, &sessions.open(op.clone(), hash, 0), 0).unwrap();
        let b = sessions.find(&config, &sessions.open(op, hash, 0), 0).unwrap();
        assert!(csrf_matches(&a, Some(&a.csrf)));
        assert!(!csrf_matches(&a, Some(&b.csrf)));
        assert!(!csrf_matches(&a, Some("")));
        assert!(!csrf_matches(&a, None));
        assert!(!format!("{a:?}").contains(&a.csrf), "Debug shows no CSRF token");
    }

    /// If this broke, the console cookie could be read by scripts, sent cross-site, or
    /// (over TLS) travel in clear or be planted by another host.
    #[test]
    fn cookie_flags() {
        let plain = set_cookie(false, Some("abc"));
        assert!(plain.starts_with("portcullis-console=abc;"), "{plain}");
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=28800"] {
            assert!(plain.contains(flag), "{plain}");
        }
        let tls = set_cookie(true, Some("abc"));
        assert!(tls.starts_with("__Host-portcullis-console=abc;"), "{tls}");
        for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/;"] {
            assert!(tls.contains(flag), "{tls}");
        }
        assert!(set_cookie(false, None).contains("Max-Age=0"));
    }

    /// If this broke, signing in again and again would grow the session map without end.
    #[test]
    fn the_map_is_bounded() {
        let config = config_with(&[("prod", "olivia", "tok")]);
        let sessions = ConsoleSessions::default();
        let (op, hash) = operator_for_token(&config, "tok").unwrap();
        let first = sessions.open(op.clone(), hash, 0);
        for i in 0..SESSIONS_MAX + 10 {
            sessions.open(op.clone(), hash, 1 + i64::try_from(i).unwrap() % 60);
        }
        assert!(sessions.entries.lock().unwrap().len() <= SESSIONS_MAX);
        assert!(sessions.find(&config, &first, 61).is_none(), "the oldest went first");
    }
}
