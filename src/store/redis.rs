//! The shared [`TierStore`] for replicas: Redis (tested with 7.0; the scripts need
//! effects replication, Redis ≥ 5), one key prefix per tier (`portcullis:<tier>:`, or
//! `portcullis:{<tier>}:` on a Cluster, see [`key_prefix`]), through a
//! [`RedisConnection`] to one node, a Sentinel-named master or a Cluster.
//!
//! Owns the key layout below and the Lua scripts that make each multi-step change atomic.
//! Semantics follow the caller's `now`, exactly as in SQLite; Redis key expiry
//! (`EXPIREAT`, on Redis's own clock) is only garbage collection, set well after the
//! caller's time says the data is dead, and skipped when that time is already past by
//! Redis's clock (so a caller's clock never makes Redis drop live data). Must not touch
//! keys outside its prefix.
//!
//! # Keys (after the prefix; `<t>`, `<s>` are tenant and subject with `%` and `:` escaped)
//! - `session:<hex id>`: hash `rec` (JSON of the fields that never change), `last_seen`,
//!   `idle`, `abs`, and `rev` (JSON) once revoked.
//! - `user_sessions:<t>:<s>`, `tenant_sessions:<t>`: sorted sets of not yet revoked session
//!   ids by `created_at`; `sso_sessions:<t>:<sid>`: set of ids; `session_expiry`: sorted set
//!   of every session id by absolute expiry, for `purge_expired`.
//! - `user:<t>:<username>`: JSON without recovery codes; `user_codes:<t>:<username>`: list
//!   of hex code hashes (`LREM` removes one for exactly one caller); `users:<t>`: set of names.
//! - `login_seq`: counter; `logins:<t>:<s>`: sorted set of JSON events by seq, capped.
//! - `totp_last:<t>:<s>`: replay guard, the last accepted TOTP step in decimal (compared as
//!   digits, not Lua's doubles, so every `u64` keeps its order); `throttle:<key>`: hash
//!   `count`, `reset_at`.
//! - `kill_switches`: hash of scope key → switch JSON.
//! - `audit`: list of audit record JSON; index `seq - 1` holds record `seq`.
//! - `changes`: hash of change request id → change request JSON (its `version` field is
//!   what `REPLACE_CHANGE_IF` compares).
//! - `sso:<t>`: one hash per tenant holding all its SSO versions, so every transition is
//!   one script on one key: `v:<n>` the version's JSON as saved (number, state, test and
//!   `replaced` are the fields below), `s:<n>` its state, `d:<n>` its digest, `t:<n>` its
//!   test JSON, `p:<n>` the digest a passing test was recorded for, `r:<n>` the version it
//!   replaced; `draft` and `active` the numbers of those, `next` the last number given.
//! - `assertion_keys`: hash of the tier's published public assertion keys: `u:<kid>` the
//!   unix second it is published until, `j:<kid>` its JWK text.
//!
//! Cluster: every script touches several keys of one tier (a session and its indexes, a
//! subject's and the tenant's sign-in history, ...), and `RECORD_LOGIN` even names a
//! subject key it reads back from the tenant's history; the tier's hash tag puts all of them
//! in one slot, so every script and pipeline runs on one node. Nothing here scans keys
//! (`SCAN`, `KEYS`): every key is reached from a known name or an index.

use std::borrow::Cow;

use ::redis::{RedisError, Script};
use serde::{Deserialize, Serialize};

use super::redis_connection::RedisTarget;
pub use super::redis_connection::{RedisConnection, RedisSubscriber};
use super::{
    AccountStore, AuditLog, ChangeStore, KeyStore, LOGIN_HISTORY_CAP, PURGE_GRACE_SECS, PublishedKey, SessionStore,
    SsoActivation, SsoRollback, SsoStore, StoreError, SwitchStore, TENANT_LOGIN_HISTORY_CAP, ThrottleStore, TierStore,
    as_stored_draft, check_change, check_published_key, check_session_tier, check_sso_tenant, check_switch_tier,
    check_tier, check_window, decode_json as decode, encode_json as encode,
};
use crate::audit::{AuditEntry, AuditRecord};
use crate::records::user::{USER_AGENT_MAX_CHARS, truncate_chars};
use crate::records::{
    ChangeRequest, KillSwitch, LoginEvent, Revocation, SessionRecord, SsoState, SsoTest, SsoVersion, UserRecord,
};

/// Extra life of a session key after purge would delete it: purge normally runs first and
/// also cleans the indexes; the key's own expiry is a backstop if purge never runs.
const BACKSTOP_SECS: i64 = 7 * 24 * 3600;

/// Extra life of a throttle counter after its window, so clock skew never resets it early.
const THROTTLE_SLACK_SECS: i64 = 3600;

/// Sessions fetched per round trip when listing or revoking.
const BATCH: usize = 200;

/// Sets `EXPIREAT key t` unless `t` is already past on Redis's clock.
const GC_FN: &str = "
local function gc_at(key, t)
  if tonumber(t) > tonumber(redis.call('TIME')[1]) then redis.call('EXPIREAT', key, t) end
end
";

/// KEYS: session, user index, tenant index, expiry index, sso index.
/// ARGV: rec, last_seen, idle, abs, rev ('' if live), created_at, hex id, gc time, has sid ('1'/'0').
const CREATE_SESSION: &str = "
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'last_seen', ARGV[2], 'idle', ARGV[3], 'abs', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'rev', ARGV[5])
else
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7])
  if ARGV[9] == '1' then redis.call('SADD', KEYS[5], ARGV[7]) end
end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[7])
gc_at(KEYS[1], ARGV[8])
return 1
";

/// KEYS: session. ARGV: now, idle.
const TOUCH_SESSION: &str = "
local v = redis.call('HMGET', KEYS[1], 'idle', 'abs', 'rev')
if not v[1] or not v[2] or v[3] then return 0 end
local now = tonumber(ARGV[1])
if tonumber(v[1]) <= now or tonumber(v[2]) <= now then return 0 end
local idle = ARGV[2]
if tonumber(idle) > tonumber(v[2]) then idle = v[2] end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[1], 'idle', idle)
return 1
";

