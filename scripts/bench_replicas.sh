#!/usr/bin/env bash
# The cost of a hop (issue 17): `GetAvailability` latency through a replica that owns the lots
# asked against one that forwards them to their owner, on one broker, city and pair of replicas,
# alternated (owner, hop, owner, hop) so a shared machine's drift shows. Prints one table, and the
# forwarding replica's own forward-call histogram (what the hop adds, measured inside the server).
#
#   bash scripts/bench_replicas.sh WAREHOUSE [MODELS]
#
# WAREHOUSE: a city, e.g. `parkcast simulate --lots 20 --days 2 --out W`. The city's last day is
# replayed into a broker of the script's own (noida-db: NOIDA_BIN, or the venv scripts/test.sh makes
# in target/kafka-venv) with 4 partitions; two `parkcast serve --replicas` read it. Without MODELS
# they answer the live picture; with MODELS (a registry holding `simulated`, e.g. from `parkcast demo
# --no-real-data --out W --models M`) they serve it and the requests ask for 30 and 60 minutes ahead.
# RATES (default 1000,2000,5000), SECONDS_PER_RATE (3) and PHASES (default "owner hop owner hop")
# set the sweep.
set -euo pipefail

WAREHOUSE=$1 MODELS=${2:-}
SERVE_MODEL=() ASK=(--now-only)
if [ -n "$MODELS" ]; then
    SERVE_MODEL=(--registry "$MODELS" --model simulated) ASK=(--horizons 30,60)
fi
BIN=${BIN:-target/debug/parkcast}
RATES=${RATES:-1000,2000,5000}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-3}
START=${START:-$("$BIN" --quiet warehouse -w "$WAREHOUSE" 2>/dev/null |
    awk -F"┆" '/fact_slot_status/ { gsub(/[ │]/, "", $6); print $6 "T06:00:00Z" }')}
NOIDA_BIN=${NOIDA_BIN:-$(target/kafka-venv/bin/python -c \
    'import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')}
WORK=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; cp "$WORK"/bench-*.txt "${KEEP:-/tmp}/" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

BROKER_PORT=$(free_port)
"$NOIDA_BIN" start --only kafka --kafka-port "$BROKER_PORT" --data-dir "$WORK/broker" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$BROKER_PORT") 2>/dev/null && break; sleep 0.1; done
BOOTSTRAP=127.0.0.1:$BROKER_PORT

metric() { # metric ADDRESS NAME: the sum of the samples of NAME, any labels (0 if absent)
    curl -s "http://$1/metrics" |
        awk -v name="$2" '$1 == name || index($1, name "{") == 1 { sum += $2 } END { print sum + 0 }'
}
row() { # row FILE FIRST_CELL COLUMN: a cell of the bench table row starting with FIRST_CELL
    awk -F'┆' -v first="$2" -v column="$3" '$1 ~ "│ *" first " *$" { gsub(/[│ ]/, "", $column); print $column; exit }' "$1"
}

prefix="bench-replicas-$RANDOM"
"$BIN" --quiet replay --from "$WAREHOUSE" --speed max --start "$START" \
    --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" --create-topics 4 >"$WORK/replay.log" 2>&1
GRPC=() METRICS=()
for replica in 0 1; do
    grpc=127.0.0.1:$(free_port) metrics=127.0.0.1:$(free_port)
    PARKCAST_LOG=warn "$BIN" --quiet serve -w "$WAREHOUSE" --clock stream --history-until "$START" \
        --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" --group "$prefix" \
        --state-dir "$WORK/state-$replica" --grpc-addr "$grpc" --metrics-addr "$metrics" \
        --replicas "${SERVE_MODEL[@]}" >"$WORK/serve-$replica.log" 2>&1 &
    PIDS+=($!)
    GRPC+=("$grpc") METRICS+=("$metrics")
done

# The group settles: two replicas alive, each owning lots.
lots_of() { # lots_of JSON_LINES ID: the lots of replica ID, comma-separated
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    replica = json.loads(line)
    if replica["replica_id"] == sys.argv[2]:
        print(",".join(lot for p in replica["partitions"] for lot in p["lot_ids"]))' "$1" "$2"
}
for _ in $(seq 300); do
    sleep 1
    "$BIN" --quiet query --addr "http://${GRPC[0]}" replicas --json >"$WORK/replicas.json" 2>/dev/null || continue
    owner_lots=$(lots_of "$WORK/replicas.json" "${GRPC[0]}")
    other_lots=$(lots_of "$WORK/replicas.json" "${GRPC[1]}")
    [ -n "$owner_lots" ] && [ -n "$other_lots" ] && break
done
[ -n "${other_lots:-}" ] || { echo "the replicas never settled" >&2; cat "$WORK"/serve-*.log >&2; exit 1; }
echo "replica ${GRPC[0]} owns $(echo "$owner_lots" | tr ',' '\n' | wc -l) lots, ${GRPC[1]} $(echo "$other_lots" | tr ',' '\n' | wc -l)"

IFS=, read -r -a rates <<<"$RATES"
header="| phase (through ${GRPC[0]}) |"
separator="| --- |"
for rate in "${rates[@]}"; do
    header+=" p50 / p99 at $rate/s |"
    separator+=" --- |"
done
printf '\n%s forward calls: mean |\n%s --- |\n' "$header" "$separator"
for phase in ${PHASES:-owner hop owner hop}; do
    lots=$owner_lots
    [ "$phase" = hop ] && lots=$other_lots
    calls_before=$(metric "${METRICS[0]}" parkcast_replicas_forward_duration_seconds_count)
    seconds_before=$(metric "${METRICS[0]}" parkcast_replicas_forward_duration_seconds_sum)
    "$BIN" --quiet bench grpc --addr "http://${GRPC[0]}" --lots "$lots" "${ASK[@]}" --rates "$RATES" \
        --seconds "$SECONDS_PER_RATE" >"$WORK/bench-$phase.txt" 2>"$WORK/bench-$phase.err" ||
        { cat "$WORK/bench-$phase.err" "$WORK"/serve-*.log >&2; exit 1; }
    calls=$(echo "$(metric "${METRICS[0]}" parkcast_replicas_forward_duration_seconds_count) - $calls_before" | bc)
    seconds=$(echo "$(metric "${METRICS[0]}" parkcast_replicas_forward_duration_seconds_sum) - $seconds_before" | bc -l)
    line="| $phase |"
    for rate in "${rates[@]}"; do
        cell=$(echo "$rate" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
        line+=" $(row "$WORK/bench-$phase.txt" "$cell" 3) / $(row "$WORK/bench-$phase.txt" "$cell" 5) ms |"
    done
    if [ "$calls" -gt 0 ]; then
        line+=" $(echo "1000 * $seconds / $calls" | bc -l | xargs printf '%.3f') ms over $calls calls |"
    else
        line+=" none |"
    fi
    echo "$line"
done
