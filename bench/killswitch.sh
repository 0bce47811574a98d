#!/usr/bin/env bash
# Kill switch benchmark (issue: time from a trip returning to the last request in scope
# served, with 10,000 live sessions on one node). Writes bench/results/killswitch.md.
# Env: KS_SESSIONS (10000), KS_CLIENTS (32), BENCH_BUILD (1).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${BENCH_BUILD:-1}" = 0 ] || cargo build --release --quiet --example bench_killswitch --bin portcullis
out=bench/results/killswitch.md
{
    echo "_$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -m), $(nproc) cores; gateway (demo, SQLite store) and load in one process each, unpinned_"
    echo
    target/release/examples/bench_killswitch --sessions "${KS_SESSIONS:-10000}" --clients "${KS_CLIENTS:-32}"
} | tee "$out"
