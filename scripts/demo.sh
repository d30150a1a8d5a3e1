#!/usr/bin/env bash
# Set up and run the demo: five sample tenants on the local PostgreSQL, then the
# proxy in the foreground with config/demo.toml (Ctrl-C stops it). Rerunnable:
# existing tenants and their data are left as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres bash scripts/demo-setup.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenantgate/target}
cargo build --release

cat <<'BANNER'

tenantgate demo: tenants acme, techco, startup, globex, initech on 127.0.0.1:6432.
Connect as tenant <key> with user app@<key> and password <key>-app-password, e.g.:
  psql "host=127.0.0.1 port=6432 user=app@acme dbname=tenantgate password=acme-app-password"
  psql "host=127.0.0.1 port=6432 user=app@techco dbname=tenantgate password=techco-app-password"
  psql "host=127.0.0.1 port=6432 user=app@startup dbname=tenantgate password=startup-app-password"
Then try: SELECT count(*) FROM users WHERE last_login > now() - interval '30 days';

BANNER
exec "$CARGO_TARGET_DIR/release/tenantgate" serve --config config/demo.toml
