#!/usr/bin/env bash
# Provisioning and tenant-migration timings against the local PostgreSQL, in a scratch
# catalog database that is dropped afterwards:
#   1. create PROVISION tenants one after another with `tenantgate tenant create` and report
#      p50/p95/max of the provisioning time it measures (schema, role, template, catalog
#      row, audit entry, committed);
#   2. bring the count to MIGRATE tenants and time `tenantgate migrate` of one new
#      migration across all of them.
#   bash benches/catalog.sh                    # PROVISION=200 MIGRATE=1000
set -euo pipefail
cd "$(dirname "$0")/.."
PROVISION=${PROVISION:-200}
MIGRATE=${MIGRATE:-1000}
CONCURRENCY=${CONCURRENCY:-4}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenantgate/target}
BIN=${TENANTGATE_BIN:-$CARGO_TARGET_DIR/release/tenantgate}
[ -x "$BIN" ] || cargo build --release
bash scripts/services.sh

DB=tg_catbench_$$
PREFIX=b$$
WORK=$(mktemp -d)
psql_() { psql -X -q -h 127.0.0.1 -U postgres "$@"; }
cleanup() {
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  psql_ -d postgres -Atc "SELECT rolname FROM pg_roles WHERE rolname LIKE 'tg_${PREFIX}_%'" 2>/dev/null |
    while read -r r; do psql_ -d postgres -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
psql_ -d postgres -c "CREATE DATABASE $DB"
export TENANTGATE_CATALOG_URL="postgresql://postgres@127.0.0.1:5432/$DB"
TENANTGATE_CATALOG_KEY=$("$BIN" gen-key)
export TENANTGATE_CATALOG_KEY TENANTGATE_LOG=warn
"$BIN" setup >/dev/null

for i in $(seq 1 "$PROVISION"); do
  "$BIN" tenant create "${PREFIX}_$i" --plan starter --password x |
    sed -n 's/.* created in \([0-9]*\) ms.*/\1/p'
done | sort -n >"$WORK/ms"
pct() { awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.5); if (i<1) i=1; print a[i]}' "$WORK/ms"; }
echo "provisioning $PROVISION tenants: p50 $(pct 50) ms, p95 $(pct 95) ms, max $(tail -1 "$WORK/ms") ms"

for i in $(seq $((PROVISION + 1)) "$MIGRATE"); do
  "$BIN" tenant create "${PREFIX}_$i" --plan free --password x >/dev/null
done
mkdir "$WORK/mig"
cp migrations/tenant/*.sql "$WORK/mig/"
echo "CREATE INDEX IF NOT EXISTS tasks_created_idx ON tasks (created_at);" >"$WORK/mig/9001_bench.sql"
start=$(date +%s.%N)
"$BIN" migrate --dir "$WORK/mig" --concurrency "$CONCURRENCY"
end=$(date +%s.%N)
echo "migrating $MIGRATE tenant schemas (one new migration, concurrency $CONCURRENCY): $(echo "$end - $start" | bc) s wall"
