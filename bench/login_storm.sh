#!/usr/bin/env bash
# Login throughput (argon2id on the bounded pool) and the proxy's latency during a login
# storm (BENCH.md item 3). Gateway and upstream pinned to CPU 0, both wrk on CPU 1.
# Env: STORM_DURATION (10s), STORM_USERS (200), STORM_CONNECTIONS (16).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${STORM_DURATION:-10s}
USERS=${STORM_USERS:-200}
STORM_CONNS=${STORM_CONNECTIONS:-16}
BIN=target/release/portcullis
UPSTREAM_BIN=target/release/examples/bench_upstream
[ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --quiet --example bench_upstream --bin portcullis

TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -fs -o /dev/null -H 'Host: bench.localhost' "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

UP=$(free_port); GW=$(free_port); ADM=$(free_port)
POL="$TMP/policies"; mkdir -p "$POL/tiers" "$POL/tenants"
printf '[listen]\npublic = "127.0.0.1:%s"\nadmin = "127.0.0.1:%s"\nplaintext = true\n\n[store]\ndata = "%s/data"\n' "$GW" "$ADM" "$TMP" >"$POL/gateway.toml"
printf 'name = "bench"\nupstream_allowlist = ["127.0.0.1"]\n\n[keys]\ncookie = "inline:bench-cookie-key-0123456789abcdef-0123456789"\n' >"$POL/tiers/bench.toml"
printf 'id = "bench"\ntier = "bench"\nhosts = ["bench.localhost"]\nupstream = "http://127.0.0.1:%s"\n\n[[routes]]\nprefix = "/public/"\naccess = "public"\n\n[[routes]]\nprefix = "/"\naccess = "authenticated"\n' "$UP" >"$POL/tenants/bench.toml"

echo "creating $USERS accounts..." >&2
for i in $(seq 0 $((USERS - 1))); do
    PORTCULLIS_NEW_PASSWORD="storm-user-password-42" "$BIN" user add --tenant bench --username "storm$i" --config "$POL" >/dev/null
done

taskset -c 0 "$UPSTREAM_BIN" --listen "127.0.0.1:$UP" & pids+=($!)
RUST_LOG=warn taskset -c 0 "$BIN" run --config "$POL" >"$TMP/gateway.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$GW/public/x"

cat >"$TMP/login.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  local body = '{"username":"storm' .. (counter % $USERS) .. '","password":"storm-user-password-42"}'
  return wrk.format("POST", "/.portcullis/api/login", {["Content-Type"] = "application/json"}, body)
end
LUA
proxy() { taskset -c 1 wrk -t1 -c64 -d"$DURATION" --latency -H 'Host: bench.localhost' "http://127.0.0.1:$GW/public/x"; }
storm() { taskset -c 1 wrk -t1 -c"$STORM_CONNS" -d"$DURATION" -s "$TMP/login.lua" -H 'Host: bench.localhost' "http://127.0.0.1:$GW/"; }
p99() { awk '$1 == "99%" {print $2}'; }
rps() { awk '/Requests\/sec/ {print $2}'; }

taskset -c 1 wrk -t1 -c64 -d2s -H 'Host: bench.localhost' "http://127.0.0.1:$GW/public/x" >/dev/null
quiet=$(proxy)
storm >"$TMP/storm.txt" &
storm_pid=$!
loaded=$(proxy)
wait "$storm_pid"
total=$(awk '/requests in/ {print $1}' "$TMP/storm.txt")
non2xx=$(awk '/Non-2xx/ {print $5}' "$TMP/storm.txt"); non2xx=${non2xx:-0}
secs=${DURATION%s}
mkdir -p bench/results
{
    echo "_$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -m), $(nproc) cores; gateway and upstream on CPU 0, wrk on CPU 1; $USERS accounts, $STORM_CONNS login connections, ${DURATION}_"
    echo
    echo "| measure | value |"
    echo "| --- | ---: |"
    echo "| password logins accepted per second (argon2id m=19456 KiB, t=2, p=1) | $(( (total - non2xx) / secs )) |"
    echo "| login requests refused busy/throttled (503/429) | $non2xx of $total |"
    echo "| public route req/s, quiet | $(echo "$quiet" | rps) |"
    echo "| public route req/s, during the login storm | $(echo "$loaded" | rps) |"
    echo "| public route p99, quiet | $(echo "$quiet" | p99) |"
    echo "| public route p99, during the login storm | $(echo "$loaded" | p99) |"
} | tee bench/results/login.md
