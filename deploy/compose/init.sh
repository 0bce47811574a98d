#!/bin/sh
# One-shot set-up of docker-compose.yml, run by its `init` service (as root, in the
# portcullis image) before Redis and the gateways start, on every `docker compose up`.
#
# - Copies the policy files of deploy/compose/policies/ into the `policy` volume, so an
#   edit there applies at the next `up`.
# - Makes, once, what must not be committed: each tier's keys (`portcullis keys init`),
#   each tier's Redis password, and one operator token per tier (`portcullis operator
#   token`). Tokens go to the `operator-tokens` volume, which only this service mounts;
#   the tier files get their hashes.
# - Writes Redis's ACL file: a user per tier that reaches only `portcullis:<tier>:*`,
#   holding the SHA-256 of the password, never the password.
# - Ends with `portcullis check`, so a broken policy stops the gateways from starting.
#
# The paths can be moved (tests/blackbox/deploy.rs runs this script outside a container).
set -eu

src=${POLICY_SOURCE:-/compose/policies}
dir=${POLICY_DIR:-/etc/portcullis}
acl_dir=${REDIS_ACL_DIR:-/etc/redis-acl}
tokens_dir=${OPERATOR_TOKENS_DIR:-/var/lib/portcullis-tokens}
portcullis=${PORTCULLIS:-portcullis}
# The runtime user of deploy/Dockerfile; empty leaves the owner as it is.
owner=${PORTCULLIS_OWNER-10001:10001}

umask 077
mkdir -p "$dir/tiers" "$dir/tenants" "$dir/secrets" "$dir/operators" "$acl_dir" "$tokens_dir"

random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

cp "$src/gateway.toml" "$dir/gateway.toml"
rm -f "$dir"/tiers/*.toml "$dir"/tenants/*.toml
cp "$src"/tenants/*.toml "$dir/tenants/"

acl="user default on nopass resetkeys resetchannels -@all +ping"
for template in "$src"/tiers/*.toml; do
    tier=$(basename "$template" .toml)
    case $tier in
        prod) operator=olivia ;;
        staging) operator=sofia ;;
        *) operator=operator-$tier ;;
    esac

    if [ ! -f "$dir/secrets/$tier-cookie.key" ]; then
        "$portcullis" keys init --tier "$tier" --config "$dir" >/dev/null
    fi
    password_file=$dir/secrets/redis-$tier.password
    if [ ! -f "$password_file" ]; then
        random_hex >"$password_file"
    fi
    if [ ! -f "$dir/operators/$tier.toml" ]; then
        made=$("$portcullis" operator token --name "$operator")
        printf '%s\n' "$made" | sed -n '3p' | tr -d ' ' >"$tokens_dir/$tier-$operator.token"
        printf '%s\n' "$made" | sed -n '/^\[\[operators\]\]/,$p' >"$dir/operators/$tier.toml"
        echo "operator token of $operator (tier $tier) written to the operator-tokens volume:"
        echo "  docker compose run --rm --no-deps --entrypoint cat init $tokens_dir/$tier-$operator.token"
    fi
    { cat "$template"; echo; cat "$dir/operators/$tier.toml"; } >"$dir/tiers/$tier.toml"

    redis_user=$(sed -n 's/^redis_user *= *"\(.*\)"/\1/p' "$template")
    hash=$(printf '%s' "$(cat "$password_file")" | sha256sum | cut -d' ' -f1)
    acl="$acl
user $redis_user on #$hash resetkeys ~portcullis:$tier:* resetchannels &portcullis:$tier:* +@all -@dangerous"
done

printf '%s\n' "$acl" >"$acl_dir/users.acl"
# Redis runs as its own user: the file holds hashes only.
chmod 0755 "$acl_dir"
chmod 0644 "$acl_dir/users.acl"
if [ -n "$owner" ]; then
    chown -R "$owner" "$dir"
fi

"$portcullis" check --config "$dir"