/// KEYS: groups of (session, user index, tenant index, sso index). ARGV: rev, then per
/// group hex id and has sid ('1'/'0'). Returns the hex ids it revoked.
const REVOKE_SESSIONS: &str = "
local out = {}
for i = 0, (#KEYS / 4) - 1 do
  local s, id = KEYS[i * 4 + 1], ARGV[i * 2 + 2]
  if redis.call('EXISTS', s) == 1 and redis.call('HSETNX', s, 'rev', ARGV[1]) == 1 then
    redis.call('ZREM', KEYS[i * 4 + 2], id)
    redis.call('ZREM', KEYS[i * 4 + 3], id)
    if ARGV[i * 2 + 3] == '1' then redis.call('SREM', KEYS[i * 4 + 4], id) end
    out[#out + 1] = id
  end
end
return out
";

/// KEYS: session, user index, tenant index, sso index, expiry index. ARGV: hex id, has sid.
const DELETE_SESSION: &str = "
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[2] == '1' then redis.call('SREM', KEYS[4], ARGV[1]) end
redis.call('ZREM', KEYS[5], ARGV[1])
return n
";

/// KEYS: user, codes, user set. ARGV: mode ('create'/'update'), json, username, codes...
const PUT_USER: &str = "
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'create' and exists then return 0 end
if ARGV[1] == 'update' and not exists then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
if #ARGV > 3 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 4)) end
redis.call('SADD', KEYS[3], ARGV[3])
return 1
";

/// KEYS: last-step key. ARGV: step (decimal, no leading zeros), expires_at. Returns 1 when
/// the step is later than the stored one (which it then replaces), else 0.
const ACCEPT_TOTP_STEP: &str = "
local last = redis.call('GET', KEYS[1])
local step = ARGV[1]
if last and (#last > #step or (#last == #step and last >= step)) then return 0 end
redis.call('SET', KEYS[1], step)
gc_at(KEYS[1], ARGV[2])
return 1
";

/// KEYS: counter. ARGV: now, window, slack. Returns {count, seconds until reset}.
const HIT: &str = "
local v = redis.call('HMGET', KEYS[1], 'count', 'reset_at')
local now = tonumber(ARGV[1])
local count, reset
if v[1] and v[2] and tonumber(v[2]) > now then
  count = math.min(tonumber(v[1]) + 1, 4294967295)
  reset = tonumber(v[2])
else
  count = 1
  reset = now + tonumber(ARGV[2])
end
redis.call('HSET', KEYS[1], 'count', string.format('%d', count), 'reset_at', string.format('%d', reset))
gc_at(KEYS[1], string.format('%d', reset + tonumber(ARGV[3])))
return {count, reset - now}
";

/// KEYS: counter. ARGV: window end. Takes one off the count of that window (never below 0).
const GIVE_BACK: &str = "
local v = redis.call('HMGET', KEYS[1], 'count', 'reset_at')
if v[1] and v[2] and tonumber(v[2]) == tonumber(ARGV[1]) and tonumber(v[1]) > 0 then
  redis.call('HSET', KEYS[1], 'count', string.format('%d', tonumber(v[1]) - 1))
end
return 0
";

/// KEYS: the subject's history, the tenant's. ARGV: seq, event JSON, the subject's cap,
/// the tenant's cap. The tenant's members are `<subject key>\n<JSON>`, so the events the
/// tenant's cap drops leave their subject's history too: every event is in both or in
/// neither, and the tenant's cap bounds them all.
const RECORD_LOGIN: &str = "
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1] .. '\\n' .. ARGV[2])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    local nl = string.find(m, '\\n', 1, true)
    if nl then redis.call('ZREM', string.sub(m, 1, nl - 1), string.sub(m, nl + 1)) end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return 0
";

/// KEYS: kill switch hash. ARGV: scope key. Returns the removed JSON or nil.
const DELETE_KILL_SWITCH: &str = "
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
";

/// KEYS: audit list. ARGV: expected length, record JSON. Appends only if nobody appended
/// since the caller read the last record (the caller then retries on 0).
const APPEND_AUDIT: &str = "
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
return 1
";

/// KEYS: changes hash. ARGV: id, expected version, new JSON. Replaces the change only if
/// its stored version is the expected one: 1 replaced, 0 not there or another version,
/// -1 the stored record is not JSON with a version.
const REPLACE_CHANGE_IF: &str = "
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local ok, rec = pcall(cjson.decode, v)
if not ok or type(rec) ~= 'table' or type(rec['version']) ~= 'number' then return -1 end
if rec['version'] ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

/// KEYS: tenant's sso hash. ARGV: version JSON, digest. Replaces the draft (keeping its
/// number) or numbers a new one; clears its test. Returns the number.
const PUT_SSO_DRAFT: &str = "
local n = redis.call('HGET', KEYS[1], 'draft')
if not n then n = tostring(redis.call('HINCRBY', KEYS[1], 'next', 1)) end
redis.call('HSET', KEYS[1], 'v:' .. n, ARGV[1], 's:' .. n, 'draft', 'd:' .. n, ARGV[2], 'draft', n)
redis.call('HDEL', KEYS[1], 't:' .. n, 'p:' .. n, 'r:' .. n)
return tonumber(n)
";

/// KEYS: tenant's sso hash. ARGV: which (`draft` or `active`). Returns {} or
/// {number, JSON, state, test or '', replaced or ''}.
const GET_SSO: &str = "
local n = redis.call('HGET', KEYS[1], ARGV[1])
if not n then return {} end
local f = redis.call('HMGET', KEYS[1], 'v:' .. n, 's:' .. n, 't:' .. n, 'r:' .. n)
if not f[1] or not f[2] then return redis.error_reply('sso version missing') end
return {n, f[1], f[2], f[3] or '', f[4] or ''}
";

/// KEYS: tenant's sso hash. ARGV: digest tested, test JSON, passed ('1'/'0'). Stores the
/// test only when the draft's digest is still the one tested; returns 1 if stored.
const RECORD_SSO_TEST: &str = "
local n = redis.call('HGET', KEYS[1], 'draft')
if not n then return 0 end
if redis.call('HGET', KEYS[1], 'd:' .. n) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 't:' .. n, ARGV[2])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'p:' .. n, ARGV[1])
else
  redis.call('HDEL', KEYS[1], 'p:' .. n)
end
return 1
";

/// KEYS: tenant's sso hash. Returns the activated number, -1 without a draft, -2 when
/// the draft has no passing test of its current digest.
const ACTIVATE_SSO: &str = "
local n = redis.call('HGET', KEYS[1], 'draft')
if not n then return -1 end
local passed = redis.call('HGET', KEYS[1], 'p:' .. n)
if not passed or passed ~= redis.call('HGET', KEYS[1], 'd:' .. n) then return -2 end
local old = redis.call('HGET', KEYS[1], 'active')
if old then
  redis.call('HSET', KEYS[1], 's:' .. old, 'superseded', 'r:' .. n, old)
end
redis.call('HSET', KEYS[1], 's:' .. n, 'active', 'active', n)
redis.call('HDEL', KEYS[1], 'draft')
return tonumber(n)
";

/// KEYS: tenant's sso hash. Returns the restored number, or -1 when there is nothing to
/// restore.
const ROLLBACK_SSO: &str = "
local a = redis.call('HGET', KEYS[1], 'active')
if not a then return -1 end
local prev = redis.call('HGET', KEYS[1], 'r:' .. a)
if not prev then return -1 end
if not redis.call('HGET', KEYS[1], 'v:' .. prev) then return -2 end
redis.call('HSET', KEYS[1], 's:' .. a, 'superseded', 's:' .. prev, 'active', 'active', prev)
return tonumber(prev)
";

