#!/usr/bin/env bash
# Requests a dead host sees before its jobs are held (issue 28): a host answering 503 for its
# first 3 s, N GETs at default settings (but a 1 s breaker cool-down), counted by the mock per
# second. Usage: bench/dead-host.sh [CORRAL_BINARY] [N...]   (default: target/release/corral, 300 3000)
set -euo pipefail
BIN=${1:-target/release/corral}
shift || true
SIZES=${*:-300 3000}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
for n in $SIZES; do
  "$BIN" serve-mock --port 0 --seconds 60 --profiles outage:0-3 > "$dir/mock.out" &
  mock=$!
  while ! [ -s "$dir/mock.out" ]; do sleep 0.05; done
  url=$(awk '{print $2}' "$dir/mock.out")
  seq 0 $((n - 1)) | sed "s|.*|{\"url\":\"$url/item/&\"}|" > "$dir/jobs.jsonl"
  "$BIN" run "$dir/jobs.jsonl" -o "$dir/out.jsonl" --overwrite -q --breaker-cool-down-s 1 || true
  stats=$(curl -s "$url/__stats")
  ok=$(grep -c '"ok":true' "$dir/out.jsonl" || true)
  python3 - "$n" "$ok" "$stats" <<'PY'
import json, sys
n, ok, stats = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
per = {int(k): v for k, v in stats["per_second"].items()}
print(f"{n} jobs: {per.get(0, 0)} requests in the outage's 1st second, "
      f"{sum(v for k, v in per.items() if k < 3)} during it (s 0-2), "
      f"{stats['requests']} in all; {ok}/{n} ok")
PY
  kill $mock 2>/dev/null || true
  wait $mock 2>/dev/null || true
  : > "$dir/mock.out"
done
