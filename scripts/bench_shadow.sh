#!/usr/bin/env bash
# What a candidate in shadow (issue 16) costs a running server: request latency (`bench grpc`'s
# sweep) and produce -> visible, with and without a shadow, on one server, broker, city and model,
# alternated (without, with, without, with) so a shared machine's drift shows. The live-accuracy
# monitor runs in every phase (it is always on); the shadow adds a second model's feature states,
# forecasts and monitor in the scorer. Prints one table.
#
# The scorer works only when the stream's clock crosses a grid step, so each phase's `bench grpc`
# primes every slot and keeps 10,000 heartbeats/s flowing through the sweep and the probes
# (`--sweep-under-load`), stamped CLOCK_RATE (60) times faster than real time from the server's
# clock (`--clock-rate`): a 5-minute grid step every 5 s, each scoring every lot for the active
# model, its monitor and (in the `with` phases) the shadow.
#
#   bash scripts/bench_shadow.sh WAREHOUSE MODELS
#
# WAREHOUSE and MODELS come from `parkcast demo --no-real-data --out W --models M`. The shadowed
# candidate is the active version itself (its cost is a model's, whichever). Needs noida-db
# (NOIDA_BIN, or the venv scripts/test.sh makes in target/kafka-venv). NO_VISIBILITY=1 skips the
# stream (the sweep then runs against an idle server). PHASES (default "without with without with")
# sets the alternation: more pairs tell a cost from a shared machine's noise. The last column reads
# the server's own round histogram: the scorer is the only part a shadow touches, and its rounds
# are what a reading waits for once ingestion has applied it.
#
# At real time (what the README reports; ~12 minutes on a 200-lot city):
#   PHASES="without with without with without with without with" CLOCK_RATE=1 RATES=2000 \
#     SECONDS_PER_RATE=5 VISIBILITY_SECONDS=60 bash scripts/bench_shadow.sh W M
set -euo pipefail

WAREHOUSE=$1 MODELS=$2
BIN=${BIN:-target/debug/parkcast}
RATES=${RATES:-2000,5000,10000}
CLOCK_RATE=${CLOCK_RATE:-60}
# Seconds per sweep rate and of the probes: at CLOCK_RATE=1 a phase must span grid steps (5 min).
SECONDS_PER_RATE=${SECONDS_PER_RATE:-3}
VISIBILITY_SECONDS=${VISIBILITY_SECONDS:-10}
START=${START:-$("$BIN" --quiet warehouse -w "$WAREHOUSE" 2>/dev/null |
    awk -F"┆" '/fact_slot_status/ { gsub(/[ │]/, "", $6); print $6 "T06:00:00Z" }')}
NOIDA_BIN=${NOIDA_BIN:-$(target/kafka-venv/bin/python -c \
    'import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')}