/// KEYS: the assertion key hash. ARGV: kid, JWK, until, gc time. Keeps the later `until`
/// of a kid already published; returns 1 when it wrote.
const PUBLISH_ASSERTION_KEY: &str = "
local old = redis.call('HGET', KEYS[1], 'u:' .. ARGV[1])
if old and tonumber(old) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'u:' .. ARGV[1], ARGV[3], 'j:' .. ARGV[1], ARGV[2])
gc_at(KEYS[1], ARGV[4])
return 1
";

/// KEYS: the assertion key hash. ARGV: now. Forgets keys published until `now` or earlier
/// (checked here, so a replica extending a key at the same moment never loses it).
const PURGE_ASSERTION_KEYS: &str = "
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'u:' and tonumber(all[i + 1]) <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i], 'j:' .. string.sub(all[i], 3))
  end
end
return 0
";

/// The assertion key scripts, hashed once (kept apart from [`Scripts`]).
static ASSERTION_KEY_SCRIPTS: std::sync::LazyLock<(Script, Script)> = std::sync::LazyLock::new(|| {
    (
        Script::new(&format!("{GC_FN}{PUBLISH_ASSERTION_KEY}")),
        Script::new(PURGE_ASSERTION_KEYS),
    )
});

/// Attempts at appending an audit record when other writers keep winning the race.
const AUDIT_APPEND_ATTEMPTS: usize = 50;

/// The scripts, hashed once; `invoke_async` loads a script again after a Redis restart.
struct Scripts {
    create_session: Script,
    touch_session: Script,
    revoke_sessions: Script,
    delete_session: Script,
    put_user: Script,
    accept_totp_step: Script,
    hit: Script,
    give_back: Script,
    record_login: Script,
    delete_kill_switch: Script,
    append_audit: Script,
    replace_change_if: Script,
    put_sso_draft: Script,
    get_sso: Script,
    record_sso_test: Script,
    activate_sso: Script,
    rollback_sso: Script,
}

impl Scripts {
    fn new() -> Self {
        let gc = |body: &str| Script::new(&format!("{GC_FN}{body}"));
        Scripts {
            create_session: gc(CREATE_SESSION),
            touch_session: Script::new(TOUCH_SESSION),
            revoke_sessions: Script::new(REVOKE_SESSIONS),
            delete_session: Script::new(DELETE_SESSION),
            put_user: Script::new(PUT_USER),
            accept_totp_step: gc(ACCEPT_TOTP_STEP),
            hit: gc(HIT),
            give_back: Script::new(GIVE_BACK),
            record_login: Script::new(RECORD_LOGIN),
            delete_kill_switch: Script::new(DELETE_KILL_SWITCH),
            append_audit: Script::new(APPEND_AUDIT),
            replace_change_if: Script::new(REPLACE_CHANGE_IF),
            put_sso_draft: Script::new(PUT_SSO_DRAFT),
            get_sso: Script::new(GET_SSO),
            record_sso_test: Script::new(RECORD_SSO_TEST),
            activate_sso: Script::new(ACTIVATE_SSO),
            rollback_sso: Script::new(ROLLBACK_SSO),
        }
    }
}

/// Redis backend for one tier.
pub struct RedisStore {
    con: RedisConnection,
    /// `portcullis:<tier>:`, or `portcullis:{<tier>}:` on a Cluster; every key of this store
    /// starts with it.
    prefix: String,
    /// The tier served; sessions of other tiers are refused.
    tier: String,
    /// The Lua scripts, hashed once.
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish()
    }
}

/// Connects to Redis as the store URL says (one node, Sentinel or Cluster; see
/// [`super::redis_connection`]); one connection can serve every tier's [`RedisStore`]. Short
/// timeouts, so a lost Redis turns into [`StoreError::Unavailable`] (and a fail-closed 503)
/// quickly.
pub async fn connect(url: &str) -> Result<RedisConnection, StoreError> {
    connect_as(url, None).await
}

/// Connects as a Redis ACL user (`(user, password)`), or as the URL says when `None`.
pub async fn connect_as(url: &str, auth: Option<(&str, &str)>) -> Result<RedisConnection, StoreError> {
    RedisTarget::parse(url)?.connect(auth).await
}

/// Opens pub/sub connections (the event bus's) to the same Redis as [`connect_as`], with
/// the same credentials: the current master behind Sentinel, any reachable node of a
/// Cluster (classic pub/sub reaches every node).
pub(crate) fn client_as(url: &str, auth: Option<(&str, &str)>) -> Result<RedisSubscriber, StoreError> {
    RedisTarget::parse(url)?.subscriber(auth)
}

/// The prefix of every key of `tier`. On a Cluster the tier is a hash tag, so all its keys
/// share one slot and every multi-key script stays on one node; elsewhere the prefix stays
/// as it always was, so existing data and ACL key patterns stay valid.
pub fn key_prefix(tier: &str, cluster: bool) -> String {
    if cluster {
        format!("portcullis:{{{tier}}}:")
    } else {
        format!("portcullis:{tier}:")
    }
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        use ::redis::ErrorKind as K;
        match e.kind() {
            K::Parse | K::UnexpectedReturnType => StoreError::Corrupt("redis reply"),
            kind => {
                let what = if e.is_timeout() {
                    "timeout".to_string()
                } else if e.is_connection_refusal() {
                    "connection refused".to_string()
                } else if e.is_connection_dropped() {
                    "connection dropped".to_string()
                } else if e.is_io_error() {
                    "I/O error".to_string()
                } else if let Some(code) = e.code() {
                    format!("server error {code}")
                } else {
                    format!("{kind:?}")
                };
                StoreError::Unavailable(format!("redis: {what}"))
            }
        }
    }
}

/// The fields of a session that never change, stored as JSON under `rec`.
#[derive(Serialize, Deserialize)]
struct SessionWire {
    tenant: String,
    tier: String,
    subject: String,
    display_name: String,
    roles: Vec<String>,
    auth_method: String,
    amr: Vec<String>,
    mfa_at: Option<i64>,
    created_at: i64,
    absolute_expires_at: i64,
    ip: String,
    user_agent: String,
    csrf_token: String,
    sso_sid: Option<String>,
    /// Absent in sessions written before identity providers were kept apart: `local`.
    #[serde(default = "local_idp")]
    idp: String,
}

fn local_idp() -> String {
    crate::account::LOCAL_IDP.to_string()
}

#[derive(Serialize, Deserialize)]
struct RevocationWire {
    at: i64,
    by: String,
    reason: String,
}

/// A user without recovery codes (those live in their own list).
#[derive(Serialize, Deserialize)]
struct UserWire {
    display_name: String,
    roles: Vec<String>,
    password_hash: String,
    totp_secret: Option<String>,
    totp_enrolled_at: Option<i64>,
    disabled: bool,
    created_at: i64,
    password_changed_at: i64,
}

#[derive(Serialize, Deserialize)]
struct EventWire {
    seq: i64,
    tenant: String,
    subject: String,
    time: i64,
    ip: String,
    user_agent: String,
    method: String,
    outcome: String,
    reason: Option<String>,
}

