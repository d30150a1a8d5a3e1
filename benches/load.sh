#!/usr/bin/env bash
# Load comparison on loopback: pgbench -S (read-only point selects) straight to
# PostgreSQL, through pgbouncer (Debian's, transaction pooling) and through
# tenantgate (transaction pooling), same pool size for both proxies, in one run.
# Reports TPS, latency, proxy CPU per transaction and the ratio to direct, then the
# memory of 1000 idle clients on each proxy. Everything it starts is stopped on exit.
#
#   bash benches/load.sh                        # ~6 min with the defaults
#   TARGETS="tenantgate-core tenantgate-notel tenantgate-nolimit tenantgate" bash benches/load.sh
#   DURATION=3 CLIENTS="1 8" bash benches/load.sh
#   TARGETS="direct pgbouncer" bash benches/load.sh   # without tenantgate
#   PGO=1 ROUNDS=3 DURATION=5 bash benches/load.sh     # the profile-guided build (README's table)
#
# Targets: direct, pgbouncer, tenantgate (telemetry on: every statement becomes an event;
# plan limits on: the tenant has a rate and a daily quota, shared through the local Redis),
# tenantgate-core (tenant routing, guard and schema rewriting only: telemetry and limits off),
# tenantgate-notel (the same with [telemetry] enabled = false) and tenantgate-nolimit (the
# same with limits off and no Redis): the pairs measure what telemetry and rate limiting
# cost. With PGO=1 the tenantgate targets run the profile-guided build of
# scripts/build-pgo.sh, and tenantgate-core-plain the plain release build with the core
# configuration, for the difference in the same run. TG_TELEMETRY_SINK=embedded (default:
# the embedded store) or mongodb (the mongod of scripts/mongod.sh, database tg_bench).
#
# Knobs: TG_WORKERS (1) SCALE (10) DURATION seconds per run (10) POOL_SIZE (20) CLIENTS ("1 8 32")
# MODES ("simple extended prepared") TARGETS IDLE_CLIENTS (1000, 0 skips)
# ROUNDS (1): each cell runs ROUNDS times, the targets taking turns within a round, and the
# table shows the median run (by TPS) with the TPS range; on a noisy shared VM one run per
# cell mostly measures the noise (ROUNDS=3 DURATION=5 takes about as long as the default).
# PGO (0; 1: scripts/build-pgo.sh builds the binary). TENANTGATE_BIN (default: the release
# build, brought up to date with cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
DURATION=${DURATION:-10}
POOL_SIZE=${POOL_SIZE:-20}
CLIENTS=${CLIENTS:-"1 8 32"}
MODES=${MODES:-"simple extended prepared"}
# Not all five by default: each proxy keeps POOL_SIZE server connections, and five of them
# plus 32 direct clients exceed PostgreSQL's default max_connections (100).
TARGETS=${TARGETS:-"direct pgbouncer tenantgate-core tenantgate"}
TG_TELEMETRY_SINK=${TG_TELEMETRY_SINK:-embedded}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000}
ROUNDS=${ROUNDS:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenantgate/target}
PGO=${PGO:-0}
PLAIN_BIN=$CARGO_TARGET_DIR/release/tenantgate
CLK_TCK=$(getconf CLK_TCK)

has() { [[ " $TARGETS " == *" $1 "* ]]; }
log() { echo "load.sh: $*" >&2; }
psql_su() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres "$@"; }

# --- cleanup: stop exactly the processes this script started -------------------
WORK=$(mktemp -d /tmp/tenantgate-bench.XXXXXX)
chmod 755 "$WORK"   # pgbouncer runs as another user and reads its files here
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ------------------------------------------------------------
bash scripts/services.sh
if has pgbouncer && ! command -v pgbouncer >/dev/null; then
  log "installing pgbouncer"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
fi
if [[ " $TARGETS " == *" tenantgate"* ]]; then
  if [ "$PGO" = 1 ] && [ -z "${TENANTGATE_BIN:-}" ]; then
    TENANTGATE_BIN=$(bash scripts/build-pgo.sh | tail -1)
  fi
  TENANTGATE_BIN=${TENANTGATE_BIN:-$PLAIN_BIN}
  # The plain build is brought up to date whenever a target runs it.
  if [ "$TENANTGATE_BIN" = "$PLAIN_BIN" ] || has tenantgate-core-plain; then
    log "building tenantgate (release)"
    cargo build --release
  fi
fi
# 1000 idle clients need file descriptors in the proxies and in the client.
[ "$(ulimit -n)" -ge 4096 ] || ulimit -n 4096 || true