TOKEN=bench-shadow-token
WORK=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
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
thread_ticks() { # thread_ticks PID NAME: CPU ticks of the process's threads named NAME
    for task in /proc/"$1"/task/*; do
        if [ "$(cat "$task/comm")" = "$2" ]; then awk '{ print $14 + $15 }' "$task/stat"; fi
    done | awk '{ sum += $1 } END { print sum + 0 }'
}
rounds() { # rounds ADDRESS: count, sum (s) and rounds over 12.8 ms of the scorer's round histogram
    curl -s "http://$1/metrics" | awk '
        /^parkcast_serving_scoring_round_duration_seconds_count/ { count = $2 }
        /^parkcast_serving_scoring_round_duration_seconds_sum/ { sum = $2 }
        /^parkcast_serving_scoring_round_duration_seconds_bucket\{le="0.0128"\}/ { fast = $2 }
        END { print count + 0, sum + 0, count - fast }'
}
row() { # row FILE FIRST_CELL COLUMN: a cell of the bench table row starting with FIRST_CELL
    awk -F'┆' -v first="$2" -v column="$3" '$1 ~ "│ *" first " *$" { gsub(/[│ ]/, "", $column); print $column; exit }' "$1"
}

prefix="bench-shadow-$RANDOM"
"$BIN" --quiet replay --from "$WAREHOUSE" --speed max --start "$START" \
    --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" --create-topics 4 >"$WORK/replay.log" 2>&1
grpc=127.0.0.1:$(free_port) metrics=127.0.0.1:$(free_port)
PARKCAST_LOG=warn "$BIN" --quiet serve -w "$WAREHOUSE" --registry "$MODELS" --model simulated \
    --clock stream --history-until "$START" --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" \
    --group "$prefix" --state-dir "$WORK/state" --grpc-addr "$grpc" --metrics-addr "$metrics" \
    --admin-token "$TOKEN" >"$WORK/serve.log" 2>&1 &
server=$!
PIDS+=("$server")
last=-1
for _ in $(seq 300); do
    sleep 2
    handled=$(metric "$metrics" parkcast_ingest_events_total)
    [ "$handled" = "$last" ] && [ "$handled" != 0 ] && break
    last=$handled
done
version=$("$BIN" --quiet models --registry "$MODELS" list | awk -F'┆' '/simulated/ { gsub(/[│ ]/, "", $2); v = $2 } END { print v }')

printf '\n| phase | p99 at 2,000/s | p99 at 5,000/s | p99 at 10,000/s | visible p50 / p99 at 10,000 events/s | scorer CPU, %% of a core | scorer rounds: mean, over 12.8 ms |\n'
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
for phase in ${PHASES:-without with without with}; do
    if [ "$phase" = with ]; then
        PARKCAST_ADMIN_TOKEN=$TOKEN "$BIN" --quiet models shadow simulated "$version" --addr "http://$grpc" >/dev/null
        # The shadow's feature states are rebuilt from the input logs: a one-off, not measured.
        for _ in $(seq 100); do
            "$BIN" --quiet query quality --addr "http://$grpc" 2>/dev/null | grep -q "candidate in shadow" && break
            sleep 0.2
        done
    fi
    scorer_before=$(thread_ticks "$server" parkcast-scorin)
    read -r rounds_before round_seconds_before slow_before < <(rounds "$metrics")
    started=$(date +%s.%N)
    visibility=()
    if [ -z "${NO_VISIBILITY:-}" ]; then
        visibility=(--bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" --event-rate 10000 --visibility-seconds "$VISIBILITY_SECONDS"
            --sweep-under-load --clock-rate "$CLOCK_RATE")
    fi
    "$BIN" --quiet bench grpc --addr "http://$grpc" -w "$WAREHOUSE" --rates "$RATES" --seconds "$SECONDS_PER_RATE" \
        "${visibility[@]}" >"$WORK/bench-$phase.txt" 2>"$WORK/bench-$phase.err" || { cat "$WORK/bench-$phase.err" "$WORK/serve.log" >&2; exit 1; }
    elapsed=$(echo "$(date +%s.%N) - $started" | bc -l)
    scorer_after=$(thread_ticks "$server" parkcast-scorin)
    read -r rounds_after round_seconds_after slow_after < <(rounds "$metrics")
    round_mean=$(echo "1000000 * ($round_seconds_after - $round_seconds_before) / ($rounds_after - $rounds_before)" | bc -l)
    scorer=$(echo "100 * ($scorer_after - $scorer_before) / $(getconf CLK_TCK) / $elapsed" | bc -l)
    printf '| %s shadow | %s | %s | %s | %s / %s | %.2f | %.1f us, %d of %d |\n' "$phase" \
        "$(row "$WORK/bench-$phase.txt" "2,000" 5)" "$(row "$WORK/bench-$phase.txt" "5,000" 5)" \
        "$(row "$WORK/bench-$phase.txt" "10,000" 5)" \
        "$(row "$WORK/bench-$phase.txt" p50 2)" "$(row "$WORK/bench-$phase.txt" p99 2)" "$scorer" \
        "$round_mean" "$((slow_after - slow_before))" "$((rounds_after - rounds_before))"
    if [ "$phase" = with ]; then
        PARKCAST_ADMIN_TOKEN=$TOKEN "$BIN" --quiet models unshadow --addr "http://$grpc" >/dev/null
    fi
done
cp "$WORK"/bench-*.txt "${KEEP:-/tmp}/" 2>/dev/null || true
