#!/usr/bin/env bash
# `--per-host-rate auto` against a hand-set rate, on a host that answers 429 (with
# Retry-After: 1) above 100 requests a second: time to finish, 429s, the rate found.
#
# Usage: bench/auto_rate.sh [JOBS [ROUNDS]]   (default 5000 jobs, 2 rounds). Each round runs
#        auto, then 100/s, against a fresh mock (its limit counts wall-clock seconds); the
#        ratio auto/hand-set is taken per round, then the median.
# Everything talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
ROUNDS=${2:-2}
cargo build --release -q -p corral-cli
BIN=target/release/corral
WORK=$(mktemp -d)
trap 'kill $MOCK 2>/dev/null || true; rm -rf "$WORK"' EXIT
MOCK=

one() { # mode -> "seconds 429s attempts found"
  kill $MOCK 2>/dev/null || true
  "$BIN" serve-mock --port 0 --profiles limited:100 --seconds 3600 > "$WORK/mock.txt" &
  MOCK=$!
  for _ in $(seq 50); do [ -s "$WORK/mock.txt" ] && break; sleep 0.1; done
  local base; base=$(awk '{print $2}' "$WORK/mock.txt")
  python3 -c "
import sys
with open(sys.argv[3], 'w') as f:
    for i in range(int(sys.argv[1])): f.write('{\"url\":\"%s/item/%d\"}\n' % (sys.argv[2], i))
" "$N" "$base" "$WORK/jobs.jsonl"
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" run "$WORK/jobs.jsonl" -o "$WORK/out.jsonl" --overwrite -q --per-host-rate "$1" \
    --summary-json "$WORK/s.json"
  t1=$(date +%s.%N)
  python3 - "$WORK/s.json" "$t0" "$t1" "$base" <<'PY'
import json, sys, urllib.request
s = json.load(open(sys.argv[1]))
h = next(iter(s["hosts"].values()))
stats = json.load(urllib.request.urlopen(sys.argv[4] + "/__stats"))
print(f"{float(sys.argv[3]) - float(sys.argv[2]):.1f} {stats['statuses'].get('429', 0)} "
      f"{stats['requests']} {h.get('rate_found_per_s', '-')}")
PY
}

RATIOS=()
for r in $(seq "$ROUNDS"); do
  read -r TA QA RA FA <<< "$(one auto)"
  read -r TH QH RH _ <<< "$(one 100/s)"
  RATIO=$(python3 -c "print(f'{$TA / $TH:.2f}')")
  RATIOS+=("$RATIO")
  echo "round $r: auto ${TA} s (429s: $QA of $RA requests, found ${FA}/s), 100/s ${TH} s ($QH 429s); auto / hand-set $RATIO"
done
python3 -c "import statistics,sys; print('median auto / hand-set:', statistics.median(float(x) for x in sys.argv[1:]))" "${RATIOS[@]}"
