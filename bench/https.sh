#!/usr/bin/env bash
# corral against oha on nginx (Debian's package, installed by this script when missing), on
# loopback: plain HTTP/1.1, HTTPS HTTP/1.1 and HTTPS HTTP/2 (a self-signed certificate, which
# both skip checking: `--insecure`).
#
# Usage: bench/https.sh [REQUESTS [ROUNDS]]   (default 100000 requests, 5 rounds, concurrency 256)
# Each round runs corral then oha on each protocol, alternating; each is timed as a whole
# process (wall, and CPU: user + system of the process, from wait4). The ratios corral / oha
# are paired per round; the table gives their medians. Needs: oha (cargo install oha, or
# OHA=path), openssl, root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
ROUNDS=${2:-5}
C=256
OHA=${OHA:-$(command -v oha || echo /tmp/oha/bin/oha)}
cargo build --release -q -p corral-cli
BIN=target/release/corral
WORK=$(mktemp -d)
trap '[ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT

# shellcheck source=bench/nginx.sh
. bench/nginx.sh
nginx_start "$WORK"
declare -A PORT=([http]=$NGINX_HTTP [h1]=$NGINX_H1 [h2]=$NGINX_H2)
declare -A SCHEME=([http]=http [h1]=https [h2]=https)

for p in http h1 h2; do
  for i in $(seq "$N"); do echo "{\"url\":\"${SCHEME[$p]}://127.0.0.1:${PORT[$p]}/x?i=$i\"}"; done > "$WORK/$p.jsonl"
done

# Runs a command; prints its wall and CPU seconds (user + system, from wait4).
measure() {
  python3 -c '
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
print(f"{time.perf_counter() - t:.4f} {ru.ru_utime + ru.ru_stime:.4f}")
sys.exit(os.waitstatus_to_exitcode(status))' "$@"
}
corral() { # PROTO
  local extra=(); [ "${SCHEME[$1]}" = https ] && extra=(--insecure)
  measure "$BIN" run "$WORK/$1.jsonl" -o "$WORK/out.jsonl" --overwrite -q -c $C \
    --per-host-concurrency $C "${extra[@]}"
  [ "$(grep -c '"ok":true' "$WORK/out.jsonl")" -eq "$N" ] || { echo "corral had failures on $1" >&2; exit 1; }
}
oha() { # PROTO
  local extra=(); [ "${SCHEME[$1]}" = https ] && extra=(--insecure)
  [ "$1" = h2 ] && extra+=(--http2)
  measure "$OHA" -n "$N" -c $C --no-tui "${extra[@]}" "${SCHEME[$1]}://127.0.0.1:${PORT[$1]}/x"
}
div() { python3 -c "print(f'{float(\"$1\") / float(\"$2\"):.2f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }

# Warm-up.
corral http > /dev/null; oha http > /dev/null
declare -A WALL CPU
for r in $(seq "$ROUNDS"); do
  for p in http h1 h2; do
    read -r cw cc < <(corral $p)
    read -r ow oc < <(oha $p)
    # Requests per second corral / oha is oha's wall / corral's; CPU per request likewise.
    w=$(div "$ow" "$cw"); c=$(div "$cc" "$oc")
    echo "round $r $p: corral ${cw}s wall ${cc}s CPU, oha ${ow}s wall ${oc}s CPU: req/s corral/oha $w, CPU/request corral/oha $c"
    WALL[$p]="${WALL[$p]:-} $w"; CPU[$p]="${CPU[$p]:-} $c"
  done
done
echo
echo "| nginx, $N GETs, concurrency $C, $ROUNDS alternating rounds | req/s corral / oha (median) | CPU per request corral / oha (median) | rounds (req/s) |"
echo "|---|---|---|---|"
for p in http h1 h2; do
  name=$p; [ $p = http ] && name="plain HTTP/1.1"; [ $p = h1 ] && name="HTTPS HTTP/1.1"; [ $p = h2 ] && name="HTTPS HTTP/2"
  # shellcheck disable=SC2086
  echo "| $name | $(median ${WALL[$p]}) | $(median ${CPU[$p]}) | ${WALL[$p]} |"
done
