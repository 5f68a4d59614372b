#!/usr/bin/env bash
# lightgbm3 (LightGBM through Rust bindings) on the probe table: its clean release build time and
# its fits, for the comparison in gbm/README.md. Not part of parkcast's build. Needs a C++
# compiler, clang and libclang-dev (apt) and CMake >= 3.28 (Debian 12 has 3.25, so CMake comes
# from pip into the probe's venv).
#
#   bash gbm/bench/probe.sh --rounds 1   # writes target/gbm-probe/table.csv first
#   bash gbm/bench/lightgbm3.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="target/gbm-venv"
[ -x "$venv/bin/cmake" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check "cmake==3.31.6" </dev/null
export CMAKE="$(pwd)/$venv/bin/cmake"
build="target/lightgbm3-probe"
rm -rf "$build"
started=$(date +%s.%N)
CARGO_TARGET_DIR="$build" cargo build --quiet --release --manifest-path gbm/bench/lightgbm3-probe/Cargo.toml
echo "clean release build of lightgbm3 1.0.11 (openmp) and its dependencies: $(echo "$(date +%s.%N) - $started" | bc) s" >&2
"$build/release/lightgbm3-probe" target/gbm-probe/table.csv
