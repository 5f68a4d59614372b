#!/usr/bin/env bash
# The MODELS.md probe, side by side in one run: parkcast-gbm (L2, L1), forust-ml 0.8.0 (L2) and
# Python LightGBM (L2, L1) on identical rows, plus the backtest-like pipeline (one L1 model per
# horizon, a validation and a test fit each). Release build; Python LightGBM pinned in a venv under
# target/ (gbm/bench/requirements.txt).
#
#   bash gbm/bench/probe.sh [--rounds 3]
#
# The table goes to stdout; the feature table the libraries share to target/gbm-probe/table.csv.
# Measure on a quiet machine and leave LightGBM's OpenMP policy alone: its idle threads spin, which
# is fast on free cores (a trainer's own machine) and multiplies its wall time on busy ones;
# OMP_WAIT_POLICY=passive makes them sleep instead, which costs it 5-7x on free cores (gbm/README.md
# has both on one machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="target/gbm-venv"
if ! "$venv/bin/python" -c 'import lightgbm' 2>/dev/null; then
  echo "== installing pinned Python LightGBM into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r gbm/bench/requirements.txt </dev/null
fi
cargo build --quiet --release -p parkcast-gbm --example probe
exec target/release/examples/probe --python "$venv/bin/python" "$@"