# --- database: role tg_bench owns schema bench in database tg_bench -------------
psql_su -d postgres <<'SQL'
SELECT 'CREATE ROLE tg_bench' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tg_bench') \gexec
ALTER ROLE tg_bench LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE tg_bench SET search_path = bench;
SELECT 'CREATE DATABASE tg_bench' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tg_bench') \gexec
SQL
psql_su -d tg_bench <<'SQL'
CREATE SCHEMA IF NOT EXISTS bench AUTHORIZATION tg_bench;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
# pgbench -i only when the tables are missing or of another scale.
q() { psql -X -h 127.0.0.1 -U tg_bench -d tg_bench -Atc "$1"; }
branches=0
[ -z "$(q "SELECT to_regclass('bench.pgbench_branches')")" ] ||
  branches=$(q "SELECT count(*) FROM bench.pgbench_branches")
if [ "$branches" != "$SCALE" ]; then
  log "pgbench -i -s $SCALE"
  pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p 5432 -U tg_bench tg_bench 2>&1 | tail -1 >&2
fi

# --- helpers ------------------------------------------------------------------
# free_port PREFERRED: PREFERRED if nothing listens there, else any free port.
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

# wait_ready NAME PID PORT USER: until the server answers, or fail with its log.
wait_ready() {
  for _ in $(seq 1 60); do
    kill -0 "$2" 2>/dev/null || { log "$1 exited:"; tail -20 "$WORK/$1.log" >&2; exit 1; }
    pg_isready -q -h 127.0.0.1 -p "$3" -U "$4" -d tg_bench && return 0
    sleep 0.5
  done
  log "$1 not ready on port $3"; tail -20 "$WORK/$1.log" >&2; exit 1
}

# CPU time (user + system, all threads) of a process, in clock ticks. Fields 14 and
# 15 of /proc/PID/stat; counted after the ")" closing the command name.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# --- pgbouncer ------------------------------------------------------------------
if has pgbouncer; then
  PGB_PORT=$(free_port 6433)
  echo '"tg_bench" ""' >"$WORK/userlist.txt"
  cat >"$WORK/pgbouncer.ini" <<INI
[databases]
tg_bench = host=127.0.0.1 port=5432 dbname=tg_bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 2000
log_connections = 0
log_disconnections = 0
INI
  # pgbouncer refuses to run as root; setpriv execs it, so $! is pgbouncer itself.
  as_user=()
  [ "$(id -u)" != 0 ] || as_user=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  "${as_user[@]}" pgbouncer "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.log" 2>&1 &
  PGB_PID=$!; PIDS+=("$PGB_PID")
  wait_ready pgbouncer "$PGB_PID" "$PGB_PORT" tg_bench
  log "pgbouncer $(pgbouncer --version | head -1 | cut -d' ' -f2) pid $PGB_PID on port $PGB_PORT"
fi

# --- tenantgate ---------------------------------------------------------------------
# start_tg NAME PREFERRED_PORT TELEMETRY(true|false) LIMITS(true|false) [BINARY]: sets
# TG_PORT, TG_PID.
start_tg() {
  local name=$1 bin=${5:-$TENANTGATE_BIN} mongo_url="" redis_url="" qps=0 per_day=0
  TG_PORT=$(free_port "$2")
  [ "$TG_TELEMETRY_SINK" != mongodb ] || mongo_url="mongodb://127.0.0.1:27017"
  if [ "$4" = true ]; then
    # Limits high enough never to refuse, so every statement takes the limiter's path.
    redis_url="redis://127.0.0.1:6379" qps=1000000 per_day=1000000000000
  fi
  cat >"$WORK/$name.toml" <<TOML
# Written by benches/load.sh: one tenant "bench", trust auth, pool as pgbouncer's.
listen = "127.0.0.1:$TG_PORT"
# One runtime thread, like pgbouncer: on 2 cores shared with PostgreSQL and pgbench a
# second proxy thread buys little TPS for more CPU per transaction (TG_WORKERS=2 to try).
workers = ${TG_WORKERS:-1}
catalog_url = ""
instance_name = "bench"

[tls]
cert = ""
key = ""

[pool]
mode = "transaction"
default_size = $POOL_SIZE
instance_max_connections = 100
query_wait_timeout_ms = 5000
idle_timeout_ms = 600000
lifetime_ms = 3600000
connect_timeout_ms = 5000
prepared_statements_cache = 256

[limits]
max_message_bytes = 67108864
max_clients = 10000
client_login_timeout_ms = 15000
shutdown_timeout_ms = 30000
enforce_plans = $4

[[auth]]
user = "*"
address = "0.0.0.0/0"
method = "trust"

[[instances]]
name = "primary"
host = "127.0.0.1"
port = 5432
dbname = "tg_bench"

[[tenants]]
key = "bench"
instance = "primary"
schema = "bench"
database = "tg_bench"
backend_user = "tg_bench"
backend_password = ""
pool_mode = ""
pool_size = 0
queries_per_second = $qps
queries_per_day = $per_day

[[tenants.users]]
name = "app"
password = "bench"

[redis]
url = "$redis_url"
key_prefix = "tgbench:$$:$name:"

[telemetry]
enabled = $3
mongodb_url = "$mongo_url"
mongodb_database = "tg_bench"
dir = "$WORK/$name-telemetry"
TOML
  # Quiet logs, like pgbouncer's with connection logging off.
  TENANTGATE_LOG=${TENANTGATE_LOG:-warn} "$bin" serve --config "$WORK/$name.toml" \
    >"$WORK/$name.log" 2>&1 &
  TG_PID=$!; PIDS+=("$TG_PID")
  wait_ready "$name" "$TG_PID" "$TG_PORT" app@bench
  log "$name pid $TG_PID on port $TG_PORT (telemetry $3, sink $TG_TELEMETRY_SINK, limits $4, $bin)"
}
if has tenantgate-core; then
  start_tg tenantgate-core 6437 false false
  TGC_PORT=$TG_PORT TGC_PID=$TG_PID
