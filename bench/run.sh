#!/usr/bin/env bash
# Portcullis benchmark (see bench/README.md and ../shared/BENCH.md).
#
# Every figure that matters is a ratio measured in one run, side by side: the same load
# generator, the same upstream, the same pinning (servers on CPU 0, load on CPU 1). Each
# contender gets a warm-up and then BENCH_RUNS measured runs, interleaved (A B C A B C ...);
# the tables show medians. After the throughput rows come the load and memory checks
# (login storm, 100,000 cached sessions, 10,000 tenants).
#
# Environment (bench/README.md has the full list):
#   BENCH_DURATION     measured run length                 (default 10s)
#   BENCH_RUNS         measured runs per contender         (default 3)
#   BENCH_WARMUP       warm-up before each measured run    (default 2s)
#   BENCH_LATENCY_DURATION  the one-connection run the added latency comes from (5s)
#   BENCH_CONNECTIONS  wrk connections                     (default 64)
#   BENCH_H2_CLIENTS / BENCH_H2_STREAMS   h2load connections and streams per connection
#                                                          (default 16 x 4 = 64 in flight)
#   BENCH_GATEWAY_LOG  RUST_LOG for the gateway            (default warn: no access log;
#                      "info" keeps the access log on)
#   BENCH_ONLY         comma-separated keys to run (default: all), e.g. nginx,haproxy
#   BENCH_STORM_DURATION / BENCH_STORM_USERS / BENCH_STORM_CONNECTIONS   login storm
#   BENCH_SESSIONS     sessions for the memory row         (default 100000)
#   BENCH_TENANTS      tenants for the policy-load row     (default 10000)
#   BENCH_BUILD        0 skips `cargo build` (use binaries already built)
#   BENCH_UPSTREAM_BIN / BENCH_HYPER_PROXY_BIN / BENCH_PORTCULLIS_BIN / BENCH_SESSIONS_BIN
#                      override the binaries
#   BENCH_KEEP_TMP     1 keeps the temp dir (configs, logs, raw outputs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
RUNS=${BENCH_RUNS:-3}
WARMUP=${BENCH_WARMUP:-2s}
LATENCY_DURATION=${BENCH_LATENCY_DURATION:-5s}
CONNS=${BENCH_CONNECTIONS:-64}
H2_CLIENTS=${BENCH_H2_CLIENTS:-16}
H2_STREAMS=${BENCH_H2_STREAMS:-4}
GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
ONLY=${BENCH_ONLY:-}
STORM_DURATION=${BENCH_STORM_DURATION:-10s}
STORM_USERS=${BENCH_STORM_USERS:-200}
STORM_CONNS=${BENCH_STORM_CONNECTIONS:-16}
SESSIONS=${BENCH_SESSIONS:-100000}
TENANTS=${BENCH_TENANTS:-10000}
UPSTREAM_BIN=${BENCH_UPSTREAM_BIN:-$ROOT/target/release/examples/bench_upstream}
HYPER_PROXY_BIN=${BENCH_HYPER_PROXY_BIN:-$ROOT/target/release/examples/bench_hyper_proxy}
SESSIONS_BIN=${BENCH_SESSIONS_BIN:-$ROOT/target/release/examples/bench_sessions}
PORTCULLIS_BIN=${BENCH_PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
SERVER_CPU=0
LOAD_CPU=1
HOST=bench.localhost
# TLS rows need a name that resolves to 127.0.0.1 without touching /etc/hosts, because
# wrk sends the URL's host as SNI and the gateway picks its certificate by SNI.
TLS_HOST=localhost

# shellcheck source=bench/fixture.sh
. bench/fixture.sh

say() { echo "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

ALL_KEYS="direct nginx haproxy caddy hyper gateway gateway-auth gateway-redis nginx-fwd caddy-fwd
direct-h2 nginx-h2 gateway-h2 nginx-tls gateway-tls nginx-tls-close gateway-tls-close
login sessions tenants"
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
wanted_any() { local k; for k in "$@"; do wanted "$k" && return 0; done; return 1; }
for key in ${ONLY//,/ }; do
    [[ " ${ALL_KEYS//$'\n'/ } " == *" $key "* ]] || die "unknown BENCH_ONLY key '$key' (keys: ${ALL_KEYS//$'\n'/ })"
done

# Which servers the selected keys need.
NEED_NGINX=0; NEED_CADDY=0; NEED_GW=0; NEED_SIGNIN=0; NEED_TLS=0
wanted_any nginx nginx-h2 nginx-tls nginx-tls-close nginx-fwd && NEED_NGINX=1
wanted_any caddy caddy-fwd && NEED_CADDY=1
wanted_any gateway gateway-auth gateway-h2 nginx-fwd caddy-fwd login && NEED_GW=1
wanted_any gateway-auth gateway-h2 nginx-fwd caddy-fwd login && NEED_SIGNIN=1
wanted_any nginx-tls gateway-tls nginx-tls-close gateway-tls-close && NEED_TLS=1

# --- tools -------------------------------------------------------------------------------
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root or sudo to install: $*"; fi
}
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
have nginx || missing+=(nginx)
have wrk || missing+=(wrk)
have h2load || missing+=(nghttp2-client)
have taskset || missing+=(util-linux)
have curl || missing+=(curl)
have openssl || missing+=(openssl)
if wanted haproxy; then have haproxy || missing+=(haproxy); fi
if [ "$NEED_CADDY" = 1 ]; then have caddy || missing+=(caddy); fi
if wanted gateway-redis; then have redis-server || missing+=(redis-server); fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ "$(nproc)" -ge 2 ] || say "warning: fewer than 2 CPUs; server and load generator share a core"

if [ "${BENCH_BUILD:-1}" != 0 ]; then
    say "cargo build --release --example bench_upstream --example bench_hyper_proxy --example bench_sessions --bin portcullis"
    cargo build --release --example bench_upstream --example bench_hyper_proxy --example bench_sessions --bin portcullis
fi

# --- processes and cleanup ---------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
# The sessions row writes 100,000 rows with the store's synchronous=FULL; on tmpfs the
# fsyncs are free, so the write takes seconds instead of minutes (nothing is measured
# during it).
SHM=$TMP
if [ -d /dev/shm ] && [ -w /dev/shm ]; then SHM=$(mktemp -d /dev/shm/portcullis-bench.XXXXXX); fi
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then say "kept $TMP $SHM"; else rm -rf "$TMP" "$SHM"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME LOGFILE CMD...: starts CMD pinned to the server CPU; sets STARTED_PID.
start() {
    local name=$1 log=$2
    shift 2
    taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    say "started $name (pid $STARTED_PID)"
}

# stop PID: ends a server started with `start` before the end of the run.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ready NAME PID URL [HOST]: waits until URL answers 200 with that Host header (default
# the bench host; -k: the TLS rows use the bench's own self-signed certificate).
ready() {
    local name=$1 pid=$2 url=$3 host=${4:-$HOST} code=000 i
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name exited"; }
        code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Host: $host" "$url" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    tail -n 30 "$TMP/$name.log" >&2 || true
    die "$name: $url answers $code, not 200"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
since() { awk -v t0="$1" -v t1="$(now)" 'BEGIN { printf "%.3f", t1 - t0 }'; } # seconds since T0

# --- contenders --------------------------------------------------------------------------
# section TITLE BASELINE DIRECT TOOL HOST: the contenders registered next form one table.
#   BASELINE  key whose req/s is 1.00 in that table (nginx on the same protocol)
#   DIRECT    key the "added latency" is measured over (the upstream on that protocol)
#   TOOL      wrk (HTTP/1.1 keep-alive), wrk-close (a new connection per request) or
#             h2load (HTTP/2, prior knowledge on plaintext)
#   HOST      Host header (and for TLS the SNI name)
S_TITLE=; S_BASE=; S_DIRECT=; S_TOOL=; S_HOST=
section() { S_TITLE=$1; S_BASE=$2; S_DIRECT=$3; S_TOOL=$4; S_HOST=$5; }

# add_contender KEY LABEL PIDS URL [HEADER...]
# A contender is a URL served by processes whose CPU time is charged to it (PIDS is a
# comma-separated list: a proxy in front of Portcullis is charged for both). Extra request
# headers (e.g. "Cookie: ...") follow the URL.
C_KEYS=(); C_LABELS=(); C_PIDS=(); C_URLS=(); C_HEADERS=(); C_TOOLS=(); C_HOSTS=(); C_META=()
add_contender() {
    local key=$1 label=$2 pids=$3 url=$4
    shift 4
    wanted "$key" || return 0
    C_KEYS+=("$key"); C_LABELS+=("$label"); C_PIDS+=("$pids"); C_URLS+=("$url")
    C_TOOLS+=("$S_TOOL"); C_HOSTS+=("$S_HOST")
    C_META+=("$S_TITLE"$'\t'"$S_BASE"$'\t'"$S_DIRECT"$'\t'"$S_TOOL")
    local IFS=$'\x1f'
    C_HEADERS+=("$*")
}

# --- servers -----------------------------------------------------------------------------
# Direct upstream: the ceiling, and the reference for "latency added". It serves HTTP/1.1
# and h2c (prior knowledge) on one port.
UP_PORT=$(free_port)
start upstream "$TMP/upstream.log" "$UPSTREAM_BIN" --listen "127.0.0.1:$UP_PORT"
UP_PID=$STARTED_PID
ready upstream "$UP_PID" "http://127.0.0.1:$UP_PORT/public/x"

# One certificate for both TLS servers: ECDSA P-256, the common choice today.
if [ "$NEED_TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$TLS_HOST" -addext "subjectAltName=DNS:$TLS_HOST" \
        -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" 2>/dev/null
fi

# The gateway, with a fixture policy set written here: one tier, one tenant, a public
# route and everything else authenticated.
BENCH_PASSWORD="bench-user-password-42"
signin_cookie() { # ADDR HOST: prints the Cookie header of a fresh session of user "bench"
    python3 bench/signin.py "$1" "$2" bench "$BENCH_PASSWORD" bench
}
add_bench_user() { # POLICY_DIR [--store URL]
    local pol=$1
    shift
    PORTCULLIS_NEW_PASSWORD="$BENCH_PASSWORD" "$PORTCULLIS_BIN" user add --tenant bench --username bench \
        --config "$pol" "$@" >/dev/null
}
POL="$TMP/policies"
if [ "$NEED_GW" = 1 ]; then
    GW_PORT=$(free_port)
    GW_ADMIN=$(free_port)
    write_fixture "$POL" "$GW_PORT" "$GW_ADMIN" "$UP_PORT" "$TMP/data" "$HOST"
    start gateway "$TMP/gateway.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$POL"
    GW_PID=$STARTED_PID
    ready gateway "$GW_PID" "http://127.0.0.1:$GW_PORT/public/x"
fi
# The authenticated rows send the cookie of a user created with the CLI who signed in
# through the JSON API (password + TOTP enrolment), as a real client would.
if [ "$NEED_SIGNIN" = 1 ]; then
    add_bench_user "$POL"
    GW_COOKIE=$(signin_cookie "127.0.0.1:$GW_PORT" "$HOST")
fi

if wanted gateway-redis; then
    REDIS_PORT=$(free_port)
    start redis "$TMP/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    REDIS_PID=$STARTED_PID
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    GWR_PORT=$(free_port)
    GWR_ADMIN=$(free_port)
    [ -d "$POL" ] || write_fixture "$POL" "$(free_port)" "$(free_port)" "$UP_PORT" "$TMP/data" "$HOST"
    start gateway-redis "$TMP/gateway-redis.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$POL" \
        --listen "127.0.0.1:$GWR_PORT" --admin-listen "127.0.0.1:$GWR_ADMIN" --store "redis://127.0.0.1:$REDIS_PORT"
    GWR_PID=$STARTED_PID
    ready gateway-redis "$GWR_PID" "http://127.0.0.1:$GWR_PORT/public/x"
    add_bench_user "$POL" --store "redis://127.0.0.1:$REDIS_PORT"
    GWR_COOKIE=$(signin_cookie "127.0.0.1:$GWR_PORT" "$HOST")
    : "$REDIS_PID"
fi

# The gateway's rustls listener: a second gateway with its own policy copy (the public
# listener is either plaintext or TLS) and its own store, signed in over TLS.
if wanted_any gateway-tls gateway-tls-close; then
    GWT_PORT=$(free_port)
    POLT="$TMP/policies-tls"
    write_fixture "$POLT" "$GWT_PORT" "$(free_port)" "$UP_PORT" "$TMP/data-tls" "$TLS_HOST" \
        "$TMP/tls-cert.pem" "$TMP/tls-key.pem"
    start gateway-tls "$TMP/gateway-tls.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$POLT"
    GWT_PID=$STARTED_PID
    ready gateway-tls "$GWT_PID" "https://$TLS_HOST:$GWT_PORT/public/x" "$TLS_HOST"
    add_bench_user "$POLT"
    GWT_COOKIE=$(signin_cookie "https://$TLS_HOST:$GWT_PORT" "$TLS_HOST")
fi

# nginx, configured fairly (BENCH.md): one process, no access log, upstream keep-alive
# pool of 1024 with HTTP/1.1 and an empty Connection header, and keep-alive request limits
# raised so neither side reconnects every 1000 requests. One process serves every nginx
# row, each on its own port (rows are measured one at a time).
nginx_proxy_location() { # the fair proxy_pass block, shared by every nginx server
    cat <<EOF
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
EOF
}
if [ "$NEED_NGINX" = 1 ]; then
    NGX_PORT=$(free_port); NGX_H2_PORT=$(free_port); NGX_TLS_PORT=$(free_port); NGX_FWD_PORT=$(free_port)
    mkdir -p "$TMP/nginx/logs"
    {
        cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 1024;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
$(nginx_proxy_location)
    }
    # h2c with prior knowledge, as the gateway's plaintext listener serves it.
    server {
        listen 127.0.0.1:$NGX_H2_PORT http2;
$(nginx_proxy_location)
    }
EOF
        if [ "$NEED_TLS" = 1 ]; then cat <<EOF
    # TLS with OpenSSL's defaults, the certificate the gateway serves too.
    server {
        listen 127.0.0.1:$NGX_TLS_PORT ssl;
        ssl_certificate $TMP/tls-cert.pem;
        ssl_certificate_key $TMP/tls-key.pem;
$(nginx_proxy_location)
    }
EOF
        fi
        if [ "$NEED_GW" = 1 ]; then cat <<EOF
    # deploy/forward-auth/nginx.conf as shipped, addresses replaced: auth_request asks the
    # gateway's forward-auth endpoint about every request, then nginx proxies itself.
    upstream portcullis {
        server 127.0.0.1:$GW_PORT;
        keepalive 1024;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_FWD_PORT;
        location /.portcullis/ {
            proxy_pass http://portcullis;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
        location = /_portcullis_auth {
            internal;
            proxy_pass http://portcullis/.portcullis/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host \$host;
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Forwarded-Method \$request_method;
        }
        location / {
            auth_request /_portcullis_auth;
            auth_request_set \$portcullis_assertion \$upstream_http_portcullis_assertion;
            auth_request_set \$portcullis_user \$upstream_http_x_portcullis_user;
            auth_request_set \$portcullis_tenant \$upstream_http_x_portcullis_tenant;
            auth_request_set \$portcullis_roles \$upstream_http_x_portcullis_roles;
            auth_request_set \$portcullis_login \$upstream_http_x_portcullis_login;
            error_page 401 = @portcullis_sign_in;
            proxy_set_header Portcullis-Assertion \$portcullis_assertion;
            proxy_set_header X-Portcullis-User \$portcullis_user;
            proxy_set_header X-Portcullis-Tenant \$portcullis_tenant;
            proxy_set_header X-Portcullis-Roles \$portcullis_roles;
            proxy_set_header Host \$host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://bench_upstream;
        }
        location @portcullis_sign_in {
            return 302 \$portcullis_login;
        }
    }
EOF
        fi
        echo "}"
    } >"$TMP/nginx/nginx.conf"
    start nginx "$TMP/nginx.log" "$NGINX" -p "$TMP/nginx/" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf"
    NGX_PID=$STARTED_PID
    ready nginx "$NGX_PID" "http://127.0.0.1:$NGX_PORT/public/x"
fi

# HAProxy 2.6 (Debian), one thread, upstream connections shared between clients
# (http-reuse always), no logging: the fastest way it proxies HTTP/1.1 here.
if wanted haproxy; then
    HAP_PORT=$(free_port)
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:$HAP_PORT
    default_backend upstream
backend upstream
    server up 127.0.0.1:$UP_PORT
EOF
    start haproxy "$TMP/haproxy.log" "$HAPROXY" -db -f "$TMP/haproxy.cfg"
    HAP_PID=$STARTED_PID
    ready haproxy "$HAP_PID" "http://127.0.0.1:$HAP_PORT/public/x"
fi

# Caddy 2.6 (Debian, Go) on one OS thread for Go code (GOMAXPROCS=1), no admin API, no
# automatic HTTPS, no access log (its default), upstream keep-alive pool raised like
# nginx's. One process serves reverse_proxy and forward_auth (deploy/forward-auth/Caddyfile
# as shipped, addresses replaced), each on its own port.
caddy_transport() {
    cat <<EOF
            transport http {
                keepalive 120s
                keepalive_idle_conns 1024
                keepalive_idle_conns_per_host 1024
            }
EOF
}
if [ "$NEED_CADDY" = 1 ]; then
    CADDY_PORT=$(free_port); CADDY_FWD_PORT=$(free_port)
    {
        cat <<EOF
{
    admin off
    auto_https off
}
http://:$CADDY_PORT {
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:$UP_PORT {
$(caddy_transport)
    }
}
EOF
        if [ "$NEED_GW" = 1 ]; then cat <<EOF
http://:$CADDY_FWD_PORT {
    bind 127.0.0.1
    handle /.portcullis/* {
        reverse_proxy 127.0.0.1:$GW_PORT
    }
    handle {
        forward_auth 127.0.0.1:$GW_PORT {
            uri /.portcullis/auth
            copy_headers Portcullis-Assertion X-Portcullis-User X-Portcullis-Tenant X-Portcullis-Roles
$(caddy_transport)
        }
        reverse_proxy 127.0.0.1:$UP_PORT {
$(caddy_transport)
        }
    }
}
EOF
        fi
    } >"$TMP/Caddyfile"
    start caddy "$TMP/caddy.log" env GOMAXPROCS=1 HOME="$TMP" XDG_DATA_HOME="$TMP/caddy" XDG_CONFIG_HOME="$TMP/caddy" \
        caddy run --adapter caddyfile --config "$TMP/Caddyfile"
    CADDY_PID=$STARTED_PID
    ready caddy "$CADDY_PID" "http://127.0.0.1:$CADDY_PORT/public/x"
fi

# The floor of the stack Portcullis is built on: a bare hyper proxy (examples/
# bench_hyper_proxy.rs) with none of the gateway's checks. The gap between it and nginx is
# hyper's; the gap between it and the gateway is the gateway's own.
if wanted hyper; then
    HY_PORT=$(free_port)
    start hyper "$TMP/hyper.log" "$HYPER_PROXY_BIN" --listen "127.0.0.1:$HY_PORT" --upstream "127.0.0.1:$UP_PORT"
    HY_PID=$STARTED_PID
    ready hyper "$HY_PID" "http://127.0.0.1:$HY_PORT/public/x"
fi

# --- the throughput tables, in the order they are printed --------------------------------
section "HTTP/1.1, keep-alive" nginx direct wrk "$HOST"
add_contender direct "direct upstream (no proxy)" "$UP_PID" "http://127.0.0.1:$UP_PORT/public/x"
if [ "$NEED_NGINX" = 1 ]; then
    add_contender nginx "nginx proxy_pass (no auth)" "$NGX_PID" "http://127.0.0.1:$NGX_PORT/public/x"
fi
if wanted haproxy; then
    add_contender haproxy "HAProxy (nbthread 1, http-reuse always, no auth)" "$HAP_PID" "http://127.0.0.1:$HAP_PORT/public/x"
fi
if [ "$NEED_CADDY" = 1 ]; then
    add_contender caddy "Caddy reverse_proxy (GOMAXPROCS=1, no auth)" "$CADDY_PID" "http://127.0.0.1:$CADDY_PORT/public/x"
fi
if wanted hyper; then
    add_contender hyper "bare hyper proxy (reference, no checks)" "$HY_PID" "http://127.0.0.1:$HY_PORT/public/x"
fi
if [ "$NEED_GW" = 1 ]; then
    add_contender gateway "portcullis, public route (RUST_LOG=$GATEWAY_LOG)" "$GW_PID" "http://127.0.0.1:$GW_PORT/public/x"
fi
if [ "$NEED_SIGNIN" = 1 ]; then
    add_contender gateway-auth "portcullis, authenticated, SQLite store" "$GW_PID" \
        "http://127.0.0.1:$GW_PORT/app/x" "$GW_COOKIE"
fi
if wanted gateway-redis; then
    add_contender gateway-redis "portcullis, authenticated, Redis store" "$GWR_PID" \
        "http://127.0.0.1:$GWR_PORT/app/x" "$GWR_COOKIE"
fi
# Forward-auth: another proxy asks Portcullis about every request (a second HTTP exchange
# per request) and proxies itself; CPU is charged to both processes.
if [ "$NEED_SIGNIN" = 1 ] && [ "$NEED_NGINX" = 1 ]; then
    add_contender nginx-fwd "nginx auth_request → portcullis (CPU: both)" "$NGX_PID,$GW_PID" \
        "http://127.0.0.1:$NGX_FWD_PORT/app/x" "$GW_COOKIE"
fi
if [ "$NEED_SIGNIN" = 1 ] && [ "$NEED_CADDY" = 1 ]; then
    add_contender caddy-fwd "Caddy forward_auth → portcullis (CPU: both)" "$CADDY_PID,$GW_PID" \
        "http://127.0.0.1:$CADDY_FWD_PORT/app/x" "$GW_COOKIE"
fi

# HTTP/2 in plaintext with prior knowledge (h2c) on both sides: the gateway's plaintext
# listener and nginx `listen ... http2` both speak it, so no TLS cost blurs the framing
# cost; both proxy to the upstream over HTTP/1.1 keep-alive.
section "HTTP/2 (h2c, prior knowledge)" nginx-h2 direct-h2 h2load "$HOST"
add_contender direct-h2 "direct upstream, h2c (no proxy)" "$UP_PID" "http://127.0.0.1:$UP_PORT/public/x"
if [ "$NEED_NGINX" = 1 ]; then
    add_contender nginx-h2 "nginx http2 proxy_pass (no auth)" "$NGX_PID" "http://127.0.0.1:$NGX_H2_PORT/public/x"
fi
if [ "$NEED_SIGNIN" = 1 ]; then
    add_contender gateway-h2 "portcullis h2c, authenticated, SQLite store" "$GW_PID" \
        "http://127.0.0.1:$GW_PORT/app/x" "$GW_COOKIE"
fi

# TLS: Portcullis's rustls listener against nginx's OpenSSL, same ECDSA P-256 certificate,
# HTTP/1.1 over TLS, both proxying to the plaintext upstream. Added latency is over the
# plaintext direct upstream.
section "TLS (HTTP/1.1), keep-alive" nginx-tls direct wrk "$TLS_HOST"
if [ "$NEED_NGINX" = 1 ] && [ "$NEED_TLS" = 1 ]; then
    add_contender nginx-tls "nginx ssl proxy_pass (no auth)" "$NGX_PID" "https://$TLS_HOST:$NGX_TLS_PORT/public/x"
fi
if wanted gateway-tls; then
    add_contender gateway-tls "portcullis rustls, authenticated, SQLite store" "$GWT_PID" \
        "https://$TLS_HOST:$GWT_PORT/app/x" "$GWT_COOKIE"
fi
# Handshake-heavy: `Connection: close` on every request, so every request pays a TCP
# connect and a full TLS handshake (wrk does not resume sessions).
section "TLS (HTTP/1.1), a new connection per request" nginx-tls-close direct wrk-close "$TLS_HOST"
if [ "$NEED_NGINX" = 1 ] && [ "$NEED_TLS" = 1 ]; then
    add_contender nginx-tls-close "nginx ssl proxy_pass (no auth), Connection: close" "$NGX_PID" \
        "https://$TLS_HOST:$NGX_TLS_PORT/public/x"
fi
if wanted gateway-tls-close; then
    add_contender gateway-tls-close "portcullis rustls, authenticated, Connection: close" "$GWT_PID" \
        "https://$TLS_HOST:$GWT_PORT/app/x" "$GWT_COOKIE"
fi

# --- measuring ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # PIDS: utime + stime of the processes (all threads), in clock ticks
    local stat pid total=0
    for pid in ${1//,/ }; do
        stat=$(<"/proc/$pid/stat")
        stat=${stat##*) }             # drop "pid (comm) ": comm may contain spaces
        # shellcheck disable=SC2086
        set -- $stat                  # now $1 is field 3 (state); utime/stime are fields 14/15
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

RAW="$TMP/raw"
mkdir -p "$RAW"

# load TOOL DURATION OUT URL HEADER...: one load run pinned to the load CPU; OUT gets the
# tool's output (and OUT.log h2load's per-request log, for its percentiles). OUT may be
# /dev/null for a warm-up. With LOAD_SINGLE=1 it uses one connection (one stream).
LOAD_SINGLE=0
load() {
    local tool=$1 duration=$2 out=$3 url=$4 args=() h conns=$CONNS h2c=$H2_CLIENTS h2m=$H2_STREAMS
    shift 4
    for h in "$@"; do args+=(-H "$h"); done
    [ "$LOAD_SINGLE" = 0 ] || { conns=1; h2c=1; h2m=1; }
    case $tool in
    wrk) taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$duration" --latency "${args[@]}" "$url" >"$out" ;;
    wrk-close) taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$duration" --latency -H "Connection: close" \
        "${args[@]}" "$url" >"$out" ;;
    h2load)
        local log=/dev/null
        [ "$out" = /dev/null ] || log=$out.log
        taskset -c "$LOAD_CPU" h2load -t1 -c"$h2c" -m"$h2m" -D"$duration" \
            --log-file="$log" "${args[@]}" "$url" >"$out" ;;
    *) die "unknown load tool $tool" ;;
    esac
}

measure() { # index run
    local i=$1 run=$2 key=${C_KEYS[$1]} pids=${C_PIDS[$1]} url=${C_URLS[$1]} tool=${C_TOOLS[$1]}
    local headers=() extra=() h before after pid
    # h2load takes the authority as a pseudo-header; wrk takes a Host header.
    if [ "$tool" = h2load ]; then headers=(":authority: ${C_HOSTS[$i]}"); else headers=("Host: ${C_HOSTS[$i]}"); fi
    IFS=$'\x1f' read -ra extra <<<"${C_HEADERS[$i]}"
    for h in "${extra[@]}"; do headers+=("$h"); done
    for pid in ${pids//,/ }; do kill -0 "$pid" 2>/dev/null || die "${C_LABELS[$i]} (pid $pid) is gone"; done
    load "$tool" "$WARMUP" /dev/null "$url" "${headers[@]}"
    before=$(cpu_ticks "$pids")
    load "$tool" "$DURATION" "$RAW/$key.$run.$tool" "$url" "${headers[@]}"
    after=$(cpu_ticks "$pids")
    echo $((after - before)) >"$RAW/$key.$run.cpu"
    # Latency added: at 64 connections every server is saturated and its latency is
    # mostly queueing (connections / throughput), so the added p50/p99 come from a run with
    # one connection, where each request meets an idle server (wrk and h2load are
    # closed-loop: there is no fixed-rate mode to use instead).
    LOAD_SINGLE=1 load "$tool" "$LATENCY_DURATION" "$RAW/$key.$run.$tool.c1" "$url" "${headers[@]}"
    say "run $run/$RUNS ${C_LABELS[$i]}: $(awk '/Requests\/sec/ {print $2} /^finished in/ {print $4}' "$RAW/$key.$run.$tool") req/s"
}

# Each contender must answer its request with 200 before it is measured: wrk counts only
# 4xx/5xx as errors, so a refused cookie answered with a redirect to sign-in would
# otherwise pass for fast proxying.
verify() { # index
    local i=$1 args=(-sk -o /dev/null -w '%{http_code}' -H "Host: ${C_HOSTS[$1]}") extra=() h code
    [ "${C_TOOLS[$i]}" != h2load ] || args+=(--http2-prior-knowledge)
    IFS=$'\x1f' read -ra extra <<<"${C_HEADERS[$i]}"
    for h in "${extra[@]}"; do args+=(-H "$h"); done
    code=$(curl "${args[@]}" "${C_URLS[$i]}" || true)
    [ "$code" = 200 ] || die "${C_LABELS[$i]}: ${C_URLS[$i]} answers $code, not 200"
}
for i in "${!C_KEYS[@]}"; do verify "$i"; done

for run in $(seq 1 "$RUNS"); do
    for i in "${!C_KEYS[@]}"; do measure "$i" "$run"; done
done

# --- load and memory ---------------------------------------------------------------------
# Login throughput and the proxy's p99 during a login storm: STORM_USERS accounts (the
# per-account throttle allows 10 attempts per 15 minutes, so logins are spread over
# them), STORM_CONNS connections of password logins (argon2id on the gateway's bounded
# pool, on the same CPU as the proxying) while wrk loads the authenticated route. Each
# round: the route alone, then the same with the storm; BENCH_RUNS rounds.
bench_login() {
    say "login: creating $STORM_USERS accounts"
    local i run storm_pid adding=()
    for i in $(seq 0 $((STORM_USERS - 1))); do
        PORTCULLIS_NEW_PASSWORD="storm-user-password-42" "$PORTCULLIS_BIN" user add --tenant bench \
            --username "storm$i" --config "$POL" >/dev/null &
        adding+=($!)
        # two at a time (argon2id per account; nothing is measured yet); a bare `wait`
        # would also wait for the servers
        if [ ${#adding[@]} -ge 2 ]; then wait "${adding[@]}"; adding=(); fi
    done
    [ ${#adding[@]} -eq 0 ] || wait "${adding[@]}"
    cat >"$TMP/login.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  local body = '{"username":"storm' .. (counter % $STORM_USERS) .. '","password":"storm-user-password-42"}'
  return wrk.format("POST", "/.portcullis/api/login", {["Content-Type"] = "application/json"}, body)
end
LUA
    local url="http://127.0.0.1:$GW_PORT/app/x"
    printf 'users=%s\nconnections=%s\nduration=%s\n' "$STORM_USERS" "$STORM_CONNS" "$STORM_DURATION" >"$RAW/login.meta"
    for run in $(seq 1 "$RUNS"); do
        load wrk "$WARMUP" /dev/null "$url" "Host: $HOST" "$GW_COOKIE"
        load wrk "$STORM_DURATION" "$RAW/login.$run.quiet" "$url" "Host: $HOST" "$GW_COOKIE"
        taskset -c "$LOAD_CPU" wrk -t1 -c"$STORM_CONNS" -d"$STORM_DURATION" -s "$TMP/login.lua" \
            -H "Host: $HOST" "http://127.0.0.1:$GW_PORT/" >"$RAW/login.$run.storm" &
        storm_pid=$!
        load wrk "$STORM_DURATION" "$RAW/login.$run.loaded" "$url" "Host: $HOST" "$GW_COOKIE"
        wait "$storm_pid"
        say "login round $run/$RUNS: $(awk '/Requests\/sec/ {print $2}' "$RAW/login.$run.storm") logins/s," \
            "p99 $(awk '$1 == "99%" {print $2}' "$RAW/login.$run.quiet") quiet," \
            "$(awk '$1 == "99%" {print $2}' "$RAW/login.$run.loaded") during the storm"
    done
}

# RSS with 0 and with SESSIONS cached sessions: a fresh gateway over a store holding
# SESSIONS live sessions (written with the library, examples/bench_sessions.rs: signing
# in 100,000 times would take 100,000 argon2id hashes), each then requested once through
# the gateway, which reads it from the store and caches it.
bench_sessions() {
    local pol="$TMP/policies-sessions" port admin pid rss0 rss1 started
    port=$(free_port); admin=$(free_port)
    write_fixture "$pol" "$port" "$admin" "$UP_PORT" "$SHM/data-sessions" "$HOST"
    say "sessions: writing $SESSIONS sessions (+1 for the warm-up) into the store"
    started=$(now)
    "$SESSIONS_BIN" --store "sqlite:$SHM/data-sessions" --tier bench --tenant bench \
        --count $((SESSIONS + 1)) --out "$TMP/cookies.all"
    say "sessions: written in $(since "$started") s"
    head -n "$SESSIONS" "$TMP/cookies.all" >"$TMP/cookies.txt"
    local warm_cookie
    warm_cookie="Cookie: $(tail -n 1 "$TMP/cookies.all")"
    start gateway-sessions "$TMP/gateway-sessions.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$pol"
    pid=$STARTED_PID
    ready gateway-sessions "$pid" "http://127.0.0.1:$port/public/x"
    # Warm both paths with one session, so buffers, pools and the runtime are at their
    # working size before the baseline is read.
    load wrk "$WARMUP" /dev/null "http://127.0.0.1:$port/public/x" "Host: $HOST"
    load wrk "$WARMUP" /dev/null "http://127.0.0.1:$port/app/x" "Host: $HOST" "$warm_cookie"
    sleep 1
    rss0=$(rss_kb "$pid")
    # Each cookie once, in order; then the public route until every cookie has been
    # answered (2 x connections spare answers cover the requests still in flight when the
    # last cookie was sent), so no session is requested twice. wrk runs for its whole -d
    # even when its thread stops, so the script leaves a file and is then interrupted
    # (SIGINT: wrk stops and prints its summary).
    local done_file="$TMP/sessions.done" wrk_pid
    cat >"$TMP/sessions.lua" <<LUA
local cookies = {}
for line in io.lines("$TMP/cookies.txt") do cookies[#cookies + 1] = line end
local n, sent, answered = #cookies, 0, 0
request = function()
  sent = sent + 1
  if sent <= n then return wrk.format("GET", "/app/x", {["Cookie"] = cookies[sent]}) end
  return wrk.format("GET", "/public/x")
end
response = function(status, headers, body)
  answered = answered + 1
  if answered == n + 2 * $CONNS then
    io.open("$done_file", "w"):close()
    wrk.thread:stop()
  end
end
LUA
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d600s -s "$TMP/sessions.lua" -H "Host: $HOST" \
        "http://127.0.0.1:$port/" >"$RAW/sessions.cache.wrk" &
    wrk_pid=$!
    while [ ! -e "$done_file" ]; do
        kill -0 "$wrk_pid" 2>/dev/null || die "sessions: wrk ended before every session was requested"
        sleep 0.1
    done
    kill -INT "$wrk_pid"
    wait "$wrk_pid"
    rss1=$(rss_kb "$pid")
    printf 'count=%s\nrss0_kb=%s\nrss1_kb=%s\n' "$SESSIONS" "$rss0" "$rss1" >"$RAW/sessions.meta"
    say "sessions: RSS $rss0 KiB -> $rss1 KiB after $SESSIONS sessions"
    stop "$pid"
}

# Policy load time and RSS with TENANTS tenants (each its own file and host, all on the
# bench tier): `portcullis check` (parse and validate only) and `portcullis run` from
# start until a request to the last tenant is answered; the same for the one-tenant
# fixture, for comparison.
start_until_ready() { # NAME POLICY_DIR PORT HOST: sets READY_S and READY_RSS_KB
    local name=$1 pol=$2 port=$3 host=$4 t0 pid code
    t0=$(now)
    start "$name" "$TMP/$name.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$pol"
    pid=$STARTED_PID
    while :; do
        code=$(taskset -c "$LOAD_CPU" curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" \
            "http://127.0.0.1:$port/public/x" || true)
        [ "$code" = 200 ] && break
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2; die "$name exited"; }
        sleep 0.01
    done
    READY_S=$(since "$t0")
    sleep 0.5
    READY_RSS_KB=$(rss_kb "$pid")
    stop "$pid"
}
bench_tenants() {
    local pol="$TMP/policies-tenants" port admin t0 check_s one_s one_rss
    port=$(free_port); admin=$(free_port)
    write_fixture "$pol" "$port" "$admin" "$UP_PORT" "$TMP/data-tenants" "$HOST"
    start_until_ready gateway-1-tenant "$pol" "$port" "$HOST"
    one_s=$READY_S; one_rss=$READY_RSS_KB
    say "tenants: writing $TENANTS tenant files"
    python3 - "$pol/tenants" "$TENANTS" "$UP_PORT" <<'PY'
import sys
d, n, up = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(1, n):  # tenants/bench.toml is the first
    with open("%s/t%05d.toml" % (d, i), "w") as f:
        f.write('id = "t%05d"\nname = "Tenant %d"\ntier = "bench"\nhosts = ["t%05d.bench.localhost"]\n'
                'upstream = "http://127.0.0.1:%s"\n\n[[routes]]\nprefix = "/public/"\naccess = "public"\n\n'
                '[[routes]]\nprefix = "/"\naccess = "authenticated"\n' % (i, i, i, up))
PY
    t0=$(now)
    taskset -c "$SERVER_CPU" "$PORTCULLIS_BIN" check --config "$pol" >"$TMP/check.log" 2>&1 \
        || { tail -n 20 "$TMP/check.log" >&2; die "portcullis check failed on $TENANTS tenants"; }
    check_s=$(since "$t0")
    start_until_ready gateway-tenants "$pol" "$port" "$(printf 't%05d.bench.localhost' $((TENANTS - 1)))"
    printf 'count=%s\ncheck_s=%s\nready_s=%s\nrss_kb=%s\none_ready_s=%s\none_rss_kb=%s\n' \
        "$TENANTS" "$check_s" "$READY_S" "$READY_RSS_KB" "$one_s" "$one_rss" >"$RAW/tenants.meta"
    say "tenants: check ${check_s}s, ready ${READY_S}s, RSS $READY_RSS_KB KiB ($one_rss KiB with one tenant)"
}

if wanted login; then bench_login; fi
if wanted sessions; then bench_sessions; fi
if wanted tenants; then bench_tenants; fi

# --- report ------------------------------------------------------------------------------
CONTENDERS="$RAW/contenders.tsv"
for i in "${!C_KEYS[@]}"; do
    printf '%s\t%s\t%s\n' "${C_KEYS[$i]}" "${C_LABELS[$i]}" "${C_META[$i]}"
done >"$CONTENDERS"
mkdir -p bench/results
OUT=bench/results/latest
[ -z "$ONLY" ] || OUT=bench/results/partial # a subset never overwrites the full table
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
python3 bench/report.py \
    --raw "$RAW" --contenders "$CONTENDERS" --clk-tck "$CLK_TCK" \
    --machine "$(uname -m)" --nproc "$(nproc)" --cpu-model "${cpu_model:-unknown}" \
    --setup "servers on CPU $SERVER_CPU, load on CPU $LOAD_CPU (wrk -t1 -c$CONNS; h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS), $DURATION runs after a $WARMUP warm-up, then $LATENCY_DURATION with one connection for the added latency; median of $RUNS interleaved runs; gateway RUST_LOG=$GATEWAY_LOG" \
    --md "$OUT.md" --json "$OUT.json"
cat "$OUT.md"
say "wrote $OUT.md and $OUT.json"

# A full run also puts the table in the README, between its bench markers.
if [ -z "$ONLY" ]; then
    python3 - "$OUT.md" README.md <<'PY'
import sys
table, readme = sys.argv[1], sys.argv[2]
start, end = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"
text = open(readme).read()
if start in text and end in text:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    open(readme, "w").write(head + start + "\n" + open(table).read() + end + tail)
    print("bench: README.md table updated", file=sys.stderr)
else:
    print("bench: README.md has no bench markers; table not copied", file=sys.stderr)
PY
fi
