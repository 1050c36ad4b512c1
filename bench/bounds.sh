#!/usr/bin/env bash
# Bounds of `corral run` under hostile shapes of work: peak RSS and peak open file descriptors
# (bench/peak.py) for the three cases of issue 18, against `corral serve-mock` on 127.0.0.1:
#   1. N jobs with 1 MiB bodies and --save-body (results to a real file, so the writer lags)
#   2. -c 100000 on 10 jobs
#   3. 10k jobs over 5000 hosts under `ulimit -n 1024`
# Usage: bench/bounds.sh [N]      (default 20000; case 1 writes N MiB of results, then deletes them)
#        BIN=path/to/other/corral bench/bounds.sh   measures another build (before/after).
# Goal (case 3): every job ok, peak RSS < 128 MiB, fds <= 1024.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p corral-cli
  BIN=target/release/corral
fi
MOCKBIN=target/release/corral
[ -x "$MOCKBIN" ] || cargo build --release -q -p corral-cli
WORK=$(mktemp -d)
MOCKS=()
trap 'kill "${MOCKS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

mock() { # mock NAME PROFILES COUNT: starts a mock, waits for COUNT address lines
  "$MOCKBIN" serve-mock --port 0 --profiles "$2" --seconds 3600 > "$WORK/$1.txt" &
  MOCKS+=($!)
  for _ in $(seq 600); do [ "$(wc -l < "$WORK/$1.txt")" -ge "$3" ] && break; sleep 0.1; done
}
mock one fast 1
mock many "$(python3 -c 'print(",".join(["fast"] * 5000))')" 5000
FAST=$(awk 'NR==1 {print $2}' "$WORK/one.txt")

python3 - "$N" "$FAST" "$WORK" <<'PY'
import sys
n, fast, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(f"{work}/bodies.jsonl", "w") as f:
    for i in range(n):
        f.write(f'{{"url":"{fast}/b/{i}?size=1048576"}}\n')
with open(f"{work}/ten.jsonl", "w") as f:
    for i in range(10):
        f.write(f'{{"url":"{fast}/t/{i}"}}\n')
hosts = [l.split()[1] for l in open(f"{work}/many.txt")]
with open(f"{work}/hosts.jsonl", "w") as f:
    for i in range(10000):
        f.write(f'{{"url":"{hosts[i % len(hosts)]}/h/{i}"}}\n')
PY

row() { # row LABEL JOBS RESULTS LIMIT ARGS...
  local label=$1 jobs=$2 out=$3 limit=$4; shift 4
  read -r rss fds secs code < <(sh -c "ulimit -n $limit && exec bench/peak.py \"\$@\"" sh \
    "$BIN" run "$jobs" -o "$out" --overwrite -q "$@" | tail -1)
  local ok total
  ok=$(grep -c '"ok":true' "$out" || true)
  total=$(wc -l < "$jobs")
  echo "| $label | $rss | $fds | $ok / $total | $secs | $code |"
  rm -f "$out"
}

echo "| case | peak RSS (MiB) | peak fds | ok / jobs | wall (s) | exit |"
echo "|---|---|---|---|---|---|"
row "$N jobs x 1 MiB bodies, --save-body" "$WORK/bodies.jsonl" "$WORK/out1.jsonl" 1024 --save-body
row "-c 100000 on 10 jobs" "$WORK/ten.jsonl" "$WORK/out2.jsonl" 1024 -c 100000
row "10k jobs over 5000 hosts, ulimit -n 1024" "$WORK/hosts.jsonl" "$WORK/out3.jsonl" 1024
