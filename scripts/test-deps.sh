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

echo "$PY"