fn decode_event(json: &str) -> Result<LoginEvent, StoreError> {
    let w: EventWire = decode(json, "stored login event")?;
    Ok(LoginEvent {
        seq: w.seq,
        tenant: w.tenant,
        subject: w.subject,
        time: w.time,
        ip: w.ip,
        user_agent: w.user_agent,
        method: w.method,
        outcome: w.outcome,
        reason: w.reason,
    })
}

/// The raw hash fields of a session as fetched.
type SessionFields = (Option<String>, Option<String>, Option<String>, Option<String>);

/// Escapes a key component so `a:b` + `c` never collides with `a` + `b:c`.
fn seg(s: &str) -> Cow<'_, str> {
    if s.contains(['%', ':']) {
        Cow::Owned(s.replace('%', "%25").replace(':', "%3A"))
    } else {
        Cow::Borrowed(s)
    }
}

fn num(s: &str) -> Result<i64, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt("stored number"))
}

fn id_from_hex(s: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| StoreError::Corrupt("stored id"))?;
    Ok(out)
}

fn session_from_fields(id_hash: [u8; 32], fields: SessionFields) -> Result<Option<SessionRecord>, StoreError> {
    let (Some(rec), Some(last_seen), Some(idle)) = (fields.0, fields.1, fields.2) else {
        return Ok(None);
    };
    let w: SessionWire = decode(&rec, "stored session")?;
    let revoked = match fields.3 {
        Some(rev) => {
            let r: RevocationWire = decode(&rev, "stored revocation")?;
            Some(Revocation {
                at: r.at,
                by: r.by,
                reason: r.reason,
            })
        }
        None => None,
    };
    Ok(Some(SessionRecord {
        id_hash,
        tenant: w.tenant,
        tier: w.tier,
        subject: w.subject,
        display_name: w.display_name,
        roles: w.roles,
        auth_method: w.auth_method,
        amr: w.amr,
        mfa_at: w.mfa_at,
        created_at: w.created_at,
        last_seen: num(&last_seen)?,
        idle_expires_at: num(&idle)?,
        absolute_expires_at: w.absolute_expires_at,
        ip: w.ip,
        user_agent: w.user_agent,
        csrf_token: w.csrf_token,
        sso_sid: w.sso_sid,
        idp: w.idp,
        revoked,
    }))
}

/// A stored SSO version from its hash fields (`test` and `replaced` empty when absent).
fn sso_from_fields(n: &str, json: &str, state: &str, test: &str, replaced: &str) -> Result<SsoVersion, StoreError> {
    let mut v: SsoVersion = decode(json, "stored sso version")?;
    v.version = n
        .parse()
        .map_err(|_| StoreError::Corrupt("stored sso version number"))?;
    v.state = match state {
        "draft" => SsoState::Draft,
        "active" => SsoState::Active,
        "superseded" => SsoState::Superseded,
        _ => return Err(StoreError::Corrupt("stored sso state")),
    };
    v.test = if test.is_empty() {
        None
    } else {
        Some(decode(test, "stored sso test")?)
    };
    v.replaced = if replaced.is_empty() {
        None
    } else {
        Some(
            replaced
                .parse()
                .map_err(|_| StoreError::Corrupt("stored sso version number"))?,
        )
    };
    Ok(v)
}

fn user_from_parts(tenant: &str, username: &str, json: &str, codes: &[String]) -> Result<UserRecord, StoreError> {
    let w: UserWire = decode(json, "stored user")?;
    Ok(UserRecord {
        tenant: tenant.to_string(),
        username: username.to_string(),
        display_name: w.display_name,
        roles: w.roles,
        password_hash: w.password_hash,
        totp_secret: w.totp_secret,
        totp_enrolled_at: w.totp_enrolled_at,
        recovery_code_hashes: codes.iter().map(|c| id_from_hex(c)).collect::<Result<_, _>>()?,
        disabled: w.disabled,
        created_at: w.created_at,
        password_changed_at: w.password_changed_at,
    })
}

fn newest_first(sessions: &mut [SessionRecord]) {
    sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id_hash.cmp(&a.id_hash)));
}

