#!/usr/bin/env bash
# Peak RSS of `corral run` for 10k and 1M jobs against `corral serve-mock` (loopback).
# Usage: bench/memory.sh [SMALL] [LARGE]     (defaults 10000 1000000)
# Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL=${1:-10000}
LARGE=${2:-1000000}
cargo build --release -q -p corral-cli
BIN=target/release/corral
WORK=$(mktemp -d)
trap 'kill $MOCK 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN" serve-mock --port 0 --profiles fast,slow --seconds 3600 > "$WORK/mock.txt" &
MOCK=$!
for _ in $(seq 50); do [ "$(wc -l < "$WORK/mock.txt")" -ge 2 ] && break; sleep 0.1; done
FAST=$(awk 'NR==1 {print $2}' "$WORK/mock.txt")
SLOW=$(awk 'NR==2 {print $2}' "$WORK/mock.txt")
echo "| jobs | peak RSS (MiB) | wall time (s) | results |"
echo "|---|---|---|---|"
for n in "$SMALL" "$LARGE"; do
  python3 - "$n" "$FAST" "$SLOW" "$WORK/jobs.jsonl" <<'PY'
import sys
n, fast, slow, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    for i in range(n):
        host = slow if i % 100 == 0 else fast
        f.write(f'{{"id":"m{i}","url":"{host}/m/{i}?size=256","meta":{{"i":{i}}}}}\n')
PY
  /usr/bin/time -f "%M %e" -o "$WORK/time.txt" "$BIN" run "$WORK/jobs.jsonl" -o "$WORK/out.jsonl" --overwrite -q -c 256 --per-host-concurrency 128 || true
  read -r kb secs < "$WORK/time.txt"
  echo "| $n | $(python3 -c "print(f'{$kb/1024:.1f}')") | $secs | $(wc -l < "$WORK/out.jsonl") |"
done
