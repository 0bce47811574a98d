#!/usr/bin/env bash
# Instructions per request under callgrind: a deterministic companion to bench/run.sh.
#
# Wall-clock ratios on a shared 2-core machine move by ±20 % from run to run; the number
# of user-space instructions a server executes per request does not (valgrind counts
# them, whatever else the machine does). Use it to tell whether a change on the request
# path made the gateway cheaper. It does not count the kernel (syscalls, TCP), and it
# runs SHA-256 in software (valgrind hides SHA-NI), so it is no substitute for run.sh.
#
# For the bare hyper proxy, the gateway's public route and its authenticated route
# (a session signed in with password + TOTP): start the server under callgrind, warm up,
# zero the counters, load it with wrk for BENCH_DURATION, dump, and divide.
#
# Environment: BENCH_DURATION (default 10s), BENCH_BUILD (0 skips cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-10s}
HOST=bench.localhost
PASSWORD="bench-user-password-42"
# shellcheck source=bench/fixture.sh
. bench/fixture.sh

say() { echo "instructions: $*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in valgrind callgrind_control callgrind_annotate wrk; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install valgrind wrk)"
done
if [ "${BENCH_BUILD:-1}" != 0 ]; then
    cargo build --release --example bench_upstream --example bench_hyper_proxy --bin portcullis
fi
BIN=$ROOT/target/release

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-instructions.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ready() { # URL: waits (generously: valgrind starts slowly) for any HTTP answer
    local i
    for i in $(seq 1 600); do
        curl -s -o /dev/null -H "Host: $HOST" "$1" && return 0
        sleep 0.2
    done
    die "$1 never answered"
}

UP_PORT=$(free_port)
"$BIN/examples/bench_upstream" --listen "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
GW_PORT=$(free_port)
write_fixture "$TMP/policies" "$GW_PORT" "$(free_port)" "$UP_PORT" "$TMP/data" "$HOST"
HY_PORT=$(free_port)

ROWS=()
# measure LABEL PORT PATH [HEADER] -- CMD...: one contender, one row.
measure() {
    local label=$1 port=$2 path=$3 header=${4:-}
    shift 4
    [ "$1" = -- ] && shift
    local out="$TMP/callgrind.${#ROWS[@]}"
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" >"$TMP/$port.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    ready "http://127.0.0.1:$port/public/x"
    if [ "$header" = signin ]; then
        PORTCULLIS_NEW_PASSWORD="$PASSWORD" "$BIN/portcullis" user add --tenant bench --username bench \
            --config "$TMP/policies" >/dev/null
        header=$(python3 bench/signin.py "127.0.0.1:$port" "$HOST" bench "$PASSWORD" bench)
    fi
    local args=(-t1 -c16 -H "Host: $HOST")
    [ -z "$header" ] || args+=(-H "$header")
    wrk "${args[@]}" -d2s "http://127.0.0.1:$port$path" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    wrk "${args[@]}" -d"$DURATION" "http://127.0.0.1:$port$path" >"$TMP/wrk.$port"
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ! grep -q "Non-2xx\|Socket errors" "$TMP/wrk.$port" || die "$label: non-2xx answers: $(cat "$TMP/wrk.$port")"
    local requests dump total
    requests=$(awk '/requests in/ {print $1}' "$TMP/wrk.$port")
    dump=$(ls "$out".*.1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    ROWS+=("$label|$requests|$((total / requests))")
    say "$label: $requests requests, $((total / requests)) instructions/request"
}

measure "bare hyper proxy (reference)" "$HY_PORT" /public/x "" -- \
    "$BIN/examples/bench_hyper_proxy" --listen "127.0.0.1:$HY_PORT" --upstream "127.0.0.1:$UP_PORT"
measure "portcullis, public route" "$GW_PORT" /public/x "" -- "$BIN/portcullis" run --config "$TMP/policies"
measure "portcullis, authenticated (SQLite)" "$GW_PORT" /app/x signin -- "$BIN/portcullis" run --config "$TMP/policies"

base=${ROWS[0]##*|}
echo "**Instructions per request** (callgrind, user space only) — $(date -u '+%Y-%m-%d %H:%M UTC'), wrk -t1 -c16 -d$DURATION"
echo
echo "| contender | requests | instructions/request | vs bare hyper |"
echo "| --- | ---: | ---: | ---: |"
for row in "${ROWS[@]}"; do
    IFS='|' read -r label requests per <<<"$row"
    awk -v l="$label" -v r="$requests" -v p="$per" -v b="$base" 'BEGIN { printf "| %s | %d | %d | %.2f× |\n", l, r, p, p / b }'
done
