#!/usr/bin/env bash
# Prints the reference accuracy tables of the trainer issue from a clean checkout: every baseline and
# learned model per horizon on the real data sets, with the protocols of the published figures.
#
#   bash scripts/reference.sh birmingham   # test week 13-19 Dec 2016, 30-min grid, 30 min / 1 h / 2 h;
#                                          # then the trees' coverage over the four weeks to 19 Dec
#   bash scripts/reference.sh malaga       # Jul 2025 - Jun 2026, 15-min grid, 15 min / 1 h / 24 h
#   bash scripts/reference.sh simulated    # 30 simulated lots, 1 Sep - 29 Dec 2025 at 15 min, the four
#                                          # weeks to 29 Dec (Christmas and Boxing Day) as test windows
#
# The warehouse goes to out/reference/<source> (re-importing replaces the source's files, never
# duplicates them). Builds with the dev profile the tests use; pass --release first for speed:
#   bash scripts/reference.sh --release malaga
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
if [[ "${1:-}" == "--release" ]]; then
  profile=(--release)
  shift
fi
source="${1:-birmingham}"
case "$source" in
  birmingham | malaga | simulated) ;;
  *) echo "usage: $0 [--release] birmingham|malaga|simulated" >&2; exit 2 ;;
esac
warehouse="out/reference/$source"
run() { cargo run --quiet "${profile[@]}" -- "$@"; }
if [[ "$source" == simulated ]]; then
  run --quiet simulate -o "$warehouse" --lots 30 --start 2025-09-01 --days 120 --interval 15 > /dev/null
fi
# The real cities lend rows to fits with few of their own (`[prior]` in the configuration): each
# reference warehouse holds both, whichever is evaluated (Malaga's and the simulated city's fits
# have more rows than the prior's limit and take none).
run --quiet import -w "$warehouse" birmingham > /dev/null
run --quiet import -w "$warehouse" malaga > /dev/null
if [[ "$source" == simulated ]]; then
  # No preset: the protocol comes from the data (its last four weeks), as for a user's own city.
  run backtest -w "$warehouse" --source simulated --models all
else
  run backtest -w "$warehouse" --preset "$source" --models all
  if [[ "$source" == birmingham ]]; then
    # One week is too few Saturdays and Sundays to judge intervals per day type: the trees' coverage
    # per window and day type over the test week and the three before it (22 Nov - 19 Dec).
    echo
    echo "== coverage over four rolling weeks (the trees)"
    run --quiet backtest -w "$warehouse" --preset birmingham --models gbm --windows 4
  fi
fi
