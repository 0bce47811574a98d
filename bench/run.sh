#!/usr/bin/env bash
# Portcullis benchmark (see bench/README.md and ../shared/BENCH.md).
#
# Every figure that matters is a ratio measured in one run, side by side: the same load
# generator, the same upstream, the same pinning (servers on CPU 0, wrk on CPU 1). Each
# contender gets a warm-up and then BENCH_RUNS measured runs, interleaved (A B C A B C ...);
# the table shows medians.
#
# Environment:
#   BENCH_DURATION     measured wrk run length            (default 10s)
#   BENCH_RUNS         measured runs per contender         (default 3)
#   BENCH_WARMUP       warm-up before each measured run    (default 2s)
#   BENCH_CONNECTIONS  wrk connections                     (default 64)
#   BENCH_GATEWAY_LOG  RUST_LOG for the gateway            (default warn: no access log;
#                      "info" keeps the access log on)
#   BENCH_ONLY         comma-separated contender keys to run (default: all), e.g. direct,nginx
#   BENCH_BUILD        0 skips `cargo build` (use binaries already built)
#   BENCH_UPSTREAM_BIN / BENCH_HYPER_PROXY_BIN / BENCH_PORTCULLIS_BIN   override the binaries
#   BENCH_KEEP_TMP     1 keeps the temp dir (configs, logs, raw wrk outputs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
RUNS=${BENCH_RUNS:-3}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_CONNECTIONS:-64}
GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
ONLY=${BENCH_ONLY:-}
UPSTREAM_BIN=${BENCH_UPSTREAM_BIN:-$ROOT/target/release/examples/bench_upstream}
HYPER_PROXY_BIN=${BENCH_HYPER_PROXY_BIN:-$ROOT/target/release/examples/bench_hyper_proxy}
PORTCULLIS_BIN=${BENCH_PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
SERVER_CPU=0
LOAD_CPU=1
HOST=bench.localhost

# shellcheck source=bench/fixture.sh
. bench/fixture.sh

say() { echo "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# --- tools -------------------------------------------------------------------------------
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root or sudo to install: $*"; fi
}
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ "$(nproc)" -ge 2 ] || say "warning: fewer than 2 CPUs; server and load generator share a core"

if [ "${BENCH_BUILD:-1}" != 0 ]; then
    say "cargo build --release --example bench_upstream --example bench_hyper_proxy --bin portcullis"
    cargo build --release --example bench_upstream --example bench_hyper_proxy --bin portcullis
fi

# --- processes and cleanup ---------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
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

# ready NAME PID URL: waits until URL answers 200 (with the bench Host header).
ready() {
    local name=$1 pid=$2 url=$3 code=000 i
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name exited"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "$url" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    tail -n 30 "$TMP/$name.log" >&2 || true
    die "$name: $url answers $code, not 200"
}

# --- contenders --------------------------------------------------------------------------
# add_contender KEY LABEL PID URL [HEADER...]
# A contender is a URL served by a process whose CPU time is charged to it. The bench
# Host header is always sent; extra headers (e.g. "Cookie: ...") follow the URL.
C_KEYS=(); C_LABELS=(); C_PIDS=(); C_URLS=(); C_HEADERS=()
add_contender() {
    local key=$1 label=$2 pid=$3 url=$4
    shift 4
    wanted "$key" || return 0
    C_KEYS+=("$key"); C_LABELS+=("$label"); C_PIDS+=("$pid"); C_URLS+=("$url")
    local IFS=$'\x1f'
    C_HEADERS+=("$*")
}

# Direct upstream: the ceiling, and the reference for "latency added".
if wanted direct || wanted nginx || wanted hyper || wanted gateway || wanted gateway-auth || wanted gateway-redis; then
    UP_PORT=$(free_port)
    start upstream "$TMP/upstream.log" "$UPSTREAM_BIN" --listen "127.0.0.1:$UP_PORT"
    UP_PID=$STARTED_PID
    ready upstream "$UP_PID" "http://127.0.0.1:$UP_PORT/public/x"
    add_contender direct "direct upstream (no proxy)" "$UP_PID" "http://127.0.0.1:$UP_PORT/public/x"
fi

# nginx proxy_pass, configured fairly (BENCH.md): one process, no access log, upstream
# keep-alive pool of 1024 with HTTP/1.1 and an empty Connection header, and keep-alive
# request limits raised so neither side reconnects every 1000 requests.
if wanted nginx; then
    NGX_PORT=$(free_port)
    mkdir -p "$TMP/nginx/logs"
    cat >"$TMP/nginx/nginx.conf" <<EOF
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
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
EOF
    start nginx "$TMP/nginx.log" "$NGINX" -p "$TMP/nginx/" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf"
    NGX_PID=$STARTED_PID
    ready nginx "$NGX_PID" "http://127.0.0.1:$NGX_PORT/public/x"
    add_contender nginx "nginx proxy_pass (no auth)" "$NGX_PID" "http://127.0.0.1:$NGX_PORT/public/x"
fi

# The floor of the stack Portcullis is built on: a bare hyper proxy (examples/
# bench_hyper_proxy.rs) with none of the gateway's checks. The gap between it and nginx is
# hyper's; the gap between it and the gateway is the gateway's own.
if wanted hyper; then
    HY_PORT=$(free_port)
    start hyper "$TMP/hyper.log" "$HYPER_PROXY_BIN" --listen "127.0.0.1:$HY_PORT" --upstream "127.0.0.1:$UP_PORT"
    HY_PID=$STARTED_PID
    ready hyper "$HY_PID" "http://127.0.0.1:$HY_PORT/public/x"
    add_contender hyper "bare hyper proxy (reference, no checks)" "$HY_PID" "http://127.0.0.1:$HY_PORT/public/x"
