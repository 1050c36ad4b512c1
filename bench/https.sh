#!/usr/bin/env bash
# corral against oha over HTTPS, on HTTP/1.1 and on HTTP/2, against nginx (Debian's package,
# installed by this script when missing) with a self-signed certificate, on loopback.
#
# Usage: bench/https.sh [REQUESTS [ROUNDS]]   (default 100000 requests, 3 rounds, concurrency 256)
# Each round runs corral then oha on each protocol; the ratios are paired per round, then the
# median. Needs: oha (cargo install oha, or OHA=path), openssl, root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
ROUNDS=${2:-3}
C=256
OHA=${OHA:-$(command -v oha || echo /tmp/oha/bin/oha)}
cargo build --release -q -p corral-cli
BIN=target/release/corral
WORK=$(mktemp -d)
trap '[ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

# shellcheck source=bench/nginx.sh
. bench/nginx.sh
nginx_start "$WORK"
H1=$NGINX_H1; H2=$NGINX_H2

python3 - "$N" "$WORK" "$H1" "$H2" <<'PY'
import sys
n, work, h1, h2 = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
for name, port in (("h1", h1), ("h2", h2)):
    with open(f"{work}/{name}.jsonl", "w") as f:
        for i in range(n):
            f.write(f'{{"url":"https://127.0.0.1:{port}/x?i={i}"}}\n')
PY

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.0f}')"; }
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }

corral() { # PROTO
  "$BIN" run "$WORK/$1.jsonl" -o "$WORK/out.jsonl" --overwrite -q -c $C --per-host-concurrency $C \
    --insecure  # as oha: both skip the check of the self-signed certificate
  [ "$(grep -c '"ok":true' "$WORK/out.jsonl")" -eq "$N" ] || { echo "corral had failures on $1" >&2; exit 1; }
}
oha() { # PROTO PORT
  local extra=""; [ "$1" = h2 ] && extra="--http2"
  "$OHA" -n "$N" -c $C --no-tui --insecure $extra "https://127.0.0.1:$2/x" > "$WORK/oha.txt"
}
# Warm-up.
corral h1 > /dev/null; oha h1 "$H1"
declare -A R
for r in $(seq "$ROUNDS"); do
  for p in h1 h2; do
    port=$H1; [ $p = h2 ] && port=$H2
    t0=$(now); corral $p; t1=$(now); CR=$(rate "$N" "$t0" "$t1")
    t0=$(now); oha $p "$port"; t1=$(now); OR=$(rate "$N" "$t0" "$t1")
    echo "round $r $p: corral $CR req/s, oha $OR req/s, corral/oha $(ratio "$CR" "$OR")"
    R[$p]="${R[$p]:-} $(ratio "$CR" "$OR")"
  done
done
echo
echo "| protocol (HTTPS, nginx, $N requests, concurrency $C, $ROUNDS rounds) | corral / oha, median of paired rounds | rounds |"
echo "|---|---|---|"
for p in h1 h2; do
  # shellcheck disable=SC2086
  echo "| $p | $(median ${R[$p]}) | ${R[$p]} |"
done
