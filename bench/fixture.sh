# shellcheck shell=bash
# Sourced by the bench scripts: the gateway's benchmark policy set.
#
# write_fixture DIR PUBLIC_PORT ADMIN_PORT UPSTREAM_PORT DATA_DIR HOST [CERT_PEM KEY_PEM]
# writes DIR/{gateway.toml,tiers/bench.toml,tenants/bench.toml}: one tier, one tenant on
# HOST whose `/public/` is public and everything else authenticated, plaintext on
# 127.0.0.1, the embedded store under DATA_DIR. With CERT_PEM and KEY_PEM (absolute
# paths) the public listener serves TLS with that certificate for HOST instead.
write_fixture() {
    local dir=$1 public=$2 admin=$3 upstream=$4 data=$5 host=$6 cert=${7:-} key=${8:-}
    local plaintext=true
    [ -z "$cert" ] || plaintext=false
    mkdir -p "$dir/tiers" "$dir/tenants" "$data"
    cat >"$dir/gateway.toml" <<EOF
# Benchmark fixture (written by bench/fixture.sh).
[listen]
public = "127.0.0.1:$public"
admin = "127.0.0.1:$admin"
plaintext = $plaintext

[store]
data = "$data"
EOF
    if [ -n "$cert" ]; then
        cat >>"$dir/gateway.toml" <<EOF

[[tls.certificates]]
hosts = ["$host"]
cert = "file:$cert"
key = "file:$key"
EOF
    fi
    cat >"$dir/tiers/bench.toml" <<EOF
name = "bench"
production = false
upstream_allowlist = ["127.0.0.1"]

[keys]
cookie = "inline:bench-cookie-key-0123456789abcdef"
EOF
    cat >"$dir/tenants/bench.toml" <<EOF
id = "bench"
name = "Bench"
tier = "bench"
hosts = ["$host"]
upstream = "http://127.0.0.1:$upstream"

[[routes]]
prefix = "/public/"
access = "public"

[[routes]]
prefix = "/"
access = "authenticated"
EOF
}
