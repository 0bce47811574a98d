#!/usr/bin/env bash
# Instructions per request under callgrind: a deterministic companion to bench/run.sh.
#
# Wall-clock ratios on a shared 2-core machine move by ±20 % from run to run; the number
# of user-space instructions a server executes per request does not (valgrind counts
# them, whatever else the machine does). Use it to tell whether a change on the request
# path made the gateway cheaper. It does not count the kernel (syscalls, TCP), and it
# runs SHA-256 in software (valgrind hides SHA-NI), so it is no substitute for run.sh.
#
# For the bare hyper proxy (alone, and with the forwarding headers every gateway adds,
# as a floor), the gateway's public route and its authenticated route
# (a session signed in with password + TOTP) on the SQLite and the Redis store, and the
# authenticated route again with the JSON access log on: start the server under
# callgrind, warm up, zero the counters, load it with wrk for BENCH_DURATION, dump, and
# divide. Every server is pinned to one CPU, as in bench/run.sh (the gateway then runs
# its one-thread runtime, like the bare hyper proxy).
#
# Environment:
#   BENCH_DURATION   measured wrk run length (default 10s)
#   BENCH_BUILD      0 skips cargo build
#   BENCH_ONLY       comma-separated rows to run (default all): hyper, floor, public, auth,
#                    redis, log
#   BENCH_KEEP       a directory to keep the callgrind dumps in (for callgrind_annotate)
#   BENCH_COMPARE    another portcullis binary (say, a build of the base commit): its
#                    public and auth rows are measured right after this tree's, in the
#                    same session, so a change is compared without run-to-run drift
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-10s}
ONLY=${BENCH_ONLY:-}
KEEP=${BENCH_KEEP:-}
COMPARE=${BENCH_COMPARE:-}
HOST=bench.localhost
PASSWORD="bench-user-password-42"
# shellcheck source=bench/fixture.sh
. bench/fixture.sh

say() { echo "instructions: $*" >&2; }
die() { say "error: $*"; exit 1; }

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