impl RedisStore {
    /// The members of the sorted set `key` scored below `before` (all when None), highest
    /// score first, at most `limit`.
    async fn newest(&self, key: &str, limit: usize, before: Option<i64>) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let max = before.map_or_else(|| "+inf".to_string(), |b| format!("({b}"));
        Ok(::redis::cmd("ZREVRANGEBYSCORE")
            .arg(key)
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(i64::try_from(limit).unwrap_or(i64::MAX))
            .query_async(&mut self.con())
            .await?)
    }

    /// The store of `tier` on an existing connection (see [`connect`]).
    pub fn new(con: RedisConnection, tier: &str) -> Result<Self, StoreError> {
        check_tier(tier)?;
        Ok(RedisStore {
            prefix: key_prefix(tier, con.is_cluster()),
            con,
            tier: tier.to_string(),
            scripts: Scripts::new(),
        })
    }

    /// Connects and opens the store of one tier.
    pub async fn open(url: &str, tier: &str) -> Result<Self, StoreError> {
        RedisStore::new(connect(url).await?, tier)
    }

    fn con(&self) -> RedisConnection {
        self.con.clone()
    }

    fn session_key(&self, hex_id: &str) -> String {
        format!("{}session:{hex_id}", self.prefix)
    }
    fn user_index(&self, tenant: &str, subject: &str) -> String {
        format!("{}user_sessions:{}:{}", self.prefix, seg(tenant), seg(subject))
    }
    fn tenant_index(&self, tenant: &str) -> String {
        format!("{}tenant_sessions:{}", self.prefix, seg(tenant))
    }
    fn sso_index(&self, tenant: &str, sid: &str) -> String {
        format!("{}sso_sessions:{}:{}", self.prefix, seg(tenant), seg(sid))
    }
    fn expiry_index(&self) -> String {
        format!("{}session_expiry", self.prefix)
    }
    fn user_key(&self, tenant: &str, username: &str) -> String {
        format!("{}user:{}:{}", self.prefix, seg(tenant), seg(username))
    }
    fn codes_key(&self, tenant: &str, username: &str) -> String {
        format!("{}user_codes:{}:{}", self.prefix, seg(tenant), seg(username))
    }
    fn users_key(&self, tenant: &str) -> String {
        format!("{}users:{}", self.prefix, seg(tenant))
    }
    fn logins_key(&self, tenant: &str, subject: &str) -> String {
        format!("{}logins:{}:{}", self.prefix, seg(tenant), seg(subject))
    }
    /// The tenant's history: members are `<subject history key>\n<event JSON>`.
    fn tenant_logins_key(&self, tenant: &str) -> String {
        format!("{}tenant_logins:{}", self.prefix, seg(tenant))
    }
    fn throttle_key(&self, key: &str) -> String {
        format!("{}throttle:{key}", self.prefix)
    }
    fn kill_switches_key(&self) -> String {
        format!("{}kill_switches", self.prefix)
    }
    fn audit_key(&self) -> String {
        format!("{}audit", self.prefix)
    }
    fn changes_key(&self) -> String {
        format!("{}changes", self.prefix)
    }
    fn sso_key(&self, tenant: &str) -> String {
        format!("{}sso:{}", self.prefix, seg(tenant))
    }

    /// The tenant's version in the `draft` or `active` slot, read in one script.
    async fn sso_slot(&self, tenant: &str, slot: &str) -> Result<Option<SsoVersion>, StoreError> {
        check_sso_tenant(tenant)?;
        let f: Vec<String> = self
            .scripts
            .get_sso
            .key(self.sso_key(tenant))
            .arg(slot)
            .invoke_async(&mut self.con())
            .await?;
        match f.as_slice() {
            [] => Ok(None),
            [n, json, state, test, replaced] => sso_from_fields(n, json, state, test, replaced).map(Some),
            _ => Err(StoreError::Corrupt("stored sso version")),
        }
    }

    /// The tenant's version number `n`, read from the whole hash.
    async fn sso_numbered(&self, tenant: &str, n: i64) -> Result<SsoVersion, StoreError> {
        let all = self.list_sso_versions(tenant).await?;
        all.into_iter()
            .find(|v| i64::try_from(v.version).is_ok_and(|v| v == n))
            .ok_or(StoreError::Corrupt("stored sso version"))
    }

    /// The sso index of a session; sessions without a sid get a key that is never written.
    fn sso_index_of(&self, w: &SessionWire) -> (String, &'static str) {
        match &w.sso_sid {
            Some(sid) => (self.sso_index(&w.tenant, sid), "1"),
            None => (self.tenant_index(&w.tenant), "0"),
        }
    }

    /// Fetches sessions by hex id in one round trip; `None` for ids whose key is gone.
    async fn fetch_sessions(&self, hex_ids: &[String]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        if hex_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in hex_ids {
            pipe.cmd("HMGET")
                .arg(self.session_key(id))
                .arg(&["rec", "last_seen", "idle", "rev"]);
        }
        let rows: Vec<SessionFields> = pipe.query_async(&mut self.con()).await?;
        hex_ids
            .iter()
            .zip(rows)
            .map(|(id, fields)| session_from_fields(id_from_hex(id)?, fields))
            .collect()
    }

    /// Revokes the given sessions (ids whose key is gone are dropped from `index`, where
    /// the caller found them); returns the ids it revoked, sorted.
    async fn revoke_ids(&self, hex_ids: &[String], rev: &Revocation, index: &str) -> Result<Vec<[u8; 32]>, StoreError> {
        let rev_json = encode(&RevocationWire {
            at: rev.at,
            by: rev.by.clone(),
            reason: rev.reason.clone(),
        })?;
        let mut out = Vec::new();
        for chunk in hex_ids.chunks(BATCH) {
            let mut pipe = ::redis::pipe();
            for id in chunk {
                pipe.cmd("HGET").arg(self.session_key(id)).arg("rec");
            }
            let recs: Vec<Option<String>> = pipe.query_async(&mut self.con()).await?;
            let mut invocation = self.scripts.revoke_sessions.prepare_invoke();
            invocation.arg(&rev_json);
            let mut dangling = Vec::new();
            let mut any = false;
            for (id, rec) in chunk.iter().zip(recs) {
                let Some(rec) = rec else {
                    dangling.push(id.clone());
                    continue;
                };
                let w: SessionWire = decode(&rec, "stored session")?;
                let (sso, has_sid) = self.sso_index_of(&w);
                invocation
                    .key(self.session_key(id))
                    .key(self.user_index(&w.tenant, &w.subject))
                    .key(self.tenant_index(&w.tenant))
                    .key(sso)
                    .arg(id)
                    .arg(has_sid);
                any = true;
            }
            if !dangling.is_empty() {
                let _: i64 = ::redis::cmd("ZREM")
                    .arg(index)
                    .arg(&dangling)
                    .query_async(&mut self.con())
                    .await?;
            }
            if any {
                let revoked: Vec<String> = invocation.invoke_async(&mut self.con()).await?;
                for id in revoked {
                    out.push(id_from_hex(&id)?);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Live sessions from a sorted index, newest first, at most `limit`; drops ids whose key
    /// is gone from the index on the way.
    async fn live_from_index(&self, index: &str, now: i64, limit: usize) -> Result<Vec<SessionRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = 0usize;
        while out.len() < limit {
            let stop = start + BATCH - 1;
            let ids: Vec<String> = ::redis::cmd("ZREVRANGE")
                .arg(index)
                .arg(start)
                .arg(stop)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                break;
            }
            let sessions = self.fetch_sessions(&ids).await?;
            let mut dangling = Vec::new();
            for (id, s) in ids.iter().zip(sessions) {
                match s {
                    Some(s) if s.is_live(now) => out.push(s),
                    Some(_) => {}
                    None => dangling.push(id.clone()),
                }
            }
            start += ids.len();
            if !dangling.is_empty() {
                let _: i64 = ::redis::cmd("ZREM")
                    .arg(index)
                    .arg(&dangling)
                    .query_async(&mut self.con())
                    .await?;
                start -= dangling.len();
            }
            if ids.len() < BATCH {
                break;
            }
        }
        newest_first(&mut out);
        out.truncate(limit);
        Ok(out)
    }

    async fn put_user(&self, u: &UserRecord, mode: &str) -> Result<bool, StoreError> {
        let json = encode(&UserWire {
            display_name: u.display_name.clone(),
            roles: u.roles.clone(),
            password_hash: u.password_hash.clone(),
            totp_secret: u.totp_secret.clone(),
            totp_enrolled_at: u.totp_enrolled_at,
            disabled: u.disabled,
            created_at: u.created_at,
            password_changed_at: u.password_changed_at,
        })?;
        let codes: Vec<String> = u.recovery_code_hashes.iter().map(hex::encode).collect();
        let done: i64 = self
            .scripts
            .put_user
            .key(self.user_key(&u.tenant, &u.username))
            .key(self.codes_key(&u.tenant, &u.username))
            .key(self.users_key(&u.tenant))
            .arg(mode)
            .arg(json)
            .arg(&u.username)
            .arg(codes)
            .invoke_async(&mut self.con())
            .await?;
        Ok(done == 1)
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        check_session_tier(s, &self.tier)?;
        let hex_id = hex::encode(s.id_hash);
        let w = SessionWire {
            tenant: s.tenant.clone(),
            tier: s.tier.clone(),
            subject: s.subject.clone(),
            display_name: s.display_name.clone(),
            roles: s.roles.clone(),
            auth_method: s.auth_method.clone(),
            amr: s.amr.clone(),
            mfa_at: s.mfa_at,
            created_at: s.created_at,
            absolute_expires_at: s.absolute_expires_at,
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            csrf_token: s.csrf_token.clone(),
            sso_sid: s.sso_sid.clone(),
            idp: s.idp.clone(),
        };
        let rev = match &s.revoked {
            Some(r) => encode(&RevocationWire {
                at: r.at,
                by: r.by.clone(),
                reason: r.reason.clone(),
            })?,
            None => String::new(),
        };
        let (sso, has_sid) = self.sso_index_of(&w);
        let gc_at = s.absolute_expires_at.saturating_add(PURGE_GRACE_SECS + BACKSTOP_SECS);
        let created: i64 = self
            .scripts
            .create_session
            .key(self.session_key(&hex_id))
            .key(self.user_index(&s.tenant, &s.subject))
            .key(self.tenant_index(&s.tenant))
            .key(self.expiry_index())
            .key(sso)
            .arg(encode(&w)?)
            .arg(s.last_seen)
            .arg(s.idle_expires_at)
            .arg(s.absolute_expires_at)
            .arg(rev)
            .arg(s.created_at)
            .arg(&hex_id)
            .arg(gc_at)
            .arg(has_sid)
            .invoke_async(&mut self.con())
            .await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("session"))
        }
    }

    async fn get_session(&self, id_hash: &[u8; 32]) -> Result<Option<SessionRecord>, StoreError> {
        let mut found = self.fetch_sessions(&[hex::encode(id_hash)]).await?;
        Ok(found.pop().flatten())
    }

    async fn touch_session(&self, id_hash: &[u8; 32], now: i64, idle_expires_at: i64) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .touch_session
            .key(self.session_key(&hex::encode(id_hash)))
            .arg(now)
            .arg(idle_expires_at)
            .invoke_async(&mut self.con())
            .await?;
        Ok(())
    }

    async fn revoke_session(&self, id_hash: &[u8; 32], rev: &Revocation) -> Result<bool, StoreError> {
        let revoked = self
            .revoke_ids(&[hex::encode(id_hash)], rev, &self.expiry_index())
            .await?;
        Ok(!revoked.is_empty())
    }

    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        subject: &str,
        keep: Option<&[u8; 32]>,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let index = self.user_index(tenant, subject);
        let keep = keep.map(hex::encode);
        let ids: Vec<String> = ::redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        let ids: Vec<String> = ids.into_iter().filter(|id| Some(id) != keep.as_ref()).collect();
        self.revoke_ids(&ids, rev, &index).await
    }

    async fn revoke_tenant_sessions(&self, tenant: &str, rev: &Revocation) -> Result<Vec<[u8; 32]>, StoreError> {
        let index = self.tenant_index(tenant);
        let ids: Vec<String> = ::redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        self.revoke_ids(&ids, rev, &index).await
    }

    async fn revoke_sso_sessions(
        &self,
        tenant: &str,
        sso_sid: &str,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let index = self.sso_index(tenant, sso_sid);
        let ids: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.con())
            .await?;
        let mut live = Vec::with_capacity(ids.len());
        let mut dangling = Vec::new();
        for (id, s) in ids.iter().zip(self.fetch_sessions(&ids).await?) {
            match s {
                Some(s) if s.tenant == tenant && s.sso_sid.as_deref() == Some(sso_sid) => live.push(id.clone()),
                Some(_) => {}
                None => dangling.push(id.clone()),
            }
        }
        if !dangling.is_empty() {
            let _: i64 = ::redis::cmd("SREM")
                .arg(&index)
                .arg(&dangling)
                .query_async(&mut self.con())
                .await?;
        }
        self.revoke_ids(&live, rev, &self.expiry_index()).await
    }

    async fn list_user_sessions(
        &self,
        tenant: &str,
        subject: &str,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.live_from_index(&self.user_index(tenant, subject), now, usize::MAX)
            .await
    }

    async fn list_tenant_sessions(
        &self,
        tenant: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.live_from_index(&self.tenant_index(tenant), now, limit).await
    }
}

