#!/usr/bin/env bash
# The whole test suite, from a fresh clone: the README's test command, and what CI runs (.ci/run).
#
# Needs the Rust toolchain and ../shared/datasets (the real data sets, kept beside the repository; set
# PARKCAST_DATASETS to point elsewhere). Everything else it uses it installs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

datasets="${PARKCAST_DATASETS:-$(pwd)/../shared/datasets}"
if [ ! -d "$datasets/birmingham" ]; then
  echo "error: real data sets not found at $datasets (set PARKCAST_DATASETS)" >&2
  exit 1
fi
export PARKCAST_DATASETS="$datasets"

# One build profile for everything (dev, with dependencies optimised: see Cargo.toml).
echo "== building and running the tests"
if command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --doc
else
  cargo test --workspace --all-targets --no-fail-fast
  cargo test --workspace --doc
fi

# The planners' notebooks run on data made by this same binary (import, simulate, train), so a change to the
# warehouse, an importer or the published model files that breaks a notebook fails the test command, not a
# planner. The tests above built everything in this profile already: the build only makes sure the binary
# exists, and takes no time.
echo "== executing the notebooks"
cargo build --quiet
PARKCAST_BIN="$(pwd)/target/debug/parkcast" bash scripts/notebooks.sh