fi
if has tenantgate-core-plain; then
  start_tg tenantgate-core-plain 6438 false false "$PLAIN_BIN"
  TGP_PORT=$TG_PORT TGP_PID=$TG_PID
fi
if has tenantgate-notel; then
  start_tg tenantgate-notel 6435 false true
  TGN_PORT=$TG_PORT TGN_PID=$TG_PID
fi
if has tenantgate-nolimit; then
  start_tg tenantgate-nolimit 6436 true false
  TGL_PORT=$TG_PORT TGL_PID=$TG_PID
fi
if has tenantgate; then
  start_tg tenantgate 6434 true true
fi

# --- runs -------------------------------------------------------------------------
: >"$WORK/runs"
NOTES=()

# bench TARGET MODE CLIENTS [EXTRA pgbench flag]: one pgbench run, one line of $WORK/runs.
bench() {
  local target=$1 mode=$2 c=$3 extra=${4:-} port user pid="" label=$2
  case $target in
    direct) port=5432 user=tg_bench ;;
    pgbouncer) port=$PGB_PORT user=tg_bench pid=$PGB_PID ;;
    tenantgate) port=$TG_PORT user=app@bench pid=$TG_PID ;;
    tenantgate-core) port=$TGC_PORT user=app@bench pid=$TGC_PID ;;
    tenantgate-core-plain) port=$TGP_PORT user=app@bench pid=$TGP_PID ;;
    tenantgate-notel) port=$TGN_PORT user=app@bench pid=$TGN_PID ;;
    tenantgate-nolimit) port=$TGL_PORT user=app@bench pid=$TGL_PID ;;
  esac
  [ -z "$extra" ] || label="$mode $extra"
  log "$target $label c=$c (${DURATION}s)"
  local before=0 after=0 out rc=0
  [ -z "$pid" ] || before=$(cpu_ticks "$pid")
  # timeout: a stuck proxy cannot hang the benchmark.
  out=$(PGPASSWORD=bench timeout $((DURATION + 60)) pgbench -S -n -T "$DURATION" \
        -c "$c" -j $((c < 2 ? c : 2)) -M "$mode" $extra \
        -h 127.0.0.1 -p "$port" -U "$user" tg_bench 2>&1) || rc=$?
  [ -z "$pid" ] || after=$(cpu_ticks "$pid")

  local tps lat txns cpu="-"
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -1)
  txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  if [ "$rc" != 0 ] || [ -z "$tps" ] || [ "${txns:-0}" = 0 ]; then
    echo "$target|$label|$c|failed (exit $rc)|-|-" >>"$WORK/runs"
    NOTES+=("$target $label c=$c: $(grep -m1 -iE 'error|fatal|abort' <<<"$out" || tail -1 <<<"$out")")
    return 0
  fi
  [ -z "$pid" ] || cpu=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$txns" \
                         'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
  echo "$target|$label|$c|$tps|$lat|$cpu" >>"$WORK/runs"
}

