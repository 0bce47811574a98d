//! Header hygiene between the client and the upstream.
//!
//! Owns which client request headers may reach an upstream (hop-by-hop, spoofed identity,
//! gateway-internal and routing-override headers removed; `Forwarded` / `X-Forwarded-*`
//! rewritten; gateway cookies hidden) and which upstream response headers may reach the
//! client (hop-by-hop, gateway cookies, echoed gateway headers removed).
//!
//! Pure functions over `http::HeaderMap`: no I/O, no clock, no configuration lookups; the
//! caller says what it knows about the connection in [`ClientContext`]. This module must not
//! add the identity assertion or the `X-Portcullis-*` convenience headers (the forwarder
//! adds them after [`sanitize_request`]), and it does not judge framing (`Content-Length`,
//! Host validity): hyper and the router have done that before it runs.
//!
//! It runs on every proxied request, so the common path allocates only the new values of
//! the rewritten forwarding headers: names are compared as bytes in one scan of the map,
//! and a list of names to remove is only built when something matched.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{self, GetAll, HeaderMap, HeaderName, HeaderValue};

// Names built at compile time: `HeaderName::from_static` at run time re-validates the
// name on every call, and these are used on every proxied request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the gateway knows about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientContext<'a> {
    /// Address of the TCP peer; the only client address the gateway can vouch for.
    pub peer: IpAddr,
    /// peer is one of the configured trusted proxies
    pub peer_trusted: bool,
    /// "https" when the client connection is TLS, "http" otherwise
    pub proto: &'static str,
    /// Host the request was routed by, as the client sent it (may include :port), already validated
    pub host: &'a str,
    /// The connection's cache of the values the gateway vouches for on its own.
    pub cache: Option<&'a ForwardingCache>,
}

/// The forwarding header values the gateway vouches for on its own (for a peer that is not
/// a trusted proxy). They depend only on the connection and the host, which a client
/// hardly ever changes on one connection, so they are built on its first request and
/// shared by the next ones: cloning a `HeaderValue` only bumps a reference count.
#[derive(Debug, Default)]
pub struct ForwardingCache {
    built: std::sync::Mutex<Option<Vouched>>,
}

/// See [`ForwardingCache`].
#[derive(Debug, Clone)]
struct Vouched {
    proto: &'static str,
    /// The host they were built for (its own copy: a slice of the request's bytes would
    /// keep hyper's read buffer alive).
    host: Option<HeaderValue>,
    for_value: Option<HeaderValue>,
    forwarded_value: Option<HeaderValue>,
}

impl ForwardingCache {
    /// The values for `host` and `proto`, built by `build` unless the last request had
    /// the same ones.
    fn get(&self, host: Option<&str>, proto: &'static str, build: impl FnOnce() -> Vouched) -> Vouched {
        let mut built = self.built.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match built.as_ref() {
            Some(v) if v.proto == proto && v.host.as_ref().map(HeaderValue::as_bytes) == host.map(str::as_bytes) => {
                v.clone()
            }
            _ => {
                let v = build();
                *built = Some(v.clone());
                v
            }
        }
    }
}

/// Client-sent values of `Forwarded` / `X-Forwarded-*` are believed only from these
/// proxies. A dual-stack listener reports IPv4 clients as IPv4-mapped IPv6
/// (`::ffff:10.0.0.1`); they compare as IPv4 so `10.0.0.0/8` still matches.
pub fn is_trusted_proxy(peer: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let canonical = peer.to_canonical();
    trusted
        .iter()
        .any(|net| net.contains(&canonical) || net.contains(&peer))
}

/// The client's address for login history and throttling: the socket peer, unless the
/// peer is a trusted proxy, in which case the right-most `X-Forwarded-For` entry that is
/// not itself a trusted proxy. An unparsable entry stops the walk (the peer is used), so
/// a client can never choose its own address.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[ipnet::IpNet]) -> IpAddr {
    if !is_trusted_proxy(peer, trusted) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else { return peer };
        hops.extend(text.split(',').map(str::trim).filter(|h| !h.is_empty()));
    }
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { return peer };
        if !is_trusted_proxy(ip, trusted) {
            return ip.to_canonical();
        }
    }
    peer
}