#[async_trait::async_trait]
impl AccountStore for RedisStore {
    async fn create_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        if self.put_user(u, "create").await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("user"))
        }
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let (json, codes): (Option<String>, Vec<String>) = ::redis::pipe()
            .cmd("GET")
            .arg(self.user_key(tenant, username))
            .cmd("LRANGE")
            .arg(self.codes_key(tenant, username))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con())
            .await?;
        json.map(|json| user_from_parts(tenant, username, &json, &codes))
            .transpose()
    }

    async fn update_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        if self.put_user(u, "update").await? {
            Ok(())
        } else {
            Err(StoreError::NotFound("user"))
        }
    }

    async fn list_users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError> {
        let mut names: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.users_key(tenant))
            .query_async(&mut self.con())
            .await?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(BATCH) {
            let mut pipe = ::redis::pipe();
            for name in chunk {
                pipe.cmd("GET").arg(self.user_key(tenant, name));
                pipe.cmd("LRANGE").arg(self.codes_key(tenant, name)).arg(0).arg(-1);
            }
            let replies: Vec<::redis::Value> = pipe.query_async(&mut self.con()).await?;
            let mut replies = replies.into_iter();
            for name in chunk {
                let (Some(json), Some(codes)) = (replies.next(), replies.next()) else {
                    return Err(StoreError::Corrupt("redis reply"));
                };
                let json: Option<String> =
                    ::redis::from_redis_value(json).map_err(|_| StoreError::Corrupt("redis reply"))?;
                let codes: Vec<String> =
                    ::redis::from_redis_value(codes).map_err(|_| StoreError::Corrupt("redis reply"))?;
                if let Some(json) = json {
                    out.push(user_from_parts(tenant, name, &json, &codes)?);
                }
            }
        }
        Ok(out)
    }

    async fn consume_recovery_code(
        &self,
        tenant: &str,
        username: &str,
        code_hash: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let removed: i64 = ::redis::cmd("LREM")
            .arg(self.codes_key(tenant, username))
            .arg(1)
            .arg(hex::encode(code_hash))
            .query_async(&mut self.con())
            .await?;
        Ok(removed == 1)
    }

    async fn record_login(&self, e: &LoginEvent) -> Result<(), StoreError> {
        let seq: i64 = ::redis::cmd("INCR")
            .arg(format!("{}login_seq", self.prefix))
            .query_async(&mut self.con())
            .await?;
        let json = encode(&EventWire {
            seq,
            tenant: e.tenant.clone(),
            subject: e.subject.clone(),
            time: e.time,
            ip: e.ip.clone(),
            user_agent: truncate_chars(&e.user_agent, USER_AGENT_MAX_CHARS),
            method: e.method.clone(),
            outcome: e.outcome.clone(),
            reason: e.reason.clone(),
        })?;
        let _: i64 = self
            .scripts
            .record_login
            .key(self.logins_key(&e.tenant, &e.subject))
            .key(self.tenant_logins_key(&e.tenant))
            .arg(seq)
            .arg(json)
            .arg(LOGIN_HISTORY_CAP)
            .arg(TENANT_LOGIN_HISTORY_CAP)
            .invoke_async(&mut self.con())
            .await?;
        Ok(())
    }

    async fn login_history(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError> {
        let rows = self
            .newest(&self.logins_key(tenant, subject), limit, before_seq)
            .await?;
        rows.iter().map(|row| decode_event(row)).collect()
    }

    async fn tenant_login_history(
        &self,
        tenant: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError> {
        let rows = self.newest(&self.tenant_logins_key(tenant), limit, before_seq).await?;
        rows.iter()
            .map(|row| {
                let (_, json) = row.split_once('\n').ok_or(StoreError::Corrupt("stored login event"))?;
                decode_event(json)
            })
            .collect()
    }

    async fn accept_totp_step(
        &self,
        tenant: &str,
        subject: &str,
        step: u64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let key = format!("{}totp_last:{}:{}", self.prefix, seg(tenant), seg(subject));
        let advanced: i64 = self
            .scripts
            .accept_totp_step
            .key(key)
            .arg(step.to_string())
            .arg(expires_at.max(1))
            .invoke_async(&mut self.con())
            .await?;
        Ok(advanced == 1)
    }
}

#[async_trait::async_trait]
impl ThrottleStore for RedisStore {
    async fn hit(&self, key: &str, now: i64, window_secs: i64) -> Result<(u32, i64), StoreError> {
        check_window(window_secs)?;
        let (count, reset_in): (i64, i64) = self
            .scripts
            .hit
            .key(self.throttle_key(key))
            .arg(now)
            .arg(window_secs)
            .arg(THROTTLE_SLACK_SECS)
            .invoke_async(&mut self.con())
            .await?;
        Ok((u32::try_from(count).unwrap_or(u32::MAX), reset_in))
    }

    async fn give_back(&self, key: &str, window_end: i64) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .give_back
            .key(self.throttle_key(key))
            .arg(window_end)
            .invoke_async(&mut self.con())
            .await?;
        Ok(())
    }

    async fn peek(&self, key: &str, now: i64) -> Result<(u32, i64), StoreError> {
        let (count, reset_at): (Option<i64>, Option<i64>) = ::redis::cmd("HMGET")
            .arg(self.throttle_key(key))
            .arg("count")
            .arg("reset_at")
            .query_async(&mut self.con())
            .await?;
        Ok(match (count, reset_at) {
            (Some(count), Some(reset_at)) if reset_at > now => {
                (u32::try_from(count).unwrap_or(u32::MAX), reset_at - now)
            }
            _ => (0, 0),
        })
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = ::redis::cmd("DEL")
            .arg(self.throttle_key(key))
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl SwitchStore for RedisStore {
    async fn put_kill_switch(&self, ks: &KillSwitch) -> Result<(), StoreError> {
        check_switch_tier(ks, &self.tier)?;
        let _: i64 = ::redis::cmd("HSET")
            .arg(self.kill_switches_key())
            .arg(ks.scope.key())
            .arg(encode(ks)?)
            .query_async(&mut self.con())
            .await?;
        Ok(())
    }

    async fn delete_kill_switch(&self, scope_key: &str) -> Result<Option<KillSwitch>, StoreError> {
        let removed: Option<String> = self
            .scripts
            .delete_kill_switch
            .key(self.kill_switches_key())
            .arg(scope_key)
            .invoke_async(&mut self.con())
            .await?;
        removed.map(|d| decode(&d, "stored kill switch")).transpose()
    }

    async fn list_kill_switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
        let all: Vec<(String, String)> = ::redis::cmd("HGETALL")
            .arg(self.kill_switches_key())
            .query_async(&mut self.con())
            .await?;
        let mut out: Vec<KillSwitch> = all
            .iter()
            .map(|(_, d)| decode(d, "stored kill switch"))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|k| k.scope.key());
        Ok(out)
    }
}

