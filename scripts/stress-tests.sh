#!/usr/bin/env bash
# The whole test suite (scripts/test.sh) N times in a row (default 3) while stress-ng keeps every
# core busy: a test that only passes on an idle machine is a flaky test, and CI machines are
# shared. Stops at the first failing run and says which.
#
#   bash scripts/stress-tests.sh [RUNS]
#
# Builds first (unstressed: compiling under load proves nothing and takes long), then starts
# `stress-ng --cpu <cores>` (Debian's stress-ng, installed if missing) for the whole series, and
# prints each run's wall time and result.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"

if ! command -v stress-ng >/dev/null 2>&1; then
  echo "== installing stress-ng (Debian package)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng </dev/null >/dev/null
fi

echo "== building the tests before the load starts"
# As the test command builds (see scripts/test.sh), so that it finds everything built.
export CARGO_INCREMENTAL=0
cargo build --workspace --all-targets --quiet

cores="$(nproc)"
mkdir -p target
stress-ng --cpu "$cores" --cpu-method matrixprod --quiet >target/stress-ng.log 2>&1 </dev/null &
stress_pid=$!
stop_stress() {
  kill "$stress_pid" 2>/dev/null || true
  wait "$stress_pid" 2>/dev/null || true
}
trap stop_stress EXIT
echo "== stress-ng keeps $cores cores busy (pid $stress_pid)"

for run in $(seq 1 "$runs"); do
  started=$(date +%s)
  echo "== run $run of $runs"
  if bash scripts/test.sh >"target/stress-run-$run.log" 2>&1 </dev/null; then
    echo "== run $run passed in $(( $(date +%s) - started )) s"
  else
    echo "== run $run FAILED after $(( $(date +%s) - started )) s; the failures:" >&2
    grep -E "FAIL|panicked|failed" "target/stress-run-$run.log" | head -40 >&2 || true
    echo "(whole log: target/stress-run-$run.log)" >&2
    exit 1
  fi
done
echo "== $runs of $runs runs passed under load"
