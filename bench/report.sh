#!/usr/bin/env bash
# `corral report` of a large results file: peak RSS, wall time, size of the HTML page.
# Usage: bench/report.sh [LINES...]      (default 1000000)
# The results are synthetic but shaped like a real run's: 50 hosts, log-normal latency,
# 5 % failures of three kinds, retries, one started_at per line over ~50 minutes (so the
# timeline is downsampled past its 600 windows), ids, meta and body_bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p corral-cli
BIN=target/release/corral
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "| lines | results file (MiB) | peak RSS (MiB) | wall time (s) | HTML (KiB) |"
echo "|---|---|---|---|---|"
for n in "${@:-1000000}"; do
  python3 - "$n" "$WORK/results.jsonl" <<'PY'
import math, random, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
random.seed(7)
start = 1795654920.0
span = 3000.0
kinds = ["http_status", "timeout", "connection"]
with open(path, "w") as f:
    for i in range(n):
        host = f"api{i % 50}.example.com"
        lat = random.lognormvariate(math.log(40), 0.6)
        failed = random.random() < 0.05
        attempts = 1 + (3 if failed else (1 if random.random() < 0.03 else 0))
        t = start + span * i / n
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        if failed:
            kind = kinds[i % 3]
            status = "503" if kind == "http_status" else "null"
            err = f',"error":{{"kind":"{kind}","message":"gave up after {attempts} attempts"}}'
        else:
            status, err = "200", ""
        f.write(f'{{"line":{i + 1},"id":"req-{i}","method":"POST","url":"https://{host}/v1/items/{i}?key=REDACTED",'
                f'"ok":{"false" if failed else "true"},"status":{status},"attempts":{attempts},'
                f'"latency_ms":{lat:.3f},"elapsed_ms":{lat * attempts:.3f},"started_at":"{stamp}"{err},'
                f'"body_bytes":512,"meta":{{"batch":{i // 1000}}}}}\n')
PY
  size=$(( $(stat -c %s "$WORK/results.jsonl") / 1048576 ))
  # corral's own summary goes to the same stdout; peak.py's figures are the last line.
  read -r rss _ secs code < <(python3 bench/peak.py "$BIN" report "$WORK/results.jsonl" --html "$WORK/report.html" 2>/dev/null | tail -1)
  [ "$code" = 0 ] || { echo "corral report exited $code" >&2; exit 1; }
  echo "| $n | $size | $rss | $secs | $(( $(stat -c %s "$WORK/report.html") / 1024 )) |"
done
