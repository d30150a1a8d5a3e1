#!/usr/bin/env bash
# Set up and run the demo: the master catalog and five sample tenants (schema per tenant,
# each with its own role and generated data) in database "tenantgate" on the local
# PostgreSQL, then the proxy in the foreground on 127.0.0.1:6432 (Ctrl-C stops it).
# Rerunnable: existing tenants and their data are left as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
if [ -z "$(psql -X -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'tenantgate'")" ]; then
  psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE tenantgate"
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenantgate/target}
cargo build --release
BIN=$CARGO_TARGET_DIR/release/tenantgate

"$BIN" --config config/demo.toml setup --sample

cat <<BANNER

tenantgate demo: tenants acme, techco, startup, globex, initech on 127.0.0.1:6432.
Connect as tenant <key> with user app@<key> and password <key>-app-password, e.g.:
  psql "host=127.0.0.1 port=6432 user=app@acme dbname=tenantgate password=acme-app-password"
  psql "host=127.0.0.1 port=6432 user=app@techco dbname=tenantgate password=techco-app-password"
Then try: SELECT count(*) FROM users WHERE last_login > now() - interval '30 days';
Admin database (SQL-style or plain English commands):
  psql "host=127.0.0.1 port=6432 user=admin dbname=admin password=admin-demo-password"
  admin=> Which tenants are approaching their plan limits?
Walkthrough of the whole scenario, in another terminal: $BIN demo
Manage tenants meanwhile: tenantgate --config config/demo.toml tenant list

BANNER
exec "$BIN" --config config/demo.toml serve
