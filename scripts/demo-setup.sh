#!/usr/bin/env bash
# Sample tenants of the demo, on one PostgreSQL database (schema per tenant).
# For each tenant: role tg_<key> (login, no privileges of its own), schema
# tenant_<key> owned by it and closed to others, and, the first time only, the tenant
# template plus sample data, created *as that role* so it owns its tables.
# Idempotent. Connects with the usual PG* variables (PGHOST, PGPORT, PGUSER): run by
# scripts/demo.sh, and by the postgres container of docker-compose.yml as an initdb script.
set -euo pipefail

ROOT=${TENANTGATE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
DB=${TENANTGATE_DB:-tenantgate}
# Quiet: no NOTICEs about objects that already exist.
psql_() { PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# key:plan:users — keep in step with config/demo.toml.
TENANTS="acme:enterprise:200 techco:pro:80 startup:free:10 globex:starter:30 initech:pro:60"

if [ -z "$(psql_ -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
  psql_ -d postgres -c "CREATE DATABASE \"$DB\""
fi

# Nobody may create objects in (or use) the shared public schema; PG 15 already
# denies CREATE, this also covers older clusters and USAGE.
psql_ -d "$DB" -c "REVOKE ALL ON SCHEMA public FROM PUBLIC"

for t in $TENANTS; do
  IFS=: read -r key plan users <<<"$t"
  role=tg_$key schema=tenant_$key
  # Keys are fixed above and match [a-z0-9_]+, so plain interpolation is safe.
  psql_ -d "$DB" <<SQL
SELECT 'CREATE ROLE $role' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \gexec
ALTER ROLE $role LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
CREATE SCHEMA IF NOT EXISTS $schema AUTHORIZATION $role;
REVOKE ALL ON SCHEMA $schema FROM PUBLIC;
COMMENT ON SCHEMA $schema IS 'tenant $key, plan $plan';
GRANT CONNECT ON DATABASE "$DB" TO $role;
SQL

  if [ -z "$(psql_ -d "$DB" -Atc "SELECT to_regclass('$schema.users')")" ]; then
    echo "demo-setup: tenant $key ($plan): template + $users users" >&2
    files=()
    for f in "$ROOT"/migrations/tenant/*.sql; do files+=(-f "$f"); done
    # One transaction, as the tenant's role, inside its schema.
    psql_ -d "$DB" -1 -v tenant_users="$users" \
      -c "SET ROLE $role; SET search_path = $schema" \
      "${files[@]}" -f "$ROOT/scripts/sample-data.sql"
  fi
done
