#!/usr/bin/env bash
# Prints the reference accuracy tables of the trainer issue from a clean checkout: every baseline and
# learned model per horizon on the real data sets, with the protocols of the published figures.
#
#   bash scripts/reference.sh birmingham   # test week 13-19 Dec 2016, 30-min grid, 30 min / 1 h / 2 h
#   bash scripts/reference.sh malaga       # Jul 2025 - Jun 2026, 15-min grid, 15 min / 1 h / 24 h
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
  birmingham | malaga) ;;
  *) echo "usage: $0 [--release] birmingham|malaga" >&2; exit 2 ;;
esac
warehouse="out/reference/$source"
run() { cargo run --quiet "${profile[@]}" -- "$@"; }
run --quiet import -w "$warehouse" "$source" > /dev/null
run backtest -w "$warehouse" --preset "$source" --models all
