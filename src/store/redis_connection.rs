//! How the Redis store reaches Redis as users run it: one node, a master found through
//! Sentinel, or a Cluster, each with or without TLS, all behind [`RedisConnection`], which
//! implements the crate's `ConnectionLike` so commands, pipelines and scripts work the same
//! in every mode.
//!
//! Owns the store URL forms for Redis and their parsing:
//! - `redis://[user:password@]host[:port][/db]` and `rediss://...` (TLS): one node, through
//!   a [`ConnectionManager`] that reconnects on its own;
//! - `redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>` and
//!   `rediss+sentinel://...` (TLS to the sentinels and the master): the sentinels name the
//!   master; the connection asks them again when they announce a new one
//!   (`+switch-master`) or the master is lost or refuses writes, never reconnecting to an
//!   address they have not named;
//! - `redis+cluster://[user:password@]host:port[,host:port...]` and `rediss+cluster://...`:
//!   the crate's async Cluster connection, which follows slots and redirections.
//!
//! [`RedisSubscriber`] opens the event bus's pub/sub connections to the same Redis: the
//! node, the Cluster node serving the channel's slot, or the master the sentinels name.
//!
//! The user and password in the URL authenticate to the data nodes (the master, every
//! Cluster node), unless a tier's ACL user replaces them; sentinels are reached without
//! credentials. TLS trusts the webpki roots, or only the PEM CA file given as
//! `?ca=<path>` (percent-encoded). Errors never repeat the URL: it may hold a password.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use super::StoreError;

/// Time to connect, and to wait for one reply, before a call fails as unavailable (the
/// gateway then fails closed quickly instead of queueing requests behind a lost Redis).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the sentinels may take to name the master.
const SENTINEL_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const SENTINEL_DEFAULT_PORT: u16 = 26379;
const REDIS_DEFAULT_PORT: u16 = 6379;

/// How the nodes of a store URL are arranged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One node.
    Single,
    /// A master named by sentinels.
    Sentinel { master: String },
    /// A Redis Cluster.
    Cluster,
}

/// A parsed Redis store URL. No `Debug`: it holds the password.
#[derive(Clone)]
pub struct RedisTarget {
    topology: Topology,
    tls: bool,
    /// Single node: the URL as the crate reads it, without the options handled here.
    single_url: String,
    /// Sentinel (the sentinels) or Cluster (the seed nodes).
    nodes: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<String>,
    /// `?ca=`: the only CA trusted, instead of the webpki roots.
    ca_file: Option<String>,
}

fn invalid(what: &str) -> StoreError {
    StoreError::Invalid(format!("redis URL: {what}"))
}