# One table row per target and cell: the median run by TPS (its latency and CPU), the
# TPS range over the rounds, and the median TPS over direct's median TPS.
table() {
  awk -F'|' -v rounds="$ROUNDS" '
    function median_idx(key,   n, i, j, t, idx) {
      n = cnt[key]
      for (i = 1; i <= n; i++) idx[i] = i
      for (i = 2; i <= n; i++)            # insertion sort of run indexes by TPS
        for (j = i; j > 1 && tps[key, idx[j]] < tps[key, idx[j - 1]]; j--) {
          t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t
        }
      lo[key] = tps[key, idx[1]]; hi[key] = tps[key, idx[n]]
      return idx[int((n + 1) / 2)]
    }
    {
      key = $1 "|" $2 "|" $3
      if (!(key in cnt)) { order[++keys] = key; cnt[key] = 0 }
      if ($4 ~ /^failed/) { failed[key] = $4; next }
      n = ++cnt[key]; tps[key, n] = $4 + 0; lat[key, n] = $5; cpu[key, n] = $6
    }
    END {
      for (k = 1; k <= keys; k++) {
        key = order[k]
        if (cnt[key] == 0) continue
        m[key] = median_idx(key)
        split(key, f, "|")
        if (f[1] == "direct") direct[f[2] "|" f[3]] = tps[key, m[key]]
      }
      for (k = 1; k <= keys; k++) {
        key = order[k]; split(key, f, "|")
        row = "| " f[1] " | " f[2] " | " f[3] " | "
        if (cnt[key] == 0) { print row failed[key] " | - | - | - |" (rounds > 1 ? " - |" : ""); continue }
        i = m[key]; d = direct[f[2] "|" f[3]]
        ratio = d > 0 ? sprintf("%.2f", tps[key, i] / d) : "-"
        row = row sprintf("%.0f", tps[key, i])
        if (rounds > 1) row = row " | " sprintf("%.0f–%.0f", lo[key], hi[key])
        print row " | " lat[key, i] " | " cpu[key, i] " | " ratio " |"
      }
    }' "$WORK/runs"
}

ORDER=""
for t in direct pgbouncer tenantgate-core tenantgate-core-plain tenantgate tenantgate-notel \
  tenantgate-nolimit; do
  has "$t" && ORDER+=" $t"
done
for mode in $MODES; do
  for c in $CLIENTS; do
    for _ in $(seq "$ROUNDS"); do
      for t in $ORDER; do bench "$t" "$mode" "$c"; done
    done
  done
done
# New connection per transaction: the cost of the login path.
for _ in $(seq "$ROUNDS"); do
  for t in $ORDER; do bench "$t" simple 8 -C; done
done

echo
echo "pgbench -S, scale $SCALE, ${DURATION}s per run, $ROUNDS round(s) per cell," \
  "proxy pools $POOL_SIZE, $(nproc) cores, loopback"
echo
if [ "$ROUNDS" -gt 1 ]; then
  echo "| target | mode | clients | TPS (median) | TPS range | avg latency ms | proxy CPU µs/txn | vs direct TPS |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
else
  echo "| target | mode | clients | TPS | avg latency ms | proxy CPU µs/txn | vs direct TPS |"
  echo "|---|---|---:|---:|---:|---:|---:|"
fi
table
if [ ${#NOTES[@]} -gt 0 ]; then
  echo
  # Once each, though every round of a failing cell adds its note.
  printf -- '- %s\n' "${NOTES[@]}" | awk '!seen[$0]++'
  if printf '%s\n' "${NOTES[@]}" | grep -q '^pgbouncer prepared'; then
    echo "- pgbouncer before 1.21 does not track protocol-level prepared statements, so" \
         "-M prepared fails in transaction pooling once clients share server connections."
  fi
fi

# --- idle clients: proxy memory per held connection ----------------------------------
if [ "$IDLE_CLIENTS" -gt 0 ] && { has pgbouncer || has tenantgate || has tenantgate-core; }; then
  PY=$(bash scripts/test-deps.sh | tail -1)
  echo
  if has pgbouncer; then
    "$PY" benches/idle_clients.py --port "$PGB_PORT" --user tg_bench --dbname tg_bench \
      --pid "$PGB_PID" --clients "$IDLE_CLIENTS" --label pgbouncer || log "idle test on pgbouncer failed"
  fi
  if has tenantgate; then
    "$PY" benches/idle_clients.py --port "$TG_PORT" --user app@bench --password bench \
      --dbname tg_bench --pid "$TG_PID" --clients "$IDLE_CLIENTS" --label tenantgate \
      || log "idle test on tenantgate failed"
  fi
  if has tenantgate-core; then
    "$PY" benches/idle_clients.py --port "$TGC_PORT" --user app@bench --password bench \
      --dbname tg_bench --pid "$TGC_PID" --clients "$IDLE_CLIENTS" --label tenantgate-core \
      || log "idle test on tenantgate-core failed"
  fi
fi