#[async_trait::async_trait]
impl AuditLog for RedisStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let key = self.audit_key();
        for _ in 0..AUDIT_APPEND_ATTEMPTS {
            let (len, last): (i64, Option<String>) = ::redis::pipe()
                .cmd("LLEN")
                .arg(&key)
                .cmd("LINDEX")
                .arg(&key)
                .arg(-1)
                .query_async(&mut self.con())
                .await?;
            let prev: Option<AuditRecord> = last.map(|d| decode(&d, "stored audit record")).transpose()?;
            if prev.as_ref().map_or(0, |p| p.seq) != u64::try_from(len).unwrap_or(0) {
                return Err(StoreError::Corrupt("audit log (length and last sequence differ)"));
            }
            let record = AuditRecord::chain(prev.as_ref(), entry.clone());
            let appended: i64 = self
                .scripts
                .append_audit
                .key(&key)
                .arg(len)
                .arg(encode(&record)?)
                .invoke_async(&mut self.con())
                .await?;
            if appended == 1 {
                return Ok(record);
            }
        }
        Err(StoreError::Unavailable(
            "audit log busy (too many concurrent writers)".into(),
        ))
    }

    async fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX) - 1);
        let rows: Vec<String> = ::redis::cmd("LRANGE")
            .arg(self.audit_key())
            .arg(start)
            .arg(stop)
            .query_async(&mut self.con())
            .await?;
        rows.iter().map(|d| decode(d, "stored audit record")).collect()
    }
}

#[async_trait::async_trait]
impl ChangeStore for RedisStore {
    async fn put_change(&self, c: &ChangeRequest) -> Result<(), StoreError> {
        check_change(c, &self.tier)?;
        let added: i64 = ::redis::cmd("HSETNX")
            .arg(self.changes_key())
            .arg(&c.id)
            .arg(encode(c)?)
            .query_async(&mut self.con())
            .await?;
        if added == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("change request"))
        }
    }

    async fn get_change(&self, id: &str) -> Result<Option<ChangeRequest>, StoreError> {
        let data: Option<String> = ::redis::cmd("HGET")
            .arg(self.changes_key())
            .arg(id)
            .query_async(&mut self.con())
            .await?;
        data.map(|d| decode(&d, "stored change request")).transpose()
    }

    async fn list_changes(&self) -> Result<Vec<ChangeRequest>, StoreError> {
        let all: Vec<(String, String)> = ::redis::cmd("HGETALL")
            .arg(self.changes_key())
            .query_async(&mut self.con())
            .await?;
        let mut out: Vec<ChangeRequest> = all
            .iter()
            .map(|(_, d)| decode(d, "stored change request"))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(out)
    }

    async fn replace_change_if(&self, c: &ChangeRequest, expected_version: u64) -> Result<bool, StoreError> {
        check_change(c, &self.tier)?;
        if c.version <= expected_version {
            return Err(StoreError::Invalid("change request version (must move on)".into()));
        }
        let replaced: i64 = self
            .scripts
            .replace_change_if
            .key(self.changes_key())
            .arg(&c.id)
            .arg(expected_version)
            .arg(encode(c)?)
            .invoke_async(&mut self.con())
            .await?;
        match replaced {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(StoreError::Corrupt("stored change request")),
        }
    }
}