impl RedisTarget {
    /// Parses a store URL of one of the forms in the module docs.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let (tls, topology_name) = match scheme {
            "redis" => (false, "single"),
            "rediss" => (true, "single"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            _ => {
                return Err(invalid(
                    "unknown scheme (expected redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster)",
                ));
            }
        };
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let mut ca_file = None;
        let mut passed_on = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", path)) => {
                    let path = percent_encoding::percent_decode_str(path)
                        .decode_utf8()
                        .map_err(|_| invalid("ca= is not UTF-8"))?;
                    if path.is_empty() {
                        return Err(invalid("ca= needs the path of a PEM file"));
                    }
                    ca_file = Some(path.into_owned());
                }
                _ => passed_on.push(pair),
            }
        }
        if ca_file.is_some() && !tls {
            return Err(invalid(
                "ca= needs TLS (rediss://, rediss+sentinel:// or rediss+cluster://)",
            ));
        }
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if topology_name == "single" {
            let mut single_url = format!("{scheme}://{rest}");
            if !passed_on.is_empty() {
                single_url.push('?');
                single_url.push_str(&passed_on.join("&"));
            }
            if let Some(f) = fragment {
                single_url.push('#');
                single_url.push_str(f);
            }
            let info = single_url
                .as_str()
                .into_connection_info()
                .map_err(|_| invalid("not a Redis URL"))?;
            return Ok(RedisTarget {
                topology: Topology::Single,
                tls,
                username: info.redis_settings().username().map(str::to_string),
                password: info.redis_settings().password().map(str::to_string),
                single_url,
                nodes: Vec::new(),
                ca_file,
            });
        }
        if !passed_on.is_empty() || fragment.is_some() {
            return Err(invalid("sentinel and cluster URLs take no option but ca="));
        }
        let (username, password) = match userinfo {
            Some(u) => {
                let info = format!("redis://{u}@localhost/")
                    .as_str()
                    .into_connection_info()
                    .map_err(|_| invalid("user or password"))?;
                let s = info.redis_settings();
                (s.username().map(str::to_string), s.password().map(str::to_string))
            }
            None => (None, None),
        };
        let default_port = if topology_name == "sentinel" {
            SENTINEL_DEFAULT_PORT
        } else {
            REDIS_DEFAULT_PORT
        };
        let nodes = hosts
            .split(',')
            .map(|h| parse_host(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        let topology = if topology_name == "sentinel" {
            let master = path.trim_end_matches('/');
            if master.is_empty() || master.contains('/') {
                return Err(invalid("a sentinel URL ends in /<master-name>"));
            }
            Topology::Sentinel {
                master: master.to_string(),
            }
        } else {
            if !path.is_empty() {
                return Err(invalid("a cluster URL has no path (a Cluster has only database 0)"));
            }
            Topology::Cluster
        };
        Ok(RedisTarget {
            topology,
            tls,
            single_url: String::new(),
            nodes,
            username,
            password,
            ca_file,
        })
    }

    /// The arrangement of the nodes.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The user and password to connect as: `auth` when given, else the URL's.
    fn credentials<'a>(&'a self, auth: Option<(&'a str, &'a str)>) -> (Option<&'a str>, Option<&'a str>) {
        match auth {
            Some((u, p)) => (Some(u), Some(p)),
            None => (self.username.as_deref(), self.password.as_deref()),
        }
    }

    /// The `ca=` file as the crate takes it, read now.
    fn certs(&self) -> Result<Option<TlsCertificates>, StoreError> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        let pem = std::fs::read(path)
            .map_err(|e| StoreError::Invalid(format!("redis URL: cannot read the ca= file ({})", e.kind())))?;
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// A client of one data node (`url` without credentials), as `auth` or the URL's user.
    fn node_client(&self, url: &str, auth: Option<(&str, &str)>) -> Result<Client, StoreError> {
        let (username, password) = self.credentials(auth);
        let mut info = url.into_connection_info().map_err(|_| invalid("not a Redis URL"))?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = username {
            settings = settings.set_username(u);
        }
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        info = info.set_redis_settings(settings);
        match self.certs()? {
            Some(certs) => Client::build_with_tls(info, certs),
            None => Client::open(info),
        }
        .map_err(|_| invalid("client set-up (with ca=: is the file a PEM certificate?)"))
    }

    /// The URL of each Cluster seed node, without credentials.
    fn seed_urls(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.nodes
            .iter()
            .map(|(host, port)| format!("{scheme}://{}:{port}/", bracket(host)))
            .collect()
    }

    /// The crate's client of the sentinels, naming the master `master`.
    fn sentinel_client(&self, master: &str, auth: Option<(&str, &str)>) -> Result<SentinelClient, StoreError> {
        let (username, password) = self.credentials(auth);
        let sentinels = self.nodes.iter().map(|(host, port)| {
            if self.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        });
        let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
            .map_err(|_| invalid("sentinel set-up"))?;
        if let Some(u) = username {
            builder = builder.set_client_to_redis_username(u);
        }
        if let Some(p) = password {
            builder = builder.set_client_to_redis_password(p);
        }
        if self.tls {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        }
        if let Some(certs) = self.certs()? {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
        builder
            .build()
            .map_err(|_| invalid("sentinel set-up (with ca=: is the file a PEM certificate?)"))
    }

    /// Connects, as the URL's user or as `auth` (a Redis ACL user and password) when given.
    pub async fn connect(&self, auth: Option<(&str, &str)>) -> Result<RedisConnection, StoreError> {
        match &self.topology {
            Topology::Single => {
                let client = self.node_client(&self.single_url, auth)?;
                let manager = ConnectionManager::new_with_config(client, manager_config()).await?;
                Ok(RedisConnection::Single(manager))
            }
            Topology::Cluster => {
                let (username, password) = self.credentials(auth);
                let mut builder = ClusterClient::builder(self.seed_urls())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(3);
                if let Some(u) = username {
                    builder = builder.username(u);
                }
                if let Some(p) = password {
                    builder = builder.password(p);
                }
                if self.tls {
                    builder = builder.tls(TlsMode::Secure);
                }
                if let Some(certs) = self.certs()? {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|_| invalid("cluster set-up"))?;
                Ok(RedisConnection::Cluster(client.get_async_connection().await?))
            }
            Topology::Sentinel { master } => {
                let sentinel = Arc::new(SentinelMaster {
                    master_name: master.clone(),
                    sentinels: tokio::sync::Mutex::new(Lookup {
                        client: self.sentinel_client(master, auth)?,
                        failed_at: None,
                    }),
                    current: RwLock::new(None),
                    switches: AtomicU64::new(0),
                });
                // Fails now, not at the first request, when no sentinel names a master.
                sentinel.master().await?;
                tokio::spawn(watch_switches(Arc::downgrade(&sentinel)));
                Ok(RedisConnection::Sentinel(sentinel))
            }
        }
    }

    /// What opens pub/sub connections to this Redis, as `auth` or the URL's user. Connects
    /// nothing yet.
    pub fn subscriber(&self, auth: Option<(&str, &str)>) -> Result<RedisSubscriber, StoreError> {
        match &self.topology {
            Topology::Single => Ok(RedisSubscriber::Node(self.node_client(&self.single_url, auth)?)),
            Topology::Cluster => {
                let (username, password) = self.credentials(auth);
                Ok(RedisSubscriber::Cluster {
                    seeds: self
                        .seed_urls()
                        .iter()
                        .map(|url| self.node_client(url, auth))
                        .collect::<Result<_, _>>()?,
                    scheme: if self.tls { "rediss" } else { "redis" },
                    target: Box::new(self.clone()),
                    username: username.map(str::to_string),
                    password: password.map(str::to_string),
                })
            }
            Topology::Sentinel { master } => Ok(RedisSubscriber::Sentinel(Box::new(tokio::sync::Mutex::new(
                self.sentinel_client(master, auth)?,
            )))),
        }
    }
}

