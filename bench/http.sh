#!/usr/bin/env bash
# Requests per second against `corral serve-mock` (one zero-latency host) at concurrency 256, for
# corral run, oha (the ceiling), a Python aiohttp runner and xargs -P + curl, in one run.
#
# Usage: bench/http.sh [JOBS [ROUNDS]]   (default 50000 requests, 3 rounds; xargs+curl gets
#        JOBS/10 once, it is slow). Each round runs corral, oha and Python in turn; the table
#        gives the medians and each round's ratios are printed as it ends.
# Needs: oha (cargo install oha), python3 with aiohttp (pip install aiohttp), curl.
# BASELINE=path/to/another/corral also runs that build in every round (before/after a change),
# and prints the paired ratio this build / baseline.
# Everything talks to 127.0.0.1 only. Client and server share this machine's cores, so the
# figures are relative: compare the ratios, not the absolute numbers, across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
ROUNDS=${2:-3}
C=256
OHA=${OHA:-$(command -v oha || echo /tmp/oha/bin/oha)}
cargo build --release -q -p corral-cli
BIN=target/release/corral
WORK=$(mktemp -d)
trap 'kill $MOCK 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN" serve-mock --port 0 --profiles fast --seconds 3600 > "$WORK/mock.txt" &
MOCK=$!
for _ in $(seq 50); do [ -s "$WORK/mock.txt" ] && break; sleep 0.1; done
BASE=$(awk '{print $2}' "$WORK/mock.txt")
URL="$BASE/bench?size=64"
python3 - "$N" "$URL" "$WORK" <<'PY'
import sys
n, url, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(f"{work}/jobs.jsonl", "w") as j, open(f"{work}/urls.txt", "w") as u:
    for i in range(n):
        j.write(f'{{"url":"{url}&i={i}"}}\n')
        u.write(f"{url}&i={i}\n")
PY
head -n $((N / 10)) "$WORK/urls.txt" > "$WORK/urls_small.txt"

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.0f}')"; }

# Warm-up (connection setup, page cache).
"$BIN" run "$WORK/urls.txt" --urls -o "$WORK/warm.jsonl" --overwrite -q -c $C --per-host-concurrency $C > /dev/null || true

median() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!='n/a']; print(f'{statistics.median(v):.0f}' if v else 'n/a')" "$@"; }
median2() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!='n/a']; print(f'{statistics.median(v):.2f}' if v else 'n/a')" "$@"; }
ratio() { python3 -c "a,b='$1','$2'; print('n/a' if 'n/a' in (a,b) else f'{float(a)/float(b):.2f}')"; }

# The runners take turns, ROUNDS times, so a slow moment of the machine hits them all alike.
C_ALL=(); O_ALL=(); P_ALL=(); RO_ALL=(); RP_ALL=(); B_ALL=(); RB_ALL=()
BASELINE=${BASELINE:-}
for r in $(seq "$ROUNDS"); do
  t0=$(now); "$BIN" run "$WORK/jobs.jsonl" -o "$WORK/corral.jsonl" --overwrite -q -c $C --per-host-concurrency $C; t1=$(now)
  CR=$(rate "$N" "$t0" "$t1")
  [ "$(wc -l < "$WORK/corral.jsonl")" -eq "$N" ] || { echo "corral wrote the wrong number of results"; exit 1; }
  [ "$(grep -c '"ok":true' "$WORK/corral.jsonl")" -eq "$N" ] || { echo "corral had failed requests"; exit 1; }

  # Every runner is timed the same way: wall time of the whole process, start to exit. (oha's
  # own Requests/sec leaves out its start-up and is printed alongside, for reference.)
  OR=n/a; OWN=n/a
  if [ -x "$OHA" ]; then
    t0=$(now); "$OHA" -n "$N" -c $C --no-tui "$URL" > "$WORK/oha.txt"; t1=$(now)
    OR=$(rate "$N" "$t0" "$t1")
    OWN=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$WORK/oha.txt")
  fi

  PR=n/a
  if python3 -c "import aiohttp" 2>/dev/null; then
    t0=$(now); python3 bench/aiohttp_runner.py "$WORK/urls.txt" "$WORK/py.jsonl" $C; t1=$(now)
    PR=$(rate "$N" "$t0" "$t1")
  fi
  BR=n/a
  if [ -n "$BASELINE" ]; then
    t0=$(now); "$BASELINE" run "$WORK/jobs.jsonl" -o "$WORK/base.jsonl" --overwrite -q -c $C --per-host-concurrency $C; t1=$(now)
    BR=$(rate "$N" "$t0" "$t1")
    B_ALL+=("$BR"); RB_ALL+=("$(ratio "$CR" "$BR")")
  fi
  echo "round $r: corral $CR req/s, oha $OR (own figure $OWN), python $PR, baseline $BR  (corral/oha $(ratio "$CR" "$OR"), corral/python $(ratio "$CR" "$PR"), corral/baseline $(ratio "$CR" "$BR"))"
  C_ALL+=("$CR"); O_ALL+=("$OR"); P_ALL+=("$PR")
  RO_ALL+=("$(ratio "$CR" "$OR")"); RP_ALL+=("$(ratio "$CR" "$PR")")
done
CORRAL=$(median "${C_ALL[@]}"); OHA_RPS=$(median "${O_ALL[@]}"); PY_RPS=$(median "${P_ALL[@]}")

NS=$((N / 10))
t0=$(now); xargs -P $C -n 1 curl -s -o /dev/null -w '%{http_code}\n' < "$WORK/urls_small.txt" > "$WORK/curl.txt"; t1=$(now)
CURL_RPS=$(rate "$NS" "$t0" "$t1")

echo
# Ratios are paired: each round's corral / peer, then the median of those (a slow moment of the
# machine cancels out within a round, not across medians taken apart).
echo "| runner (concurrency $C, $N requests, $ROUNDS rounds; curl $NS, once) | median req/s | corral / runner (median of the rounds' ratios) |"
echo "|---|---|---|"
echo "| corral run | $CORRAL | 1.00 |"
echo "| oha (ceiling) | $OHA_RPS | $(median2 "${RO_ALL[@]}") |"
echo "| Python aiohttp runner | $PY_RPS | $(median2 "${RP_ALL[@]}") |"
echo "| xargs -P $C + curl | $CURL_RPS | $(ratio "$CORRAL" "$CURL_RPS") |"
if [ -n "$BASELINE" ]; then
  echo "| baseline corral ($BASELINE) | $(median "${B_ALL[@]}") | $(median2 "${RB_ALL[@]}") |"
fi