for tool in valgrind callgrind_control callgrind_annotate wrk taskset; do
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
# measure KEY LABEL LOG PORT PATH [HEADER] -- CMD...: one contender, one row. LOG is the
# server's RUST_LOG; HEADER "signin[:STORE]" signs a fresh user in first.
measure() {
    local key=$1 label=$2 log=$3 port=$4 path=$5 header=${6:-}
    shift 6
    [ "$1" = -- ] && shift
    local out="$TMP/callgrind.$key"
    RUST_LOG=$log taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" >"$TMP/$port.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    ready "http://127.0.0.1:$port/public/x"
    if [[ "$header" == signin* ]]; then
        local store=()
        [ "$header" = signin ] || store=(--store "${header#signin:}")
        # One user per row: the rows share the fixture's data directory.
        PORTCULLIS_NEW_PASSWORD="$PASSWORD" "$BIN/portcullis" user add --tenant bench --username "bench-$key" \
            --config "$TMP/policies" "${store[@]}" >/dev/null
        header=$(python3 bench/signin.py "127.0.0.1:$port" "$HOST" "bench-$key" "$PASSWORD" bench)
    fi
    # A generous timeout: valgrind is slow, and the machine may be busy.
    local args=(-t1 -c16 --timeout 30s -H "Host: $HOST")
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
    [ "${requests:-0}" -gt 0 ] || die "$label: no request answered in $DURATION: $(cat "$TMP/wrk.$port")"
    dump=$(ls "$out".*.1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    [ -z "$KEEP" ] || { mkdir -p "$KEEP"; cp "$dump" "$KEEP/callgrind.$key"; echo "$requests" >"$KEEP/requests.$key"; }
    # SHA-256 (the session cookie's store key) runs in software under valgrind, which
    # hides SHA-NI; on the real CPU it costs a small fraction of this.
    sha=$(callgrind_annotate --threshold=100 --inclusive=no --auto=no "$dump" 2>/dev/null |
        awk '/sha2::sha256::compress256/ {gsub(",", "", $1); sum += $1} END {print sum + 0}')
    ROWS+=("$label|$requests|$((total / requests))|$((sha / requests))")
    say "$label: $requests requests, $((total / requests)) instructions/request"
}

GATEWAY=("$BIN/portcullis" run --config "$TMP/policies")
if [ -n "$COMPARE" ]; then
    [ -x "$COMPARE" ] || die "BENCH_COMPARE=$COMPARE is not an executable"
    OTHER=("$COMPARE" run --config "$TMP/policies")
    OTHER_NAME=$(basename "$COMPARE")
fi
! wanted hyper || measure hyper "bare hyper proxy (reference)" warn "$HY_PORT" /public/x "" -- \
    "$BIN/examples/bench_hyper_proxy" --listen "127.0.0.1:$HY_PORT" --upstream "127.0.0.1:$UP_PORT"
! wanted floor || measure floor "bare hyper proxy + forwarding headers (floor)" warn "$HY_PORT" /public/x "" -- \
    "$BIN/examples/bench_hyper_proxy" --listen "127.0.0.1:$HY_PORT" --upstream "127.0.0.1:$UP_PORT" --forwarding
! wanted public || measure public "portcullis, public route" warn "$GW_PORT" /public/x "" -- "${GATEWAY[@]}"
[ -z "$COMPARE" ] || ! wanted public ||
    measure public-other "$OTHER_NAME, public route" warn "$GW_PORT" /public/x "" -- "${OTHER[@]}"
! wanted auth || measure auth "portcullis, authenticated (SQLite)" warn "$GW_PORT" /app/x signin -- "${GATEWAY[@]}"
[ -z "$COMPARE" ] || ! wanted auth ||
    measure auth-other "$OTHER_NAME, authenticated (SQLite)" warn "$GW_PORT" /app/x signin -- "${OTHER[@]}"
if wanted redis; then
    command -v redis-server >/dev/null || die "redis-server is not installed"
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    measure redis "portcullis, authenticated (Redis)" warn "$GW_PORT" /app/x "signin:$REDIS_URL" -- \
        "${GATEWAY[@]}" --store "$REDIS_URL"
fi
# The access log goes to stdout, which measure() sends to a file, as a deployment would.
! wanted log || measure log "portcullis, authenticated (SQLite), JSON access log at info" info "$GW_PORT" /app/x \
    signin -- "${GATEWAY[@]}"

[ ${#ROWS[@]} -gt 0 ] || die "no row selected (BENCH_ONLY=$ONLY)"
IFS='|' read -r _ _ base _ <<<"${ROWS[0]}"
echo "**Instructions per request** (callgrind, user space only) — $(date -u '+%Y-%m-%d %H:%M UTC'), wrk -t1 -c16 -d$DURATION"
echo
echo "| contender | requests | instructions/request | vs bare hyper | of which software SHA-256 | without it, vs bare hyper |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for row in "${ROWS[@]}"; do
    IFS='|' read -r label requests per sha <<<"$row"
    awk -v l="$label" -v r="$requests" -v p="$per" -v s="$sha" -v b="$base" \
        'BEGIN { printf "| %s | %d | %d | %.2f× | %d | %.2f× |\n", l, r, p, p / b, s, (p - s) / b }'
done
per_row() { # LABEL: its instructions per request
    local row label requests per sha
    for row in "${ROWS[@]}"; do
        IFS='|' read -r label requests per sha <<<"$row"
        [ "$label" != "$1" ] || echo "$per"
    done
}
auth=$(per_row "portcullis, authenticated (SQLite)")
logged=$(per_row "portcullis, authenticated (SQLite), JSON access log at info")
if [ -n "$auth" ] && [ -n "$logged" ]; then
    echo
    echo "The JSON access log adds $((logged - auth)) instructions per request."
fi
