#!/usr/bin/env bash
# Revocation propagation benchmark (issue 16): 3 replicas on one Redis under light load,
# 1,000 revocations on replica 1, time until replicas 2 and 3 refuse each session.
# Writes bench/results/propagation.md. Env: PROP_REVOCATIONS (1000), PROP_LOAD (2),
# BENCH_PROFILE (release; `debug` to skip the long release build), BENCH_BUILD (1).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
[ "${BENCH_BUILD:-1}" = 0 ] || cargo build $flag --quiet --example bench_propagation --bin portcullis
out=bench/results/propagation.md
{
    echo "_$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -m), $(nproc) cores, unpinned_"
    echo
    "target/$profile/examples/bench_propagation" --revocations "${PROP_REVOCATIONS:-1000}" \
        --load "${PROP_LOAD:-2}" --bin "target/$profile/portcullis"
} | tee "$out"
