#!/usr/bin/env bash
# Produces the planners' notebooks' data and executes every notebook top to bottom (issue 6).
#
#   bash scripts/notebooks.sh
#
# 1. A Python environment at target/notebooks-venv with notebooks/requirements.txt (reused while that
#    file and the interpreter are unchanged; python3 and its venv module come from Debian if missing).
# 2. Its own data, from scratch, in out/notebooks/: the real Birmingham import and a simulated city in one
#    warehouse, and a Birmingham model trained and published to a registry beside it.
# 3. Every notebooks/*.ipynb executed in name order into out/notebooks/executed/ (the committed notebooks,
#    kept without outputs, are never modified). Any failing cell fails the script.
#
# PARKCAST_BIN names the parkcast binary to use (default: `cargo run --quiet --`, which builds it first);
# the real data sets are read from $PARKCAST_DATASETS (default: ../shared/datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

# Whole seconds are too coarse for the per-step lines; date's %N gives nanoseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds_since() { local elapsed=$(($(now_ms) - $1)); printf '%d.%01d' $((elapsed / 1000)) $(((elapsed % 1000) / 100)); }
started=$(now_ms)

# --- 1. Python environment --------------------------------------------------------------------------

install_python() {
  echo "== installing python3 and python3-venv (Debian packages)"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv </dev/null >/dev/null
}
if ! command -v python3 >/dev/null 2>&1; then
  install_python
fi

venv="$root/target/notebooks-venv"
requirements="$root/notebooks/requirements.txt"
stamp="$venv/.requirements.sha256"
# The stamp covers the requirements and the interpreter that made the venv: a changed pin or a new
# python3 rebuilds it from scratch, so the environment is always exactly what the file says.
wanted="$( { cat "$requirements"; python3 -c 'import sys; print(sys.version, sys.executable)'; } | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "== python environment: reusing $venv"
else
  echo "== python environment: creating $venv"
  venv_started=$(now_ms)
  rm -rf "$venv"
  # Debian's python3 cannot make a venv (no ensurepip) until python3-venv is installed: the only sure test
  # is to try.
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    install_python
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" </dev/null
  # Written last: an interrupted install leaves no stamp and is redone next time.
  echo "$wanted" >"$stamp"
  echo "   installed in $(seconds_since "$venv_started") s"
fi