/// Opens pub/sub connections: to one node; on a Cluster, to the node serving the
/// channel's slot, where the Cluster connection sends `PUBLISH` (a message reaches every
/// node, but `PUBLISH` counts only the subscribers of the node it ran on, and the event
/// bus waits for that many acknowledgements); behind Sentinel, to the master the
/// sentinels name at that moment (so a subscription lost in a failover comes back on the
/// new master).
pub enum RedisSubscriber {
    /// One node.
    Node(Client),
    /// A Cluster: its seed nodes and how to reach any node.
    Cluster {
        seeds: Vec<Client>,
        /// `redis` or `rediss`.
        scheme: &'static str,
        /// Builds the client of a node from its URL.
        target: Box<RedisTarget>,
        username: Option<String>,
        password: Option<String>,
    },
    /// The sentinels, asked at each subscription.
    Sentinel(Box<tokio::sync::Mutex<SentinelClient>>),
}

impl RedisSubscriber {
    /// A new pub/sub connection for `channel` (not yet subscribed).
    pub async fn get_async_pubsub_for(&self, channel: &str) -> RedisResult<PubSub> {
        match self {
            RedisSubscriber::Node(client) => client.get_async_pubsub().await,
            RedisSubscriber::Cluster {
                seeds,
                scheme,
                target,
                username,
                password,
            } => {
                let mut last = RedisError::from((ErrorKind::Io, "no cluster node answered"));
                for seed in seeds {
                    match slot_owner(seed, channel).await {
                        Ok((host, port)) => {
                            let url = format!("{scheme}://{}:{port}/", bracket(&host));
                            let auth = username.as_deref().zip(password.as_deref());
                            let client = target
                                .node_client(&url, auth)
                                .map_err(|_| RedisError::from((ErrorKind::Io, "cluster node address")))?;
                            return client.get_async_pubsub().await;
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            RedisSubscriber::Sentinel(sentinels) => {
                let client = {
                    let mut sentinels = sentinels.lock().await;
                    tokio::time::timeout(SENTINEL_LOOKUP_TIMEOUT, sentinels.async_get_client())
                        .await
                        .map_err(|_| RedisError::from((ErrorKind::Io, "sentinel lookup timed out")))??
                };
                client.get_async_pubsub().await
            }
        }
    }
}

/// The address of the master serving `key`'s slot, asked of `seed`.
async fn slot_owner(seed: &Client, key: &str) -> RedisResult<(String, u16)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut con = seed.get_multiplexed_async_connection_with_config(&config).await?;
    let slot: i64 = ::redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut con)
        .await?;
    let ranges: Vec<Vec<Value>> = ::redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut con).await?;
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        if let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = range.as_slice()
            && (*start..=*end).contains(&slot)
            && let [Value::BulkString(host), Value::Int(port), ..] = master.as_slice()
        {
            let host = String::from_utf8(host.clone())
                .map_err(|_| RedisError::from((ErrorKind::Parse, "cluster node host")))?;
            let port = u16::try_from(*port).map_err(|_| RedisError::from((ErrorKind::Parse, "cluster node port")))?;
            return Ok((host, port));
        }
    }
    Err(RedisError::from((ErrorKind::Io, "no node serves the channel's slot")))
}

