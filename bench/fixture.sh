# Sourced by the bench scripts: the gateway's benchmark policy set.
#
# write_fixture DIR PUBLIC_PORT ADMIN_PORT UPSTREAM_PORT DATA_DIR HOST
# writes DIR/{gateway.toml,tiers/bench.toml,tenants/bench.toml}: one tier, one tenant on
# HOST whose `/public/` is public and everything else authenticated, plaintext on
# 127.0.0.1, the embedded store under DATA_DIR.
write_fixture() {
    local dir=$1 public=$2 admin=$3 upstream=$4 data=$5 host=$6
    mkdir -p "$dir/tiers" "$dir/tenants" "$data"
    cat >"$dir/gateway.toml" <<EOF
# Benchmark fixture (written by bench/fixture.sh).
[listen]
public = "127.0.0.1:$public"
admin = "127.0.0.1:$admin"
plaintext = true

[store]
data = "$data"
EOF
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
