#!/usr/bin/env bash
# The whole test suite, services included: installs and starts Redis, PostgreSQL and Kafka on
# loopback (scripts/services.sh), builds, runs unit and end-to-end tests, stops the services.
# Prints how long each phase took. This is the README's test command and what .ci/run calls.
#
#   scripts/test.sh            everything
#   scripts/test.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
#   ONLYCHAT_FUZZ_SECONDS=N    seconds per fuzz target in the last phase (default 20, 0 skips)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

phase_start=$SECONDS
phase() { echo "== $1 (previous phase took $((SECONDS - phase_start))s)"; phase_start=$SECONDS; }
extra=()
[[ ${1:-} == -- ]] && { shift; extra=("$@"); }

if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo is not installed (install Rust with rustup)" >&2
  exit 1
fi

phase "services up"
# Every run starts from empty services, as CI does on a fresh machine. Each run leaves about a
# hundred test topics and databases behind; kept, they grew PostgreSQL's data to 1.1 GB in three
# runs. The previous run's service logs go with them.
scripts/services.sh down --clean
scripts/services.sh up
trap 'echo "== services down"; scripts/services.sh down || true' EXIT
eval "$(scripts/services.sh env)"

# Prometheus (Debian) and Jaeger (built once from the Go module proxy, cached outside the repo)
# for the tests that scrape metrics and query traces; each test starts its own instance.
phase "observability tools"
scripts/observability.sh install
eval "$(scripts/observability.sh env)"

# deploy/ and docker-compose.yml: kustomize builds, strict schemas, promtool, metric names; then
# the self-test that proves each of those checks fails on a broken copy (scripts/check-deploy.sh).
phase "deploy check"
scripts/check-deploy.sh --all

phase "build"
cargo build --workspace --all-targets --locked

phase "tests"
export ONLYCHAT_TEST_LOG_DIR=${ONLYCHAT_TEST_LOG_DIR:-$PWD/target/e2e-logs}
if ! cargo test --workspace --locked --no-fail-fast "${extra[@]}"; then
  echo "test.sh: tests failed; process logs are in $ONLYCHAT_TEST_LOG_DIR" >&2
  exit 1
fi

# Every chat node replaced one by one behind HAProxy while clients chat (the debug binaries built
# above, the services started above): fails on a lost or duplicated message or a missed shutdown
# deadline. docs/rollout-drill.md.
phase "rollout drill"
scripts/rollout-drill.sh

# Bounded fuzzing of client frames and access tokens (fuzz/, scripts/fuzz.sh); 0 skips it.
fuzz_seconds=${ONLYCHAT_FUZZ_SECONDS:-20}
if ((fuzz_seconds > 0)); then
  phase "fuzz (${fuzz_seconds}s per target)"
  scripts/fuzz.sh "$fuzz_seconds"
fi
phase "done"