shopt -s nullglob
notebooks=(notebooks/*.ipynb)
if [ "${#notebooks[@]}" -eq 0 ]; then
  echo "error: no notebooks in notebooks/" >&2
  exit 1
fi
# The committed notebooks carry no outputs (diffs stay readable, no stale results in the repository): say so
# before spending a minute on the data rather than in review. `jupyter nbconvert --clear-output --inplace
# notebooks/*.ipynb` clears them.
"$venv/bin/python" - "${notebooks[@]}" <<'PY'
import json, sys
dirty = [
    path for path in sys.argv[1:]
    if any(cell.get("outputs") or cell.get("execution_count") is not None
           for cell in json.load(open(path, encoding="utf-8"))["cells"] if cell["cell_type"] == "code")
]
if dirty:
    sys.exit("error: notebooks committed with outputs (clear them: target/notebooks-venv/bin/jupyter nbconvert "
             "--clear-output --inplace notebooks/*.ipynb): " + ", ".join(dirty))
PY

# --- 2. The data -------------------------------------------------------------------------------------

if [ -n "${PARKCAST_BIN:-}" ]; then
  parkcast=("$PARKCAST_BIN")
else
  parkcast=(cargo run --quiet --)
fi
export PARKCAST_DATASETS="${PARKCAST_DATASETS:-$root/../shared/datasets}"
if [ ! -f "$PARKCAST_DATASETS/birmingham/parking_birmingham.csv" ]; then
  echo "error: the Birmingham data set is not at $PARKCAST_DATASETS/birmingham (set PARKCAST_DATASETS)" >&2
  exit 1
fi

data="$root/out/notebooks"
rm -rf "$data"
mkdir -p "$data/logs" "$data/executed"

# Each step's summary tables go to out/notebooks/logs/ (and to stderr if the step fails), so the run
# prints one line a step.
step() {
  local name="$1" label="$2"
  shift 2
  local step_started
  step_started=$(now_ms)
  if ! "${parkcast[@]}" -q "$@" </dev/null >"$data/logs/$name.log" 2>&1; then
    echo "error: parkcast $* failed:" >&2
    cat "$data/logs/$name.log" >&2
    exit 1
  fi
  printf '   %-40s %6s s\n' "$label" "$(seconds_since "$step_started")"
}

echo "== data into out/notebooks/"
# Sources live side by side in one warehouse: the real Birmingham counters ...
step import-birmingham "parkcast import birmingham" import -w "$data/warehouse" birmingham
# ... and a small simulated city (a stadium with events, faulty sensors, sessions). The simulator's default
# start (1 September) has no bank holiday within 35 days; from 1 December the five weeks hold Christmas
# Day, Boxing Day and New Year's Day, which the holiday section of 01_explore_occupancy needs.
step simulate "parkcast simulate" simulate --lots 12 --days 35 --start 2025-12-01 --out "$data/warehouse"
# The Birmingham preset: backtest, promote, publish out/notebooks/models/birmingham/1/.
step train "parkcast train" train -w "$data/warehouse" --registry "$data/models"

# The live-quality loop (notebook 04): a city where one street zone's demand doubles from Monday 6
# October, a model trained until the day before, its live accuracy recomputed from the archive over the
# week after (the server's own monitor), and the promotion gate's decision on a candidate trained on
# everything.
loop="$data/loop"
loop_train=(--source simulated --step 5 --horizons 15m,1h --max-training-rows 40000 --models gbm --gbm-iterations 80)
step loop-simulate "parkcast simulate --demand-shift" simulate --lots 8 --days 42 --start 2025-09-01 \
  --out "$loop/city" --demand-shift 5:2025-10-06:2
mkdir -p "$loop/before"
cp -r "$loop/city/." "$loop/before/"
rm -rf "$loop"/before/fact_*/date=2025-10-0[5-9] "$loop"/before/fact_*/date=2025-10-1[0-9]
step loop-train "parkcast train (data until 5 Oct)" train -w "$loop/before" --registry "$loop/models" \
  --name simulated --force "${loop_train[@]}"
step loop-quality "parkcast models quality" models --registry "$loop/models" quality simulated \
  -w "$loop/city" --out "$loop/live-quality.csv"
step loop-retrain "parkcast retrain" retrain -w "$loop/city" --registry "$loop/models" --model simulated \
  "${loop_train[@]}"

# --- 3. The notebooks ---------------------------------------------------------------------------------

echo "== running notebooks/*.ipynb"
export PARKCAST_NOTEBOOK_DATA="$data"
export MPLBACKEND=Agg
# Silences two warnings per kernel start that say nothing about the notebooks.
export JUPYTER_PLATFORM_DIRS=1 PYDEVD_DISABLE_FILE_VALIDATION=1

# Every notebook runs even after one fails, so one run reports all the broken ones.
failed=0
for notebook in "${notebooks[@]}"; do
  name="$(basename "$notebook" .ipynb)"
  notebook_started=$(now_ms)
  if "$venv/bin/jupyter" nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
      --output-dir "$data/executed" "$notebook" </dev/null >"$data/logs/$name.log" 2>&1; then
    printf '   %-40s %6s s  ok\n' "$notebook" "$(seconds_since "$notebook_started")"
  else
    printf '   %-40s %6s s  FAILED\n' "$notebook" "$(seconds_since "$notebook_started")"
    cat "$data/logs/$name.log" >&2
    failed=$((failed + 1))
  fi
done

echo "== done in $(seconds_since "$started") s; executed copies in out/notebooks/executed/, logs in out/notebooks/logs/"
# The plain closing line CI reads as a test count.
echo "notebooks: $((${#notebooks[@]} - failed)) passed, $failed failed"
if [ "$failed" -ne 0 ]; then
  exit 1
fi
