#!/usr/bin/env bash
# THE test command: services up, Python client deps ready, then every cargo target.
#   bash scripts/test.sh                 # all tests
#   bash scripts/test.sh --test auth     # extra args go to `cargo test`
# Exit code is cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
TENANTGATE_PYTHON=$(bash scripts/test-deps.sh | tail -1)
export TENANTGATE_PYTHON
# Outside the clone so CI reuses the build; created from nothing when missing.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tenantgate/target}

# Test threads via RUST_TEST_THREADS rather than `-- --test-threads=4`: with
# --all-targets the criterion benches (harness = false) run too, and criterion 0.5
# rejects --test-threads as an unknown argument. libtest reads the variable the same way.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# --no-fail-fast: every test binary runs, so one failure does not hide the rest.
exec cargo test --all-targets --no-fail-fast "$@"