#[async_trait::async_trait]
impl SsoStore for RedisStore {
    async fn put_sso_draft(&self, draft: &SsoVersion) -> Result<SsoVersion, StoreError> {
        let mut stored = as_stored_draft(draft)?;
        stored.version = 0;
        let n: i64 = self
            .scripts
            .put_sso_draft
            .key(self.sso_key(&stored.tenant))
            .arg(encode(&stored)?)
            .arg(stored.digest())
            .invoke_async(&mut self.con())
            .await?;
        stored.version = u64::try_from(n).map_err(|_| StoreError::Corrupt("stored sso version number"))?;
        Ok(stored)
    }

    async fn get_sso_draft(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError> {
        self.sso_slot(tenant, "draft").await
    }

    async fn get_sso_active(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError> {
        self.sso_slot(tenant, "active").await
    }

    async fn list_sso_versions(&self, tenant: &str) -> Result<Vec<SsoVersion>, StoreError> {
        check_sso_tenant(tenant)?;
        let all: std::collections::HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(self.sso_key(tenant))
            .query_async(&mut self.con())
            .await?;
        let field = |kind: &str, n: &str| all.get(&format!("{kind}:{n}")).map_or("", String::as_str);
        let mut out = Vec::new();
        for (key, json) in &all {
            let Some(n) = key.strip_prefix("v:") else { continue };
            out.push(sso_from_fields(n, json, field("s", n), field("t", n), field("r", n))?);
        }
        out.sort_by_key(|v| std::cmp::Reverse(v.version));
        Ok(out)
    }

    async fn record_sso_test(&self, tenant: &str, test: &SsoTest) -> Result<bool, StoreError> {
        check_sso_tenant(tenant)?;
        let digest = test.draft_digest();
        let stored: i64 = self
            .scripts
            .record_sso_test
            .key(self.sso_key(tenant))
            .arg(digest)
            .arg(encode(test)?)
            .arg(if test.passed_for(digest) { "1" } else { "0" })
            .invoke_async(&mut self.con())
            .await?;
        Ok(stored == 1)
    }

    async fn activate_sso(&self, tenant: &str) -> Result<SsoActivation, StoreError> {
        check_sso_tenant(tenant)?;
        let n: i64 = self
            .scripts
            .activate_sso
            .key(self.sso_key(tenant))
            .invoke_async(&mut self.con())
            .await?;
        match n {
            -1 => Ok(SsoActivation::NoDraft),
            -2 => Ok(SsoActivation::NotTested),
            n if n > 0 => Ok(SsoActivation::Activated(Box::new(self.sso_numbered(tenant, n).await?))),
            _ => Err(StoreError::Corrupt("redis reply")),
        }
    }

    async fn rollback_sso(&self, tenant: &str) -> Result<SsoRollback, StoreError> {
        check_sso_tenant(tenant)?;
        let n: i64 = self
            .scripts
            .rollback_sso
            .key(self.sso_key(tenant))
            .invoke_async(&mut self.con())
            .await?;
        match n {
            -1 => Ok(SsoRollback::NothingToRestore),
            -2 => Err(StoreError::Corrupt("stored sso version (replaced version missing)")),
            n if n > 0 => Ok(SsoRollback::RolledBack(Box::new(self.sso_numbered(tenant, n).await?))),
            _ => Err(StoreError::Corrupt("redis reply")),
        }
    }
}

impl RedisStore {
    fn assertion_keys_key(&self) -> String {
        format!("{}assertion_keys", self.prefix)
    }

    /// The `purge_expired` part for assertion keys.
    async fn purge_assertion_keys(&self, now: i64) -> Result<(), StoreError> {
        let _: i64 = ASSERTION_KEY_SCRIPTS
            .1
            .key(self.assertion_keys_key())
            .arg(now)
            .invoke_async(&mut self.con())
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl KeyStore for RedisStore {
    async fn publish_assertion_key(&self, key: &PublishedKey) -> Result<(), StoreError> {
        check_published_key(key)?;
        let _: i64 = ASSERTION_KEY_SCRIPTS
            .0
            .key(self.assertion_keys_key())
            .arg(&key.kid)
            .arg(&key.jwk)
            .arg(key.until)
            .arg(key.until.saturating_add(BACKSTOP_SECS))
            .invoke_async(&mut self.con())
            .await?;
        Ok(())
    }

    async fn published_assertion_keys(&self, now: i64) -> Result<Vec<PublishedKey>, StoreError> {
        let all: Vec<(String, String)> = ::redis::cmd("HGETALL")
            .arg(self.assertion_keys_key())
            .query_async(&mut self.con())
            .await?;
        let mut jwks: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        let mut untils: Vec<(&str, i64)> = Vec::new();
        for (field, value) in &all {
            if let Some(kid) = field.strip_prefix("j:") {
                jwks.insert(kid, value);
            } else if let Some(kid) = field.strip_prefix("u:") {
                let until = value
                    .parse::<i64>()
                    .map_err(|_| StoreError::Corrupt("stored assertion key"))?;
                untils.push((kid, until));
            }
        }
        let mut out: Vec<PublishedKey> = untils
            .into_iter()
            .filter(|(_, until)| *until > now)
            .map(|(kid, until)| {
                let jwk = jwks.get(kid).ok_or(StoreError::Corrupt("stored assertion key"))?;
                Ok(PublishedKey {
                    kid: kid.to_string(),
                    jwk: (*jwk).to_string(),
                    until,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by(|a, b| a.kid.cmp(&b.kid));
        Ok(out)
    }
}

#[async_trait::async_trait]
impl TierStore for RedisStore {
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let expiry = self.expiry_index();
        let cutoff = format!("({}", now.saturating_sub(PURGE_GRACE_SECS));
        let mut purged = 0u64;
        loop {
            let ids: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(&expiry)
                .arg("-inf")
                .arg(&cutoff)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut self.con())
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = ::redis::pipe();
            for id in &ids {
                pipe.cmd("HGET").arg(self.session_key(id)).arg("rec");
            }
            let recs: Vec<Option<String>> = pipe.query_async(&mut self.con()).await?;
            for (id, rec) in ids.iter().zip(recs) {
                let deleted: i64 = match rec {
                    Some(rec) => {
                        let w: SessionWire = decode(&rec, "stored session")?;
                        let (sso, has_sid) = self.sso_index_of(&w);
                        self.scripts
                            .delete_session
                            .key(self.session_key(id))
                            .key(self.user_index(&w.tenant, &w.subject))
                            .key(self.tenant_index(&w.tenant))
                            .key(sso)
                            .key(&expiry)
                            .arg(id)
                            .arg(has_sid)
                            .invoke_async(&mut self.con())
                            .await?
                    }
                    None => {
                        let _: i64 = ::redis::cmd("ZREM")
                            .arg(&expiry)
                            .arg(id)
                            .query_async(&mut self.con())
                            .await?;
                        0
                    }
                };
                purged += u64::try_from(deleted).unwrap_or(0);
            }
        }
        self.purge_assertion_keys(now).await?;
        Ok(purged)
    }
}
