#!/usr/bin/env bash
# What an idle `parkcast serve` costs, and how soon a produced reading is visible, for two builds
# of the binary in one run (before and after a change to the scorer), on the same broker, city and
# model. Prints one table with the ratios.
#
#   bash scripts/bench_idle_scorer.sh BEFORE_BIN AFTER_BIN WAREHOUSE MODELS
#
# WAREHOUSE and MODELS come from `parkcast demo --no-real-data --out W --models M` (the city's
# last day is replayed into the broker from 06:00, as the demo does; the server answers at the
# stream's clock). Per binary: start the server, wait until it has consumed the replay, then
#   - idle: scoring rounds (`parkcast_serving_scoring_round_duration_seconds_count`) and the
#     server's CPU time (/proc/PID/stat) over IDLE_SECONDS with no event produced;
#   - produce -> visible: `parkcast bench grpc --no-sweep` at 10,000 heartbeats/s and at 100/s
#     (the AFTER binary is the client for both servers).
# Needs noida-db (NOIDA_BIN, or the venv scripts/test.sh makes in target/kafka-venv).
set -euo pipefail

BEFORE=$1 AFTER=$2 WAREHOUSE=$3 MODELS=$4
IDLE_SECONDS=${IDLE_SECONDS:-20}
START=${START:-$("$AFTER" --quiet warehouse -w "$WAREHOUSE" 2>/dev/null |
    awk -F"┆" '/fact_slot_status/ { gsub(/[ │]/, "", $6); print $6 "T06:00:00Z" }')}
NOIDA_BIN=${NOIDA_BIN:-$(target/kafka-venv/bin/python -c \
    'import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))')}
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
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
thread_ticks() { # thread_ticks PID NAME: CPU ticks of the process's threads named NAME
    for task in /proc/"$1"/task/*; do
        if [ "$(cat "$task/comm")" = "$2" ]; then awk '{ print $14 + $15 }' "$task/stat"; fi
    done | awk '{ sum += $1 } END { print sum + 0 }'
}
percentile() { # percentile FILE NAME: "p50" or "p99" row of a bench grpc table
    awk -F'┆' -v name="$2" '$1 ~ "│ " name " " { gsub(/[│ ]/, "", $2); print $2 }' "$1" | head -1
}

declare -A ROUNDS CPU SCORER KAFKA VISIBLE_FAST VISIBLE_SLOW
for build in before after; do
    binary=$BEFORE
    [ "$build" = after ] && binary=$AFTER
    prefix="bench-$build-$RANDOM"
    "$AFTER" --quiet replay --from "$WAREHOUSE" --speed max --start "$START" \
        --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" --create-topics 4 >"$WORK/replay-$build.log" 2>&1
    grpc=127.0.0.1:$(free_port) metrics=127.0.0.1:$(free_port)
    PARKCAST_LOG=warn "$binary" --quiet serve -w "$WAREHOUSE" --registry "$MODELS" --model simulated \
        --clock stream --history-until "$START" --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" \
        --group "$prefix" --state-dir "$WORK/state-$build" --grpc-addr "$grpc" --metrics-addr "$metrics" \
        >"$WORK/serve-$build.log" 2>&1 &
    server=$!
    PIDS+=("$server")
    # Caught up: events applied, and their count still for two seconds.
    last=-1
    for _ in $(seq 300); do
        sleep 2
        handled=$(metric "$metrics" parkcast_ingest_events_total)
        [ "$handled" = "$last" ] && [ "$handled" != 0 ] && break
        last=$handled
    done
    rounds_before=$(metric "$metrics" parkcast_serving_scoring_round_duration_seconds_count)
    ticks_before=$(cpu_ticks "$server")
    scorer_before=$(thread_ticks "$server" parkcast-scorin) # comm: 15 characters
    kafka_before=$(thread_ticks "$server" rdk:broker1)
    sleep "$IDLE_SECONDS"
    rounds_after=$(metric "$metrics" parkcast_serving_scoring_round_duration_seconds_count)
    ticks_after=$(cpu_ticks "$server")
    scorer_after=$(thread_ticks "$server" parkcast-scorin)
    kafka_after=$(thread_ticks "$server" rdk:broker1)
    SCORER[$build]=$(echo "100 * ($scorer_after - $scorer_before) / $(getconf CLK_TCK) / $IDLE_SECONDS" | bc -l)
    KAFKA[$build]=$(echo "100 * ($kafka_after - $kafka_before) / $(getconf CLK_TCK) / $IDLE_SECONDS" | bc -l)
    ROUNDS[$build]=$(echo "($rounds_after - $rounds_before) / $IDLE_SECONDS" | bc -l)
    CPU[$build]=$(echo "100 * ($ticks_after - $ticks_before) / $(getconf CLK_TCK) / $IDLE_SECONDS" | bc -l)
    for rate in 10000 100; do
        "$AFTER" --quiet bench grpc --addr "http://$grpc" -w "$WAREHOUSE" --no-sweep \
            --bootstrap "$BOOTSTRAP" --topic-prefix "$prefix" --event-rate "$rate" \
            --visibility-seconds 10 >"$WORK/visible-$build-$rate.txt" 2>/dev/null
    done
    VISIBLE_FAST[$build]="$(percentile "$WORK/visible-$build-10000.txt" p50) / $(percentile "$WORK/visible-$build-10000.txt" p99)"
    VISIBLE_SLOW[$build]="$(percentile "$WORK/visible-$build-100.txt" p50) / $(percentile "$WORK/visible-$build-100.txt" p99)"
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
done

printf '\n| idle server, %s s | before | after | after / before |\n| --- | --- | --- | --- |\n' "$IDLE_SECONDS"
printf '| scoring rounds/s | %.1f | %.1f | %.3f |\n' "${ROUNDS[before]}" "${ROUNDS[after]}" \
    "$(echo "${ROUNDS[after]} / ${ROUNDS[before]}" | bc -l)"
printf '| scorer thread CPU, %% of a core | %.2f | %.2f | %.3f |\n' "${SCORER[before]}" "${SCORER[after]}" \
    "$(echo "${SCORER[after]} / (${SCORER[before]} + 0.000001)" | bc -l)"
printf '| whole server CPU, %% of a core | %.2f | %.2f | %.3f |\n' "${CPU[before]}" "${CPU[after]}" \
    "$(echo "${CPU[after]} / (${CPU[before]} + 0.000001)" | bc -l)"
printf '| of which librdkafka rdk:broker1, %% of a core | %.2f | %.2f | |\n' "${KAFKA[before]}" "${KAFKA[after]}"
printf '| produce -> visible p50 / p99 ms, 10,000 heartbeats/s | %s | %s | |\n' "${VISIBLE_FAST[before]}" "${VISIBLE_FAST[after]}"
printf '| produce -> visible p50 / p99 ms, 100 heartbeats/s | %s | %s | |\n' "${VISIBLE_SLOW[before]}" "${VISIBLE_SLOW[after]}"
