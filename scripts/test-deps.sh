#!/usr/bin/env bash
# Python client libraries the integration tests drive the proxy with (asyncpg,
# psycopg 3), in a venv outside the clone so CI and later runs reuse it.
# The last line printed is the venv's python: PY=$(bash scripts/test-deps.sh | tail -1)
set -euo pipefail

VENV=${TENANTGATE_VENV:-$HOME/.cache/tenantgate/venv}
PY=$VENV/bin/python

# A venv whose python is gone or broken (e.g. the base python was replaced) is rebuilt.
if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" >&2
fi

# pip only when something is missing; its output goes to stderr.
if ! "$PY" -c 'import asyncpg, psycopg' >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --disable-pip-version-check 'asyncpg' 'psycopg[binary]' >&2
  "$PY" -c 'import asyncpg, psycopg' # fail loudly if the install did not work
fi

# node-postgres for the Node.js driver check, outside the clone too.
NODE_DIR=${TENANTGATE_NODE_DIR:-$HOME/.cache/tenantgate/node}
if command -v npm >/dev/null 2>&1 && [ ! -d "$NODE_DIR/node_modules/pg" ]; then
  mkdir -p "$NODE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" pg@8 >&2
fi

# The PostgreSQL JDBC driver (Debian's package) for the Java driver check.
if command -v javac >/dev/null 2>&1 && [ ! -f /usr/share/java/postgresql.jar ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpostgresql-jdbc-java >&2
fi

echo "$PY"