fi

# The gateway, with a fixture policy set written here: one tier, one tenant, a public
# route (measured now) and everything else authenticated (for the authenticated rows).
if wanted gateway || wanted gateway-auth || wanted gateway-redis; then
    GW_PORT=$(free_port)
    GW_ADMIN=$(free_port)
    POL="$TMP/policies"
    write_fixture "$POL" "$GW_PORT" "$GW_ADMIN" "$UP_PORT" "$TMP/data" "$HOST"
    start gateway "$TMP/gateway.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$POL"
    GW_PID=$STARTED_PID
    ready gateway "$GW_PID" "http://127.0.0.1:$GW_PORT/public/x"
    add_contender gateway "portcullis, public route (RUST_LOG=$GATEWAY_LOG)" "$GW_PID" \
        "http://127.0.0.1:$GW_PORT/public/x"
fi

# Authenticated rows: a session cookie on every request to a protected route, with the
# embedded SQLite store and with Redis. The user is created with the CLI and signs in
# through the JSON API (password + TOTP enrolment), as a real client would.
BENCH_PASSWORD="bench-user-password-42"
signin_cookie() { # ADDR: prints the Cookie header of a fresh session of user "bench"
    python3 bench/signin.py "$1" "$HOST" bench "$BENCH_PASSWORD" bench
}
if wanted gateway-auth; then
    PORTCULLIS_NEW_PASSWORD="$BENCH_PASSWORD" "$PORTCULLIS_BIN" user add --tenant bench --username bench \
        --config "$POL" >/dev/null
    add_contender gateway-auth "portcullis, authenticated, SQLite store" "$GW_PID" \
        "http://127.0.0.1:$GW_PORT/app/x" "$(signin_cookie "127.0.0.1:$GW_PORT")"
fi
if wanted gateway-redis; then
    command -v redis-server >/dev/null || die "redis-server is not installed"
    REDIS_PORT=$(free_port)
    start redis "$TMP/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    GWR_PORT=$(free_port)
    GWR_ADMIN=$(free_port)
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    start gateway-redis "$TMP/gateway-redis.log" env RUST_LOG="$GATEWAY_LOG" "$PORTCULLIS_BIN" run --config "$POL" \
        --listen "127.0.0.1:$GWR_PORT" --admin-listen "127.0.0.1:$GWR_ADMIN" --store "redis://127.0.0.1:$REDIS_PORT"
    GWR_PID=$STARTED_PID
    ready gateway-redis "$GWR_PID" "http://127.0.0.1:$GWR_PORT/public/x"
    PORTCULLIS_NEW_PASSWORD="$BENCH_PASSWORD" "$PORTCULLIS_BIN" user add --tenant bench --username bench \
        --config "$POL" --store "redis://127.0.0.1:$REDIS_PORT" >/dev/null
    add_contender gateway-redis "portcullis, authenticated, Redis store" "$GWR_PID" \
        "http://127.0.0.1:$GWR_PORT/app/x" "$(signin_cookie "127.0.0.1:$GWR_PORT")"
fi

[ ${#C_KEYS[@]} -gt 0 ] || die "no contender selected (BENCH_ONLY=$ONLY)"

# --- measuring ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of the whole process (all threads), in clock ticks
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }             # drop "pid (comm) ": comm may contain spaces
    # shellcheck disable=SC2086
    set -- $stat                  # now $1 is field 3 (state); utime/stime are fields 14/15
    echo $((${12} + ${13}))
}

RAW="$TMP/raw"
mkdir -p "$RAW"
measure() { # index run
    local i=$1 run=$2 key=${C_KEYS[$1]} pid=${C_PIDS[$1]} url=${C_URLS[$1]}
    local args=(-H "Host: $HOST") extra=() h before after
    IFS=$'\x1f' read -ra extra <<<"${C_HEADERS[$i]}"
    for h in "${extra[@]}"; do args+=(-H "$h"); done
    kill -0 "$pid" 2>/dev/null || die "${C_LABELS[$i]} (pid $pid) is gone"
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" "${args[@]}" "$url" >/dev/null
    before=$(cpu_ticks "$pid")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${args[@]}" "$url" >"$RAW/$key.$run.wrk"
    after=$(cpu_ticks "$pid")
    echo $((after - before)) >"$RAW/$key.$run.cpu"
    say "run $run/$RUNS ${C_LABELS[$i]}: $(awk '/Requests\/sec/ {print $2}' "$RAW/$key.$run.wrk") req/s"
}

for run in $(seq 1 "$RUNS"); do
    for i in "${!C_KEYS[@]}"; do measure "$i" "$run"; done
done

# --- report ------------------------------------------------------------------------------
CONTENDERS="$RAW/contenders.tsv"
for i in "${!C_KEYS[@]}"; do printf '%s\t%s\n' "${C_KEYS[$i]}" "${C_LABELS[$i]}"; done >"$CONTENDERS"
mkdir -p bench/results
OUT=bench/results/latest
[ -z "$ONLY" ] || OUT=bench/results/partial # a subset never overwrites the full table
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
python3 bench/report.py \
    --raw "$RAW" --contenders "$CONTENDERS" --baseline nginx --clk-tck "$CLK_TCK" \
    --machine "$(uname -m)" --nproc "$(nproc)" --cpu-model "${cpu_model:-unknown}" \
    --setup "servers on CPU $SERVER_CPU, wrk -t1 -c$CONNS -d$DURATION on CPU $LOAD_CPU, $WARMUP warm-up, median of $RUNS interleaved runs; gateway RUST_LOG=$GATEWAY_LOG" \
    --md "$OUT.md" --json "$OUT.json"
cat "$OUT.md"
say "wrote $OUT.md and $OUT.json"