/// `host[:port]` or `[v6]:port`, as one node of a sentinel or cluster URL.
fn parse_host(h: &str, default_port: u16) -> Result<(String, u16), StoreError> {
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid("host"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(invalid("host")),
        }
    } else {
        match h.split_once(':') {
            Some((host, p)) => (host, Some(p)),
            None => (h, None),
        }
    };
    if host.is_empty() || host.contains(['@', '/', '?', '#', '[', ']', ' ']) {
        return Err(invalid("host (expected host:port, comma-separated)"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| invalid("port"))?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

/// A host as it goes into a URL (IPv6 addresses in brackets).
fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

/// A connection to Redis in any of the supported arrangements; cheap to clone (clones
/// share the underlying connections).
#[derive(Clone)]
pub enum RedisConnection {
    /// One node, reconnecting on its own.
    Single(ConnectionManager),
    /// The master the sentinels name, asked again after a failover.
    Sentinel(Arc<SentinelMaster>),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// True for a Cluster, whose multi-key scripts need their keys in one hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
            RedisConnection::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move { s.run(|mut con| async move { con.req_packed_command(cmd).await }).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move {
                    s.run(|mut con| async move { con.req_packed_commands(pipeline, offset, count).await })
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
            RedisConnection::Sentinel(_) => 0,
        }
    }
}

/// The master the sentinels name, with one multiplexed connection to it. The connection
/// is dropped when the sentinels announce a new master (`+switch-master`), or when it is
/// lost, times out or meets a replica (`READONLY`, `MASTERDOWN`); the next call then asks
/// the sentinels again. No call ever reconnects to an address they have not just named,
/// and writes stop going to a demoted master as soon as the switch is announced (Redis
/// takes about ten seconds more to demote it, and would drop what it took meanwhile).
pub struct SentinelMaster {
    master_name: String,
    sentinels: tokio::sync::Mutex<Lookup>,
    current: RwLock<Option<Arc<MultiplexedConnection>>>,
    /// Switches announced so far.
    switches: AtomicU64,
}

/// Connects to the master the sentinels name now.
async fn connect_to_master(sentinels: &mut SentinelClient) -> RedisResult<MultiplexedConnection> {
    let client = tokio::time::timeout(SENTINEL_LOOKUP_TIMEOUT, sentinels.async_get_client())
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "sentinel lookup timed out")))??;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// Asking the sentinels, one call at a time.
struct Lookup {
    client: SentinelClient,
    /// When the last lookup failed: calls queued behind it fail at once for a moment
    /// instead of each waiting out a lookup of its own while Redis is unreachable.
    failed_at: Option<Instant>,
}

/// How long a failed lookup answers for the calls queued behind it.
const LOOKUP_BACKOFF: Duration = Duration::from_millis(250);

impl SentinelMaster {
    fn cached(&self) -> Option<Arc<MultiplexedConnection>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The connection to the current master, asking the sentinels when there is none.
    async fn master(&self) -> RedisResult<Arc<MultiplexedConnection>> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut lookup = self.sentinels.lock().await;
        // Another call may have asked while this one waited for the lock.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        if lookup.failed_at.is_some_and(|t| t.elapsed() < LOOKUP_BACKOFF) {
            return Err(RedisError::from((ErrorKind::Io, "no master named by the sentinels")));
        }
        // A switch announced during a lookup may have been answered with the old master:
        // ask again (once) rather than keep it.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let switches = self.switches.load(Ordering::SeqCst);
            let con = match connect_to_master(&mut lookup.client).await {
                Ok(con) => Arc::new(con),
                Err(e) => {
                    lookup.failed_at = Some(Instant::now());
                    return Err(e);
                }
            };
            lookup.failed_at = None;
            if self.switches.load(Ordering::SeqCst) != switches && attempts < 2 {
                continue;
            }
            if let Ok(mut current) = self.current.write() {
                *current = Some(Arc::clone(&con));
            }
            return Ok(con);
        }
    }

    /// Drops the current connection, whichever it is: the sentinels named a new master.
    fn forget_current(&self) {
        self.switches.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
    }

    /// Drops `con` if it is still the current connection.
    fn forget(&self, con: &Arc<MultiplexedConnection>) {
        if let Ok(mut current) = self.current.write()
            && current.as_ref().is_some_and(|c| Arc::ptr_eq(c, con))
        {
            *current = None;
        }
    }

    /// Runs `call` on the master. A call a replica refused (so it did nothing) is run once
    /// more on the master the sentinels name now; a call on a lost connection is not (it
    /// may have run), but the next call finds the new master.
    async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let con = self.master().await?;
        match call((*con).clone()).await {
            Err(e) if refused_by_replica(&e) => {
                self.forget(&con);
                let con = self.master().await?;
                let result = call((*con).clone()).await;
                if let Err(e) = &result
                    && master_lost(e)
                {
                    self.forget(&con);
                }
                result
            }
            Err(e) => {
                if master_lost(&e) {
                    self.forget(&con);
                }
                Err(e)
            }
            ok => ok,
        }
    }
}

