#!/usr/bin/env bash
# Profile-guided release build of tenantgate: the binary to deploy, and what the load
# table in README.md measures.
#
#   bash scripts/build-pgo.sh      # prints the optimized binary's path as its last line
#
# 1. builds a release binary instrumented to count its branches (rustc -Cprofile-generate),
# 2. runs it under the load benchmark's workload (pgbench -S simple, extended and prepared,
#    1 and 32 clients, new connections, with telemetry and plan limits off and on; it needs
#    the local PostgreSQL and Redis, as benches/load.sh does),
# 3. merges the counts with llvm-profdata (rustup's llvm-tools component, installed when
#    missing) and builds the release binary again with them (-Cprofile-use): the code that
#    runs per statement laid out together and the rest moved out of its way.
#
# On a 2-core machine the proxy's relay path then misses the instruction cache about a
# quarter as often and runs ~20% fewer instructions (callgrind, benches/PERFORMANCE.md).
# Incremental: the workload runs again only when the instrumented binary changed, and the
# final build is redone only when the profile did. Both builds take as long as a cold
# release build (fat LTO), in their own target directories under $CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenantgate/target}
PGO_DIR=$CARGO_TARGET_DIR/pgo
log() { echo "build-pgo.sh: $*" >&2; }

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  log "installing rustup's llvm-tools (llvm-profdata of rustc's own LLVM)"
  rustup component add llvm-tools >&2
fi

# Instrumented build. Build scripts compiled with it write their counts while cargo runs
# them: into build-raw, which nothing reads.
mkdir -p "$PGO_DIR"
log "instrumented release build"
RUSTFLAGS="-Cprofile-generate=$PGO_DIR/build-raw" \
  cargo build --release --target-dir "$PGO_DIR/gen" >&2
gen=$PGO_DIR/gen/release/tenantgate

# One profile per instrumented binary, named by its hash.
sum=$(sha256sum "$gen" | cut -c1-16)
profile=$PGO_DIR/tenantgate-$sum.profdata
if [ ! -s "$profile" ]; then
  raw=$PGO_DIR/raw-$sum
  rm -rf "$raw"
  mkdir -p "$raw"
  log "training run (benches/load.sh with the instrumented binary)"
  # %p: a file per process; pgbench and psql are not instrumented and write none.
  LLVM_PROFILE_FILE="$raw/tenantgate-%p.profraw" TENANTGATE_BIN=$gen \
    TARGETS="tenantgate-core tenantgate" CLIENTS="1 32" MODES="simple extended prepared" \
    DURATION=3 ROUNDS=1 IDLE_CLIENTS=0 PGO=0 bash benches/load.sh >"$raw/load.txt"
  # The proxy writes its counts when it exits (load.sh stops it with SIGTERM).
  compgen -G "$raw/tenantgate-*.profraw" >/dev/null ||
    { log "the training run left no profile in $raw"; exit 1; }
  "$profdata" merge -o "$profile.tmp" "$raw"/tenantgate-*.profraw
  mv "$profile.tmp" "$profile"
  rm -rf "$raw"
  # Profiles of older binaries are of no further use.
  find "$PGO_DIR" -maxdepth 1 -name 'tenantgate-*.profdata' ! -path "$profile" -delete
fi

# The profile's path is in RUSTFLAGS, so a new profile means a new build.
log "optimized release build with $profile"
RUSTFLAGS="-Cprofile-use=$profile" cargo build --release --target-dir "$PGO_DIR/use" >&2
echo "$PGO_DIR/use/release/tenantgate"