/// Prepares client request headers for the upstream: the upstream must see only what the
/// gateway vouches for, so that identity, client address, scheme, host and the route it
/// authorised cannot be forged by the client. `websocket_upgrade` is the result of
/// [`is_websocket_upgrade`] on the original headers: the upgrade is re-declared afterwards
/// because `Connection` and `Upgrade` are hop-by-hop.
pub fn sanitize_request(headers: &mut HeaderMap, websocket_upgrade: bool, ctx: &ClientContext<'_>) {
    remove_connection_options(headers, |token| {
        // Host was routed on and must stay; the handshake headers belong to the upgrade.
        token.eq_ignore_ascii_case("host")
            || (websocket_upgrade && starts_with_ignore_case(token.as_bytes(), b"sec-websocket-"))
    });
    // One scan over the names for both rules: a removal by key hashes the name each time.
    remove_where(headers, |name| {
        is_hop_by_hop(name, false) || is_forbidden_request_header(name)
    });
    strip_gateway_cookies(headers);
    rewrite_forwarding(headers, ctx);
    if websocket_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Prepares upstream response headers for the client: hop-by-hop headers describe the
/// upstream connection, not the client's; an upstream must neither set (or overwrite) a
/// gateway cookie nor echo a gateway header such as the identity assertion back to the
/// client. For a `101 Switching Protocols` (`switching_protocols`) the upstream's
/// `Connection` and `Upgrade` are the answer to the handshake and are kept as sent.
pub fn sanitize_response(headers: &mut HeaderMap, switching_protocols: bool) {
    remove_connection_options(headers, |token| {
        switching_protocols && (token.eq_ignore_ascii_case("upgrade") || token.eq_ignore_ascii_case("connection"))
    });
    remove_where(headers, |name| {
        is_hop_by_hop(name, switching_protocols) || has_gateway_header_prefix(name.as_bytes())
    });
    strip_gateway_set_cookies(headers);
}

/// true when the request asks for a WebSocket upgrade (HTTP/1.1: Connection contains token
/// "upgrade" and Upgrade is "websocket", case-insensitive). Any other Upgrade (h2c, ...) is
/// not: only WebSocket is tunnelled, so an `h2c` upgrade cannot open a raw channel to the
/// upstream that bypasses per-request authorisation. Several `Upgrade` lines are refused too.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrade = headers.get_all(header::UPGRADE).iter();
    let websocket = match (upgrade.next(), upgrade.next()) {
        (Some(value), None) => value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    websocket
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| list_items(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
}

/// Gateway cookie names: "__Host-portcullis-..." and "portcullis-..." (case-insensitive
/// prefix match). Such cookies carry gateway sessions and CSRF state: an upstream must never
/// read them nor set them.
pub fn is_gateway_cookie_name(name: &str) -> bool {
    is_gateway_cookie_name_bytes(name.as_bytes())
}

fn is_gateway_cookie_name_bytes(name: &[u8]) -> bool {
    starts_with_ignore_case(name, b"__host-portcullis-") || starts_with_ignore_case(name, b"portcullis-")
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// `HeaderName`s are lowercase already, so a plain byte prefix test suffices.
fn has_gateway_header_prefix(name: &[u8]) -> bool {
    name.starts_with(b"portcullis-") || name.starts_with(b"x-portcullis-")
}

/// Items of a comma-separated header list, trimmed, empty ones skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// Removes every header named by a `Connection` option (RFC 9110 §7.6.1) except those
/// `keep` protects. `Connection` itself is left to [`is_hop_by_hop`].
fn remove_connection_options(headers: &mut HeaderMap, keep: impl Fn(&str) -> bool) {
    // Cloning a HeaderValue only bumps a reference count; the clones free the map for
    // removal. A second `Connection` line is rare, so the Vec normally stays unallocated.
    let mut lines = headers.get_all(header::CONNECTION).iter();
    let Some(first) = lines.next().cloned() else {
        return;
    };
    let rest: Vec<HeaderValue> = lines.cloned().collect();
    for line in std::iter::once(&first).chain(rest.iter()) {
        for token in list_items(line.as_bytes()) {
            // A token that is not a valid header name cannot name a header: skip it.
            let Ok(token) = std::str::from_utf8(token) else {
                continue;
            };
            if !keep(token) {
                // `&str` keys are parsed case-insensitively on the stack (no allocation).
                headers.remove(token);
            }
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1 and their legacy forms) describe one connection
/// and never cross the gateway. `Expect` is one too: hyper answers `100-continue` itself.
/// `HTTP2-Settings` belongs to an `h2c` upgrade, which is never forwarded. `Connection`
/// and `Upgrade` are kept only for a `101` answer to a WebSocket handshake (`keep_upgrade`).
fn is_hop_by_hop(name: &str, keep_upgrade: bool) -> bool {
    match name {
        "connection" | "upgrade" => !keep_upgrade,
        "te"
        | "trailer"
        | "transfer-encoding"
        | "proxy-authorization"
        | "proxy-authenticate"
        | "expect"
        | "keep-alive"
        | "proxy-connection"
        | "http2-settings" => true,
        _ => false,
    }
}

/// Removes every header whose (lowercase) name matches `forbidden`, in one scan. The list
/// of names is allocated only when one matched, which ordinary traffic never does.
fn remove_where(headers: &mut HeaderMap, forbidden: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if forbidden(name.as_str()) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Request headers that never reach an upstream, whoever sent them.
fn is_forbidden_request_header(name: &str) -> bool {
    let bytes = name.as_bytes();
    // CGI/WSGI/PHP map '_' and '-' to the same variable: `X_Forwarded_User` would pass as
    // `X-Forwarded-User` behind this filter.
    bytes.contains(&b'_')
        || has_gateway_header_prefix(bytes)
        || bytes.starts_with(b"x-auth-request-")
        || matches!(
            name,
            // Identity asserted by other authenticating proxies (oauth2-proxy, Apache,
            // Grafana auth proxy, ...): only the gateway's own assertion may say who it is.
            "x-forwarded-user"
                | "x-forwarded-email"
                | "x-forwarded-groups"
                | "x-forwarded-preferred-username"
                | "x-forwarded-access-token"
                | "remote-user"
                | "x-remote-user"
                | "x-remote-group"
                | "x-remote-groups"
                | "x-remote-email"
                | "x-remote-name"
                | "x-user"
                | "x-email"
                | "x-webauth-user"
                | "x-authenticated-user"
                // Client address alternatives: X-Forwarded-For / Forwarded, rewritten
                // below, are the only address headers the upstream gets.
                | "x-real-ip"
                | "x-client-ip"
                | "true-client-ip"
                | "x-cluster-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "x-original-forwarded-for"
                // Scheme and host alternatives: X-Forwarded-Proto / -Host are rewritten.
                | "x-forwarded-ssl"
                | "x-forwarded-scheme"
                | "x-forwarded-protocol"
                | "x-scheme"
                | "x-url-scheme"
                | "front-end-https"
                | "x-forwarded-server"
                | "x-original-host"
                | "x-host"
                // They change which path or method a backend serves, after the gateway
                // authorised another one.
                | "x-original-url"
                | "x-original-uri"
                | "x-rewrite-url"
                | "x-forwarded-uri"
                | "x-forwarded-path"
                | "x-forwarded-prefix"
                | "x-forwarded-port"
                | "x-http-method-override"
                | "x-http-method"
                | "x-method-override"
        )
}

/// Whether one cookie pair (`name=value`, or a nameless value) is a gateway cookie.
/// A pair without '=' is read as a name, and a pair with an empty name (`=portcullis-x=v`)
/// by its value, because browsers send a nameless cookie as its bare value: either way a
/// gateway cookie could be spoofed, so both readings count.
fn is_gateway_cookie_pair(pair: &[u8]) -> bool {
    let mut parts = pair.trim_ascii().splitn(2, |b| *b == b'=');
    let name = parts.next().unwrap_or_default().trim_ascii();
    match parts.next() {
        Some(value) if name.is_empty() => {
            let inner = value.splitn(2, |b| *b == b'=').next().unwrap_or_default();
            is_gateway_cookie_name_bytes(inner.trim_ascii())
        }
        _ => is_gateway_cookie_name_bytes(name),
    }
}

/// Drops gateway cookies from `Cookie` and merges several `Cookie` lines into one (HTTP/2
/// sends one per cookie). A single line without gateway cookies is left untouched.
fn strip_gateway_cookies(headers: &mut HeaderMap) {
    let lines = headers.get_all(header::COOKIE);
    let mut iter = lines.iter();
    let Some(first) = iter.next() else {
        return;
    };
    let several = iter.next().is_some();
    if !several && !first.as_bytes().split(|b| *b == b';').any(is_gateway_cookie_pair) {
        return;
    }
    let kept = || {
        lines
            .iter()
            .flat_map(|line| line.as_bytes().split(|b| *b == b';'))
            .map(<[u8]>::trim_ascii)
            .filter(|pair| !pair.is_empty() && !is_gateway_cookie_pair(pair))
    };
    let (count, len) = kept().fold((0usize, 0usize), |(c, n), pair| (c + 1, n + pair.len()));
    let merged = if count == 0 {
        None
    } else {
        let mut out = Vec::with_capacity(len + 2 * (count - 1));
        for pair in kept() {
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
        // Pieces of valid values are valid; should it ever fail, no cookie is forwarded.
        HeaderValue::try_from(out).ok()
    };
    match merged {
        Some(value) => {
            headers.insert(header::COOKIE, value);
        }
        None => {
            headers.remove(header::COOKIE);
        }
    }
}

/// Drops each `Set-Cookie` that would set a gateway cookie; the others keep their order.
fn strip_gateway_set_cookies(headers: &mut HeaderMap) {
    let is_gateway = |line: &HeaderValue| {
        let pair = line.as_bytes().split(|b| *b == b';').next().unwrap_or_default();
        is_gateway_cookie_pair(pair)
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(is_gateway) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|line| !is_gateway(line))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for line in kept {
        headers.append(header::SET_COOKIE, line);
    }
}

/// The peer address as text, on the stack. `Forwarded` style quotes and brackets IPv6
/// (`"[2001:db8::1]"`, RFC 7239 §6).
#[derive(Clone, Copy)]
struct PeerText {
    buf: [u8; 52],
    len: usize,
}

impl PeerText {
    /// None only if the text did not fit, which no address does: 45 bytes is the longest
    /// IPv6 text, 49 with quotes and brackets.
    fn new(peer: IpAddr, forwarded_style: bool) -> Option<Self> {
        let mut buf = [0u8; 52];
        if let IpAddr::V4(v4) = peer {
            return Some(Self::v4(v4, buf));
        }
        let mut cursor: &mut [u8] = buf.as_mut_slice();
        match peer {
            IpAddr::V6(v6) if forwarded_style => write!(cursor, "\"[{v6}]\""),
            _ => write!(cursor, "{peer}"),
        }
        .ok()?;
        let free = cursor.len();
        let len = buf.len().saturating_sub(free);
        Some(Self { buf, len })
    }

    /// Dotted-quad text written digit by digit: `fmt` costs more than the rest of the
    /// header rewrite, and every proxied request needs it.
    fn v4(v4: std::net::Ipv4Addr, mut buf: [u8; 52]) -> Self {
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                buf[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                buf[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            buf[len] = b'0' + octet % 10;
            len += 1;
        }
        Self { buf, len }
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Joins the non-empty lines of a list header with ", " and appends `tail` as the last
/// element, in one exactly sized allocation. None when no line had an element, so the
/// caller starts a new list.
fn append_to_list(lines: GetAll<'_, HeaderValue>, tail: &[&[u8]]) -> Option<HeaderValue> {
    let kept = || {
        lines
            .iter()
            .map(|line| trim_list(line.as_bytes()))
            .filter(|line| !line.is_empty())
    };
    let (count, len) = kept().fold((0usize, 0usize), |(c, n), line| (c + 1, n + line.len()));
    if count == 0 {
        return None;
    }
    let tail_len: usize = tail.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(len + 2 * count + tail_len);
    for line in kept() {
        out.extend_from_slice(line);
        out.extend_from_slice(b", ");
    }
    for part in tail {
        out.extend_from_slice(part);
    }
    HeaderValue::try_from(out).ok()
}

/// Trims whitespace and stray commas at both ends of a list line.
fn trim_list(line: &[u8]) -> &[u8] {
    let junk = |b: &u8| b.is_ascii_whitespace() || *b == b',';
    let start = line.iter().position(|b| !junk(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !junk(b)).map_or(start, |last| last + 1);
    line.get(start..end).unwrap_or_default()
}

/// Sets a header, or removes it when no valid value could be built: a forwarding header
/// the gateway cannot vouch for is better absent than the client's.
fn set_or_remove(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(value) => {
            headers.insert(name, value);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// The host, if it can be sent as is: visible ASCII only. The router validated it already;
/// this only keeps a bad value from reaching a header.
fn usable_host(host: &str) -> Option<&str> {
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(host)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `value` as an RFC 7239 value: a token as is, anything else (a ':' of a port,
/// IPv6 brackets) as a quoted-string.
fn push_forwarded_value(out: &mut Vec<u8>, value: &[u8]) {
    if value.iter().all(|b| is_tchar(*b)) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn forwarded_value_len(value: &[u8]) -> usize {
    if value.iter().all(|b| is_tchar(*b)) {
        value.len()
    } else {
        let escapes = value.iter().filter(|b| **b == b'"' || **b == b'\\').count();
        value.len() + escapes + 2
    }
}

/// `for=<peer>;proto=<proto>;host=<host>`: the one `Forwarded` element the gateway can vouch
/// for on its own.
fn forwarded_element(peer: &PeerText, proto: &'static str, host: Option<&str>) -> Option<HeaderValue> {
    let host_len = host.map_or(0, |h| ";host=".len() + forwarded_value_len(h.as_bytes()));
    let mut out = Vec::with_capacity("for=".len() + peer.as_bytes().len() + ";proto=".len() + proto.len() + host_len);
    out.extend_from_slice(b"for=");
    out.extend_from_slice(peer.as_bytes());
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        push_forwarded_value(&mut out, host.as_bytes());
    }
    HeaderValue::try_from(out).ok()
}

/// The scheme a trusted proxy reported, if it is one line of exactly http or https.
fn trusted_proto(headers: &HeaderMap) -> Option<&'static str> {
    let mut lines = headers.get_all(X_FORWARDED_PROTO).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let value = line.as_bytes().trim_ascii();
    if value.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if value.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

/// Rewrites `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded`: client-sent values are
/// kept only from a trusted proxy; the gateway always adds the peer it saw.
fn rewrite_forwarding(headers: &mut HeaderMap, ctx: &ClientContext<'_>) {
    let (xff, xfp, xfh) = (X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST);
    let proto = if ctx.proto.eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    };
    let host = usable_host(ctx.host);
    let (for_value, proto_value, host_value, forwarded_value);
    if ctx.peer_trusted {
        let Some((plain_peer, forwarded_peer)) = peer_texts(ctx.peer) else {
            // Unreachable (every address fits); without a peer, vouch for nothing.
            for name in [xff, xfp, xfh, header::FORWARDED] {
                headers.remove(name);
            }
            return;
        };
        let for_peer: [&[u8]; 2] = [b"for=", forwarded_peer.as_bytes()];
        for_value = append_to_list(headers.get_all(&xff), &[plain_peer.as_bytes()])
            .or_else(|| HeaderValue::from_bytes(plain_peer.as_bytes()).ok());
        proto_value = trusted_proto(headers).unwrap_or(proto);
        let mut hosts = headers.get_all(&xfh).iter();
        host_value = match (hosts.next(), hosts.next()) {
            (Some(sent), None) => Some(sent.clone()),
            _ => host_header_value(headers, host),
        };
        forwarded_value = append_to_list(headers.get_all(header::FORWARDED), &for_peer)
            .or_else(|| forwarded_element(&forwarded_peer, proto, host));
    } else {
        let vouched = match ctx.cache {
            Some(cache) => cache.get(host, proto, || vouched(ctx.peer, proto, host)),
            None => vouched(ctx.peer, proto, host),
        };
        for_value = vouched.for_value;
        proto_value = proto;
        host_value = vouched.host;
        forwarded_value = vouched.forwarded_value;
    }
    set_or_remove(headers, xff, for_value);
    headers.insert(xfp, HeaderValue::from_static(proto_value));
    set_or_remove(headers, xfh, host_value);
    set_or_remove(headers, header::FORWARDED, forwarded_value);
}

/// The peer as `X-Forwarded-For` and as `Forwarded` write it.
fn peer_texts(peer: IpAddr) -> Option<(PeerText, PeerText)> {
    let peer = peer.to_canonical();
    let plain = PeerText::new(peer, false)?;
    // IPv4 looks the same in both styles: format it once.
    let forwarded = if peer.is_ipv6() {
        PeerText::new(peer, true)?
    } else {
        plain
    };
    Some((plain, forwarded))
}

/// The values for a peer that is not a trusted proxy: only what the gateway saw itself.
fn vouched(peer: IpAddr, proto: &'static str, host: Option<&str>) -> Vouched {
    let texts = peer_texts(peer);
    Vouched {
        proto,
        host: host.and_then(|h| HeaderValue::from_str(h).ok()),
        for_value: texts.and_then(|(plain, _)| HeaderValue::from_bytes(plain.as_bytes()).ok()),
        forwarded_value: texts.and_then(|(_, fwd)| forwarded_element(&fwd, proto, host)),
    }
}

/// `host` as a header value, sharing the `Host` header's bytes when it is the same text
/// (the HTTP/1.1 case), so no copy is made.
fn host_header_value(headers: &HeaderMap, host: Option<&str>) -> Option<HeaderValue> {
    let host = host?;
    match headers.get(header::HOST) {
        Some(sent) if sent.as_bytes() == host.as_bytes() => Some(sent.clone()),
        _ => HeaderValue::from_str(host).ok(),
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_proxy_forwarded_it() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let stranger: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(client_ip(&xff("8.8.8.8"), stranger, &trusted), stranger);
        assert_eq!(
            client_ip(&xff("8.8.8.8"), proxy, &trusted),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&xff("1.1.1.1, 8.8.8.8, 10.0.0.7"), proxy, &trusted),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&xff("garbage"), proxy, &trusted), proxy);
        assert_eq!(client_ip(&HeaderMap::new(), proxy, &trusted), proxy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

    fn ctx(peer: IpAddr, trusted: bool) -> ClientContext<'static> {
        ClientContext {
            peer,
            peer_trusted: trusted,
            proto: "https",
            host: "acme.example",
            cache: None,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn ipv4_text_matches_the_standard_formatting() {
        let samples = [
            0u32,
            1,
            9,
            10,
            99,
            100,
            255,
            0x0a00_0001,
            0x7f00_0001,
            0xc0a8_6464,
            0xffff_ffff,
            0x0a09_6314,
        ];
        for n in samples.into_iter().chain((0..4096).map(|i| i * 1_048_573)) {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            let text = PeerText::new(ip, false).unwrap();
            assert_eq!(text.as_bytes(), ip.to_string().as_bytes());
            let text = PeerText::new(ip, true).unwrap();
            assert_eq!(
                text.as_bytes(),
                ip.to_string().as_bytes(),
                "IPv4 is not quoted in Forwarded"
            );
        }
    }

    fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    fn one(headers: &HeaderMap, name: &str) -> String {
        let values = all(headers, name);
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values.into_iter().next().unwrap()
    }

    fn sanitized(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = map(pairs);
        sanitize_request(&mut headers, false, &ctx(CLIENT, false));
        headers
    }

    // --- hop-by-hop ---

    #[test]
    fn hop_by_hop_request_headers_are_removed() {
        // A leak would let the client steer the gateway→upstream connection (smuggling).
        let headers = sanitized(&[
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("expect", "100-continue"),
            ("content-length", "5"),
            ("accept", "*/*"),
        ]);
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "http2-settings",
            "proxy-authorization",
            "proxy-authenticate",
            "expect",
        ] {
            assert!(!headers.contains_key(name), "{name} leaked");
        }
        assert_eq!(one(&headers, "content-length"), "5");
        assert_eq!(one(&headers, "accept"), "*/*");
    }

    #[test]
    fn headers_named_in_connection_are_removed_whatever_their_case() {
        let headers = sanitized(&[
            ("connection", "Keep-Alive, X-Foo ,x-BAR,,"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("x-baz", "3"),
        ]);
        assert!(!headers.contains_key("x-foo"));
        assert!(!headers.contains_key("x-bar"));
        assert_eq!(one(&headers, "x-baz"), "3");
    }

    #[test]
    fn tokens_of_every_connection_line_count() {
        let headers = sanitized(&[
            ("connection", "x-one"),
            ("connection", "X-Two"),
            ("x-one", "1"),
            ("x-two", "2"),
        ]);
        assert!(!headers.contains_key("x-one"));
        assert!(!headers.contains_key("x-two"));
        assert!(!headers.contains_key("connection"));
    }

    #[test]
    fn connection_cannot_remove_host() {
        // Host was routed on; the upstream must see the same one.
        let headers = sanitized(&[("connection", "HOST, close"), ("host", "acme.example")]);
        assert_eq!(one(&headers, "host"), "acme.example");
    }

    #[test]
    fn invalid_connection_tokens_are_ignored() {
        let mut headers = map(&[("connection", "bad token(, x-ok"), ("x-ok", "1"), ("accept", "a")]);
        headers.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"caf\xe9, \"quoted\"").unwrap(),
        );
        sanitize_request(&mut headers, false, &ctx(CLIENT, false));
        assert!(!headers.contains_key("x-ok"));
        assert_eq!(one(&headers, "accept"), "a");
    }

    #[test]
    fn connection_option_naming_a_forwarding_header_cannot_keep_the_spoofed_value() {
        // Even listing X-Forwarded-For as hop-by-hop leaves the gateway's own value.
        let headers = sanitized(&[("connection", "x-forwarded-for"), ("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(one(&headers, "x-forwarded-for"), "203.0.113.7");
    }

    // --- WebSocket ---

    #[test]
    fn websocket_upgrade_is_redeclared_exactly() {
        let mut headers = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat"),
            ("keep-alive", "timeout=5"),
        ]);
        assert!(is_websocket_upgrade(&headers));
        sanitize_request(&mut headers, true, &ctx(CLIENT, false));
        assert_eq!(all(&headers, "connection"), ["upgrade"]);
        assert_eq!(all(&headers, "upgrade"), ["websocket"]);
        assert_eq!(one(&headers, "sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(one(&headers, "sec-websocket-version"), "13");
        assert_eq!(one(&headers, "sec-websocket-protocol"), "chat");
        assert!(!headers.contains_key("keep-alive"));
    }

    #[test]
    fn websocket_handshake_headers_survive_connection_options() {
        let mut headers = map(&[
            ("connection", "upgrade, Sec-WebSocket-Key"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        sanitize_request(&mut headers, true, &ctx(CLIENT, false));
        assert_eq!(one(&headers, "sec-websocket-key"), "k");
    }

    #[test]
    fn websocket_upgrade_detection_accepts_valid_forms() {
        assert!(is_websocket_upgrade(&map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(is_websocket_upgrade(&map(&[
            ("connection", "keep-alive, UPGRADE"),
            ("upgrade", " WebSocket ")
        ])));
        assert!(is_websocket_upgrade(&map(&[
            ("connection", "keep-alive"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ])));
    }

    #[test]
    fn other_upgrades_are_not_websocket() {
        // h2c would open a raw HTTP/2 channel past per-request authorisation (SMUG-09).
        for pairs in [
            &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")][..],
            &[("upgrade", "websocket")][..],
            &[("connection", "upgraded"), ("upgrade", "websocket")][..],
            &[("connection", "upgrade"), ("upgrade", "websocket, h2c")][..],
            &[("connection", "upgrade"), ("upgrade", "websocket"), ("upgrade", "h2c")][..],
            &[("connection", "upgrade")][..],
            &[][..],
        ] {
            assert!(!is_websocket_upgrade(&map(pairs)), "{pairs:?}");
        }
    }

    #[test]
    fn h2c_upgrade_is_not_forwarded() {
        let headers = sanitized(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("upgrade"));
        assert!(!headers.contains_key("http2-settings"));
    }

    // --- gateway headers, identity spoofing, routing overrides ---

    #[test]
    fn client_sent_gateway_headers_are_removed() {
        // HDR-01/HDR-04: a forged assertion or tenant must never reach the upstream.
        let headers = sanitized(&[
            ("portcullis-assertion", "eyJhbGciOiJub25lIn0.e30."),
            ("Portcullis-Assertion", "second"),
            ("x-portcullis-user", "admin"),
            ("X-Portcullis-Tenant", "globex"),
            ("x-portcullis-original-path", "/public"),
            ("portcullis-anything", "x"),
            ("x-portcullisfoo", "kept: no dash after the prefix"),
            ("my-portcullis-x", "kept: prefix not at the start"),
        ]);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("portcullis-") || n.starts_with("x-portcullis-")),
            "{names:?}"
        );
        assert!(headers.contains_key("x-portcullisfoo"));
        assert!(headers.contains_key("my-portcullis-x"));
    }

    #[test]
    fn identity_headers_of_other_proxies_are_removed_but_authorization_kept() {
        let names = [
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-preferred-username",
            "x-forwarded-access-token",
            "remote-user",
            "x-remote-user",
            "x-remote-group",
            "x-user",
            "x-email",
            "x-webauth-user",
        ];
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (*n, "admin")).collect();
        pairs.push(("X-Forwarded-User", "duplicate"));
        pairs.push(("authorization", "Bearer app-token"));
        let headers = sanitized(&pairs);
        for name in names {
            assert!(!headers.contains_key(name), "{name} leaked");
        }
        assert_eq!(one(&headers, "authorization"), "Bearer app-token");
    }

    #[test]
    fn every_auth_request_header_is_removed() {
        let headers = sanitized(&[
            ("x-auth-request-user", "admin"),
            ("x-auth-request-email", "a@b"),
            ("x-auth-request-groups", "admins"),
            ("x-auth-request-access-token", "t"),
            ("x-auth-request-preferred-username", "root"),
            ("x-auth-requested", "kept: not the prefix"),
        ]);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "forwarded",
                "x-auth-requested",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
    }

    #[test]
    fn underscore_names_are_removed() {
        // HDR-02: X_Forwarded_User becomes HTTP_X_FORWARDED_USER in CGI/WSGI.
        let headers = sanitized(&[
            ("x_forwarded_user", "admin"),
            ("X_Portcullis_User", "admin"),
            ("remote_user", "admin"),
            ("my_header", "x"),
            ("x-normal-header", "kept"),
        ]);
        assert!(!headers.keys().any(|n| n.as_str().contains('_')));
        assert_eq!(one(&headers, "x-normal-header"), "kept");
    }

    #[test]
    fn routing_and_method_overrides_are_removed_even_from_trusted_proxies() {
        let names = [
            "x-real-ip",
            "x-original-url",
            "x-original-uri",
            "x-rewrite-url",
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x-forwarded-uri",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-forwarded-for",
            "x-client-ip",
            "true-client-ip",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-original-host",
        ];
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (*n, "/admin")).collect();
        let mut headers = map(&pairs);
        sanitize_request(&mut headers, false, &ctx(CLIENT, true));
        for name in names {
            assert!(!headers.contains_key(name), "{name} leaked");
        }
    }

    // --- cookies ---

    #[test]
    fn gateway_cookies_are_removed_and_others_kept_in_order() {
        let headers = sanitized(&[(
            "cookie",
            "a=1; __Host-portcullis-prod=SESSION; b=2; __Host-portcullis-prod-csrf=x; portcullis-pre=y; c=3",
        )]);
        assert_eq!(one(&headers, "cookie"), "a=1; b=2; c=3");
    }

    #[test]
    fn cookie_header_removed_when_only_gateway_cookies() {
        let headers = sanitized(&[("cookie", "__Host-portcullis-prod=S"), ("cookie", "portcullis-x=1")]);
        assert!(!headers.contains_key("cookie"));
    }

    #[test]
    fn several_cookie_lines_are_merged() {
        let headers = sanitized(&[
            ("cookie", "a=1"),
            ("cookie", "__Host-portcullis-staging=S"),
            ("cookie", "b=2; c=3"),
        ]);
        assert_eq!(all(&headers, "cookie"), ["a=1; b=2; c=3"]);
        let headers = sanitized(&[("cookie", "a=1"), ("cookie", "b=2")]);
        assert_eq!(all(&headers, "cookie"), ["a=1; b=2"]);
    }

    #[test]
    fn cookie_spaces_empty_pairs_and_bare_values() {
        let headers = sanitized(&[(
            "cookie",
            " ;  a=1 ;;  __Host-portcullis-prod = S ;flag; portcullis-bare ;  b = 2 ; ;",
        )]);
        assert_eq!(one(&headers, "cookie"), "a=1; flag; b = 2");
    }

    #[test]
    fn gateway_cookie_match_ignores_case_and_catches_nameless_pairs() {
        let headers = sanitized(&[(
            "cookie",
            "__HOST-PORTCULLIS-prod=S; Portcullis-x=1; =portcullis-prod=spoof; = __Host-portcullis-y; keep=me; =plain",
        )]);
        assert_eq!(one(&headers, "cookie"), "keep=me; =plain");
    }

    #[test]
    fn single_cookie_line_without_gateway_cookie_is_untouched() {
        let headers = sanitized(&[("cookie", "a=1;b=2 ;  ; portcullis=not-a-prefix-match")]);
        assert_eq!(one(&headers, "cookie"), "a=1;b=2 ;  ; portcullis=not-a-prefix-match");
    }

    #[test]
    fn gateway_cookie_names() {
        for name in [
            "__Host-portcullis-prod",
            "__host-portcullis-prod-csrf",
            "portcullis-pre",
            "PORTCULLIS-x",
            "portcullis-",
        ] {
            assert!(is_gateway_cookie_name(name), "{name}");
        }
        for name in [
            "",
            "portcullis",
            "__Host-portcullis",
            "__Secure-session",
            "x-portcullis-a",
            "myportcullis-a",
            "__Host-app",
        ] {
            assert!(!is_gateway_cookie_name(name), "{name}");
        }
    }

    // --- forwarding headers ---

    #[test]
    fn untrusted_peer_forwarding_headers_are_replaced() {
        // HDR-06 / TEN-07: spoofed address, scheme and host are overwritten.
        let headers = sanitized(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "globex.example"),
            ("forwarded", "for=10.0.0.1;host=globex.example;proto=http"),
            ("forwarded", "for=10.0.0.9"),
        ]);
        assert_eq!(all(&headers, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(all(&headers, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&headers, "x-forwarded-host"), ["acme.example"]);
        assert_eq!(
            all(&headers, "forwarded"),
            ["for=203.0.113.7;proto=https;host=acme.example"]
        );
    }

    #[test]
    fn forwarding_headers_are_added_when_absent() {
        let headers = sanitized(&[("host", "acme.example")]);
        assert_eq!(one(&headers, "x-forwarded-for"), "203.0.113.7");
        assert_eq!(one(&headers, "x-forwarded-proto"), "https");
        assert_eq!(one(&headers, "x-forwarded-host"), "acme.example");
        assert_eq!(
            one(&headers, "forwarded"),
            "for=203.0.113.7;proto=https;host=acme.example"
        );
    }

    #[test]
    fn trusted_peer_chain_is_kept_and_peer_appended() {
        let mut headers = map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", " 198.51.100.2, 10.0.0.5 ,"),
            ("x-forwarded-for", ""),
        ]);
        let peer = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        sanitize_request(&mut headers, false, &ctx(peer, true));
        assert_eq!(
            all(&headers, "x-forwarded-for"),
            ["198.51.100.1, 198.51.100.2, 10.0.0.5, 10.1.2.3"]
        );
    }

    #[test]
    fn trusted_peer_without_chain_gets_just_the_peer() {
        let mut headers = map(&[("x-forwarded-for", " ")]);
        let peer = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        sanitize_request(&mut headers, false, &ctx(peer, true));
        assert_eq!(one(&headers, "x-forwarded-for"), "10.1.2.3");
        assert_eq!(one(&headers, "forwarded"), "for=10.1.2.3;proto=https;host=acme.example");
    }

    #[test]
    fn trusted_peer_proto_and_host_are_kept_when_valid() {
        let mut headers = map(&[
            ("x-forwarded-proto", " HTTPS "),
            ("x-forwarded-host", "app.example:8443"),
        ]);
        let mut context = ctx(CLIENT, true);
        context.proto = "http";
        sanitize_request(&mut headers, false, &context);
        assert_eq!(one(&headers, "x-forwarded-proto"), "https");
        assert_eq!(one(&headers, "x-forwarded-host"), "app.example:8443");
    }

    #[test]
    fn trusted_peer_invalid_proto_falls_back_to_the_connection() {
        for pairs in [
            &[("x-forwarded-proto", "ftp")][..],
            &[("x-forwarded-proto", "https, http")][..],
            &[("x-forwarded-proto", "https"), ("x-forwarded-proto", "https")][..],
        ] {
            let mut headers = map(pairs);
            let mut context = ctx(CLIENT, true);
            context.proto = "http";
            sanitize_request(&mut headers, false, &context);
            assert_eq!(all(&headers, "x-forwarded-proto"), ["http"], "{pairs:?}");
        }
    }

    #[test]
    fn trusted_peer_duplicate_forwarded_host_is_replaced() {
        let mut headers = map(&[("x-forwarded-host", "a.example"), ("x-forwarded-host", "b.example")]);
        sanitize_request(&mut headers, false, &ctx(CLIENT, true));
        assert_eq!(all(&headers, "x-forwarded-host"), ["acme.example"]);
    }

    #[test]
    fn forwarded_quotes_ipv6_and_host_with_port() {
        let peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let mut headers = HeaderMap::new();
        let context = ClientContext {
            peer,
            peer_trusted: false,
            proto: "http",
            host: "acme.example:8443",
            cache: None,
        };
        sanitize_request(&mut headers, false, &context);
        assert_eq!(
            one(&headers, "forwarded"),
            "for=\"[2001:db8::1]\";proto=http;host=\"acme.example:8443\""
        );
        assert_eq!(one(&headers, "x-forwarded-for"), "2001:db8::1");
        assert_eq!(one(&headers, "x-forwarded-host"), "acme.example:8443");
    }

    #[test]
    fn forwarded_quotes_ipv6_literal_host() {
        let mut headers = HeaderMap::new();
        let context = ClientContext {
            peer: CLIENT,
            peer_trusted: false,
            proto: "https",
            host: "[::1]:8443",
            cache: None,
        };
        sanitize_request(&mut headers, false, &context);
        assert_eq!(
            one(&headers, "forwarded"),
            "for=203.0.113.7;proto=https;host=\"[::1]:8443\""
        );
    }

    #[test]
    fn trusted_peer_forwarded_elements_are_kept_and_peer_appended() {
        let mut headers = map(&[
            ("forwarded", "for=198.51.100.1;proto=https;host=app.example"),
            ("forwarded", "for=\"[2001:db8::7]\""),
        ]);
        let peer = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
        sanitize_request(&mut headers, false, &ctx(peer, true));
        assert_eq!(
            all(&headers, "forwarded"),
            ["for=198.51.100.1;proto=https;host=app.example, for=\"[2001:db8::7]\", for=\"[fd00::2]\""]
        );
    }

    #[test]
    fn ipv4_mapped_peer_is_written_as_ipv4() {
        let peer: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        let mut headers = HeaderMap::new();
        sanitize_request(&mut headers, false, &ctx(peer, false));
        assert_eq!(one(&headers, "x-forwarded-for"), "203.0.113.9");
        assert_eq!(
            one(&headers, "forwarded"),
            "for=203.0.113.9;proto=https;host=acme.example"
        );
    }

    #[test]
    fn unexpected_proto_is_sent_as_http() {
        let mut headers = HeaderMap::new();
        let mut context = ctx(CLIENT, false);
        context.proto = "gopher";
        sanitize_request(&mut headers, false, &context);
        assert_eq!(one(&headers, "x-forwarded-proto"), "http");
    }

    #[test]
    fn unusable_host_is_not_forwarded() {
        let mut headers = map(&[("x-forwarded-host", "evil.example")]);
        let context = ClientContext {
            peer: CLIENT,
            peer_trusted: false,
            proto: "https",
            host: "bad host",
            cache: None,
        };
        sanitize_request(&mut headers, false, &context);
        assert!(!headers.contains_key("x-forwarded-host"));
        assert_eq!(one(&headers, "forwarded"), "for=203.0.113.7;proto=https");
    }

    #[test]
    fn host_header_value_is_reused_for_forwarded_host() {
        let headers = sanitized(&[("host", "acme.example")]);
        assert_eq!(one(&headers, "x-forwarded-host"), "acme.example");
        assert_eq!(one(&headers, "host"), "acme.example");
    }

    #[test]
    fn sanitizing_twice_changes_nothing_more() {
        let mut headers = map(&[("cookie", "a=1; portcullis-x=2"), ("x-forwarded-for", "1.2.3.4")]);
        sanitize_request(&mut headers, false, &ctx(CLIENT, false));
        let once = headers.clone();
        sanitize_request(&mut headers, false, &ctx(CLIENT, false));
        assert_eq!(headers, once);
    }

    #[test]
    fn trusted_proxy_membership() {
        let nets: Vec<ipnet::IpNet> = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert!(is_trusted_proxy(ip("10.20.30.40"), &nets));
        assert!(is_trusted_proxy(ip("::ffff:10.20.30.40"), &nets));
        assert!(is_trusted_proxy(ip("2001:db8::5"), &nets));
        assert!(!is_trusted_proxy(ip("11.0.0.1"), &nets));
        assert!(!is_trusted_proxy(ip("::ffff:11.0.0.1"), &nets));
        assert!(!is_trusted_proxy(ip("2001:db9::5"), &nets));
        assert!(!is_trusted_proxy(ip("127.0.0.2"), &nets));
        assert!(!is_trusted_proxy(ip("10.0.0.1"), &[]));
        let mapped_net: Vec<ipnet::IpNet> = vec!["::ffff:192.0.2.0/120".parse().unwrap()];
        assert!(is_trusted_proxy(ip("::ffff:192.0.2.1"), &mapped_net));
    }

    // --- responses ---

    #[test]
    fn response_hop_by_hop_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Upstream-Hop"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-sum"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("x-upstream-hop", "1"),
            ("content-type", "text/html"),
        ]);
        sanitize_response(&mut headers, false);
        assert_eq!(
            headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["content-type"]
        );
    }

    #[test]
    fn switching_protocols_keeps_connection_and_upgrade() {
        let mut headers = map(&[
            ("connection", "Upgrade, keep-alive, X-Hop"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        sanitize_response(&mut headers, true);
        assert_eq!(one(&headers, "connection"), "Upgrade, keep-alive, X-Hop");
        assert_eq!(one(&headers, "upgrade"), "websocket");
        assert!(!headers.contains_key("keep-alive"));
        assert!(!headers.contains_key("x-hop"));
        assert_eq!(one(&headers, "sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn only_gateway_set_cookies_are_dropped() {
        let mut headers = map(&[
            ("set-cookie", "app=1; Path=/; HttpOnly"),
            ("set-cookie", "__Host-portcullis-prod=stolen; Path=/; Secure"),
            ("set-cookie", "theme=dark"),
            ("set-cookie", " Portcullis-pre = x; Max-Age=0"),
            ("set-cookie", "=portcullis-prod=nameless"),
            ("set-cookie", "__HOST-PORTCULLIS-prod-csrf"),
            ("set-cookie", "last=3; Domain=acme.example"),
        ]);
        sanitize_response(&mut headers, false);
        assert_eq!(
            all(&headers, "set-cookie"),
            ["app=1; Path=/; HttpOnly", "theme=dark", "last=3; Domain=acme.example"]
        );
    }

    #[test]
    fn set_cookie_lines_without_gateway_cookies_are_untouched() {
        let mut headers = map(&[("set-cookie", "a=1"), ("set-cookie", "b=2; Path=/portcullis-x")]);
        sanitize_response(&mut headers, false);
        assert_eq!(all(&headers, "set-cookie"), ["a=1", "b=2; Path=/portcullis-x"]);
    }

    #[test]
    fn gateway_headers_echoed_by_the_upstream_are_removed() {
        // HDR-09: the assertion never appears in client-facing responses.
        let mut headers = map(&[
            ("portcullis-assertion", "eyJ..."),
            ("x-portcullis-user", "alice"),
            ("x-portcullis-roles", "admin"),
            ("x-app", "kept"),
            ("x_app", "kept: underscores are only a request concern"),
        ]);
        sanitize_response(&mut headers, false);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-app", "x_app"]);
    }
}