/// Listens to a sentinel for `+switch-master` of our master and drops the connection to
/// the old one at once. Resubscribes (to whichever sentinel answers) when the subscription
/// is lost; ends once the store is gone.
async fn watch_switches(master: Weak<SentinelMaster>) {
    use futures_util::StreamExt;
    loop {
        let client = {
            let Some(m) = master.upgrade() else { return };
            let mut lookup = m.sentinels.lock().await;
            tokio::time::timeout(SENTINEL_LOOKUP_TIMEOUT, lookup.client.async_get_sentinel_client()).await
        };
        if let Ok(Ok(client)) = client
            && let Ok(Ok(mut pubsub)) = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await
            && pubsub.subscribe("+switch-master").await.is_ok()
        {
            // A switch announced while there was no subscription is caught here.
            match master.upgrade() {
                Some(m) => m.forget_current(),
                None => return,
            }
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(m) = master.upgrade() else { return };
                // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
                let payload: String = msg.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(m.master_name.as_str()) {
                    m.forget_current();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The node is no longer (or not yet) a writable master: nothing ran.
fn refused_by_replica(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    )
}

/// The connection cannot be trusted to reach the master any more.
fn master_lost(e: &RedisError) -> bool {
    refused_by_replica(e)
        || e.is_unrecoverable_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_io_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!(t.topology(), &Topology::Single);
        assert!(!t.tls);
        let t = RedisTarget::parse("rediss://u:p%40ss@redis.example:6380/?ca=/etc/ca%20x.pem").unwrap();
        assert!(t.tls);
        assert_eq!(t.single_url, "rediss://u:p%40ss@redis.example:6380/");
        assert_eq!(t.ca_file.as_deref(), Some("/etc/ca x.pem"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));

        let t = RedisTarget::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster").unwrap();
        assert_eq!(
            t.topology(),
            &Topology::Sentinel {
                master: "mymaster".into()
            }
        );
        assert_eq!(
            t.nodes,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("10.0.0.2".to_string(), 26379),
                ("::1".to_string(), 5000)
            ]
        );
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(t.username, None);

        let t = RedisTarget::parse("rediss+cluster://gw:s3cret@a:7000,b:7001?ca=/ca.pem").unwrap();
        assert_eq!(t.topology(), &Topology::Cluster);
        assert!(t.tls);
        assert_eq!(t.nodes, vec![("a".to_string(), 7000), ("b".to_string(), 7001)]);
        assert_eq!(t.username.as_deref(), Some("gw"));
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for url in [
            "mysql://u:hunter2@db",
            "redis+sentinel://u:hunter2@h:1",
            "redis+sentinel://u:hunter2@h:1/a/b",
            "redis+cluster://u:hunter2@h:1/0",
            "redis+cluster://u:hunter2@h:notaport",
            "redis+cluster://u:hunter2@h:1?protocol=resp3",
            "redis+cluster://u:hunter2@,h:1",
            "redis://u:hunter2@h:1/?ca=/ca.pem",
            "rediss://u:hunter2@h:1/?ca=",
            "redis://u:hunter2@h:1/notadb",
        ] {
            let err = RedisTarget::parse(url).err().unwrap_or_else(|| panic!("{url} parsed"));
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(matches!(err, StoreError::Invalid(_)), "{url}: {text}");
        }
    }
}
