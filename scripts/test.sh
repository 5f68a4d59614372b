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

# CI builds everything once from a fresh clone on a disk it shares: incremental compilation would only
# write a second copy of every workspace crate's objects (2.5 GB here) and slow the first build.
export CARGO_INCREMENTAL=0
# How much room the build had, in the log: a full disk fails a build with a compiler error far from
# the cause. On a fresh clone target/ ends at 4.8 GB (build, venvs), besides the Debian packages.
disk_report() {
  local used
  used="$(du -sh target 2>/dev/null | cut -f1 || true)"
  echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free; target/ holds ${used:-nothing yet}"
}
disk_report
if [ ! -d target/debug/deps ] && [ "$(df -k --output=avail . | tail -1)" -lt $((6 * 1024 * 1024)) ]; then
  echo "warning: under 6 GB free for a fresh build that needs about 5 GB in target/; a failure below may be a full disk" >&2
fi

# --- A real Kafka-protocol broker for the ingestion tests (../shared/KAFKA.md) ----------------------
# noida-db, pinned, from PyPI into its own venv; started on a free loopback port with a fresh data
# folder, and stopped when this script exits, however it exits. Tests create their own topics (with
# explicit partition counts) and groups under random names.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "== installing python3 and python3-venv (Debian packages)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv </dev/null >/dev/null
fi
kafka_venv="$(pwd)/target/kafka-venv"
noida="$kafka_venv/bin/noida-db"
if [ ! -x "$noida" ]; then
  echo "== installing the test broker (noida-db 0.2.3, PyPI)"
  rm -rf "$kafka_venv"
  python3 -m venv "$kafka_venv"
  "$kafka_venv/bin/pip" install --quiet --disable-pip-version-check noida-db==0.2.3 </dev/null
fi
# The console script `noida-db` is a Python wrapper that runs the real binary as a child; start the
# binary itself, so stopping it (here, and in the outage test) stops the broker.
noida_binary="$("$kafka_venv/bin/python" -c 'import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')"
broker_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
broker_dir="$(mktemp -d)"
mkdir -p target
"$noida_binary" start --only kafka --kafka-port "$broker_port" --data-dir "$broker_dir" >target/test-broker.log 2>&1 </dev/null &
broker_pid=$!
stop_broker() {
  kill "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  rm -rf "$broker_dir"
}
trap stop_broker EXIT
for _ in $(seq 1 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$broker_port") 2>/dev/null; then break; fi
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "error: the test broker exited; its log:" >&2
    cat target/test-broker.log >&2
    exit 1
  fi
  sleep 0.05
done
export PARKCAST_KAFKA_BOOTSTRAP="127.0.0.1:$broker_port"
# The outage test starts and stops a broker of its own with this binary.
export PARKCAST_NOIDA_BIN="$noida_binary"
echo "== test broker (noida-db) on $PARKCAST_KAFKA_BOOTSTRAP"

# --- A real PostgreSQL server for the operational store's tests (opstore/) ------------------------
# Debian's `postgresql` package; a fresh cluster in a temporary folder on a free loopback port, run
# by the `postgres` user when this script runs as root (the server refuses root), trust auth on
# loopback only, stopped when this script exits. Tests create their own databases.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  echo "== installing PostgreSQL (Debian package)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql </dev/null >/dev/null
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
pg_dir="$(mktemp -d)"
chmod 755 "$pg_dir"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$pg_dir"; fi
"${as_pg[@]}" "$pg_bin/initdb" --pgdata="$pg_dir/data" --username=parkcast --auth=trust \
  --encoding=UTF8 --locale=C >target/test-postgres.log 2>&1 </dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --log="$pg_dir/server.log" --wait \
  --options="-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$pg_dir -c fsync=off" \
  start >>target/test-postgres.log 2>&1 </dev/null || {
  echo "error: the test Postgres did not start; its log:" >&2
  cat target/test-postgres.log "$pg_dir/server.log" >&2 || true
  exit 1
}
stop_postgres() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" --pgdata="$pg_dir/data" --mode=fast --wait stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap 'rc=$?; stop_postgres; stop_broker; [ "$rc" -eq 0 ] || disk_report' EXIT
export PARKCAST_POSTGRES_DSN="host=127.0.0.1 port=$pg_port user=parkcast dbname=postgres"
export PARKCAST_REQUIRE_POSTGRES=1
echo "== test Postgres ($("$pg_bin/postgres" --version)) on 127.0.0.1:$pg_port"

# --- Headless Chromium and its WebDriver for the operations page's browser test ------------------
# Debian's `chromium` and `chromium-driver`; the test (tests/ops_browser.rs) starts chromedriver on a
# free port itself and drives the page over WebDriver.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Chromium and chromium-driver (Debian packages)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver </dev/null >/dev/null
fi
export PARKCAST_CHROMEDRIVER="$(command -v chromedriver)"
export PARKCAST_CHROMIUM="$(command -v chromium)"
export PARKCAST_REQUIRE_BROWSER=1
echo "== browser: $("$PARKCAST_CHROMIUM" --version 2>/dev/null | head -n 1), $("$PARKCAST_CHROMEDRIVER" --version | head -n 1)"

# --- Apache Spark for the sharded feature build (scripts/spark/features.py) -----------------------
# PySpark, pinned, from PyPI into its own venv, on Debian's OpenJDK 17; the test starts a local
# cluster of two executor processes on loopback itself.
if ! command -v java >/dev/null 2>&1; then
  echo "== installing OpenJDK 17 (Debian package, for Spark)"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless </dev/null >/dev/null
fi
spark_venv="$(pwd)/target/spark-venv"
if ! "$spark_venv/bin/python" -c 'import pyspark' >/dev/null 2>&1; then
  echo "== installing Apache Spark (pyspark 3.5.7, PyPI)"
  rm -rf "$spark_venv"
  python3 -m venv "$spark_venv"
  "$spark_venv/bin/pip" install --quiet --disable-pip-version-check pyspark==3.5.7 </dev/null
fi
export PARKCAST_SPARK_PYTHON="$spark_venv/bin/python"
export PARKCAST_REQUIRE_SPARK=1

# The habits the code review expects, enforced: formatting and clippy's warnings as errors (the
# workspace's lints are declared in Cargo.toml). rustup's default profile has both tools; a minimal
# one gets them added.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "== installing rustfmt and clippy (rustup components)"
  rustup component add rustfmt clippy </dev/null
fi
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "== the server's crate links no model fitting"
# Fitting sits behind the `fit` features of parkcast-inference and parkcast-gbm, which the trainer
# enables; the server's crate on its own must resolve without them (or the trainer).
if cargo tree --quiet -p parkcast-serving -e normal,features \
  | grep -E 'linfa|ndarray|parkcast-gbm feature "fit"|parkcast-inference feature "fit"|parkcast-training'; then
  echo "error: parkcast-serving links model fitting (see the lines above)" >&2
  exit 1
fi

# Broker-backed tests skip themselves under a plain `cargo test`; here a missing broker fails them.
export PARKCAST_REQUIRE_BROKER=1

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
disk_report
echo "== executing the notebooks"
cargo build --quiet
PARKCAST_BIN="$(pwd)/target/debug/parkcast" bash scripts/notebooks.sh
