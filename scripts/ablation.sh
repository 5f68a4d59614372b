#!/usr/bin/env bash
# What each feature group and model choice moves, on the VALIDATION days only (the calibration days
# before each rolling window, forecast by models fitted before them): the trees are refitted without
# one group (or with one choice changed) and their validation MAE per horizon is compared with the
# full model's. The test windows' figures are never read here, so a choice made from this table does
# not peek at the test.
#
#   bash scripts/ablation.sh birmingham          # 4 rolling weeks to 19 Dec 2016, ~15 s a row (dev)
#   bash scripts/ablation.sh malaga              # 5 quarterly windows, ~8 min a row (dev)
#   bash scripts/ablation.sh --release malaga    # faster
#
# Imports into out/reference/<source> like scripts/reference.sh. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
if [[ "${1:-}" == "--release" ]]; then
  profile=(--release)
  shift
fi
source="${1:-birmingham}"
case "$source" in
  birmingham) protocol=(--preset birmingham --windows 4) horizons=("30 min" "1 h" "2 h") ;;
  malaga) protocol=(--preset malaga) horizons=("15 min" "1 h" "24 h") ;;
  *) echo "usage: $0 [--release] birmingham|malaga" >&2; exit 2 ;;
esac
warehouse="out/reference/$source"
cargo build --quiet "${profile[@]}" --bin parkcast
bin="target/$([[ ${#profile[@]} -gt 0 ]] && echo release || echo debug)/parkcast"
"$bin" --quiet import -w "$warehouse" "$source" >/dev/null 2>&1

# Feature groups, by the names of parkcast_features::vector::FEATURE_NAMES.
declare -A groups=(
  [calendar]="target_weekday,target_day_off,target_holiday,target_days_to_holiday,target_days_from_holiday,target_school_holiday,target_bridge_day,target_days_to_major_holiday,target_days_from_major_holiday"
  [school, bridge and major-holiday days]="target_school_holiday,target_bridge_day,target_days_to_major_holiday,target_days_from_major_holiday"
  [level (deviation at the target time 1-7 days back, trend)]="deviation_target_day1_back,deviation_target_day2_back,deviation_target_day3_back,deviation_target_week_back,deviation_daily_trend"
  [deviation today, yesterday, last week]="deviation_origin,deviation_recent_mean,deviation_today_mean,minutes_since_first_reading_today,deviation_yesterday_mean,deviation_last_week_mean"
  [deviation change over the last 1 and 2 steps]="deviation_change_1_step,deviation_change_2_steps"
  [lags and seasonal lags]="rate_lag1,rate_lag2,rate_lag4,rate_same_time_day_back,rate_same_time_week_back"
  [lot identity]="lot_code,lot_kind,capacity"
)

# The trees' validation MAE per horizon from a backtest's "validation MAE" line.
validation() {
  "$bin" -q backtest -w "$warehouse" "${protocol[@]}" --models gbm "$@" 2>/dev/null |
    sed -n 's/^validation MAE.*gradient-boosted trees \([0-9.\/]*\).*/\1/p'
}

full="$(validation)"
if [[ -z "$full" ]]; then
  echo "error: the full model's backtest printed no validation MAE" >&2
  exit 1
fi
IFS=/ read -r -a base <<<"$full"
row() {
  local name="$1" figures="$2" cells=()
  IFS=/ read -r -a values <<<"$figures"
  for i in "${!base[@]}"; do
    cells+=("$(awk -v v="${values[$i]}" -v b="${base[$i]}" 'BEGIN { printf "%s (%+.1f%%)", v, 100 * (v / b - 1) }')")
  done
  local joined
  joined="$(printf ' | %s' "${cells[@]}")"
  echo "| $name$joined |"
}

echo "Validation MAE of rate of the trees on $source (validation days only), by horizon;"
echo "in brackets the change against the full model: positive = the model is worse without it."
echo
echo "| variant |$(printf ' %s |' "${horizons[@]}")"
echo "| --- |$(printf ' --- |%.0s' "${base[@]}")"
echo "| full model (L1, 1 seed, every feature) | $(printf '%s' "$full" | sed 's#/# | #g') |"
for name in "${!groups[@]}"; do
  row "without $name" "$(validation --gbm-exclude "${groups[$name]}")"
done
row "L2 objective instead of L1" "$(validation --gbm-objective l2)"
row "3 bagging seeds instead of 1" "$(validation --gbm-bagging-seeds 3)"
