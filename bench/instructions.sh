#!/usr/bin/env bash
# Instructions per request and fixed start-up of `corral run`, counted by valgrind's callgrind
# (Debian's valgrind): counts, unlike seconds, do not swing with what else the machine does.
# The target is nginx (Debian's nginx-light, installed when missing) on loopback, a 64-byte
# body, plain HTTP and HTTPS HTTP/1.1 (`--insecure`, a self-signed certificate).
#
# Usage: bench/instructions.sh                      this build
#        BASELINE=PATH|REV bench/instructions.sh    and a baseline: a corral binary, or a git
#                                                   revision built in a temporary worktree
# Env: N1 (1000) and N2 (6000) requests: per request = (I(N2) - I(N1)) / (N2 - N1), the
# marginal cost; start-up = I(N1) - N1 x per request. One thread (--threads 1), -c 64 and
# --per-host-concurrency 64: 64 connections to the one host, as `oha -c 64` opens (the default
# per-host limit, 8, would measure jobs waiting for their host instead: WAIT=1 does that).
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-1000}
N2=${N2:-6000}
PHC=64; [ "${WAIT:-0}" = 1 ] && PHC=8
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
command -v valgrind > /dev/null || $SUDO sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind" > /dev/null
cargo build --release -q -p corral-cli
WORK=$(mktemp -d)
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2> /dev/null
  [ -n "${TREE:-}" ] && git worktree remove --force "$TREE" 2> /dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

BASE_BIN=""
if [ -n "${BASELINE:-}" ]; then
  if [ -x "$BASELINE" ]; then
    BASE_BIN=$BASELINE
  else
    TREE="$WORK/tree"
    git worktree add -q -f "$TREE" "$BASELINE"
    (cd "$TREE" && CARGO_TARGET_DIR="$WORK/target" cargo build --release -q -p corral-cli)
    BASE_BIN="$WORK/target/release/corral"
  fi
fi

# shellcheck source=bench/nginx.sh
. bench/nginx.sh
nginx_start "$WORK"
HP=$NGINX_HTTP; HS=$NGINX_H1

for n in "$N1" "$N2"; do
  for i in $(seq "$n"); do echo "{\"url\":\"http://127.0.0.1:$HP/x?i=$i\"}"; done > "$WORK/http-$n.jsonl"
  for i in $(seq "$n"); do echo "{\"url\":\"https://127.0.0.1:$HS/x?i=$i\"}"; done > "$WORK/https-$n.jsonl"
done

# Instructions of one run of BIN over JOBS (all threads), from callgrind's totals.
count() { # BIN JOBS [ARGS...]
  local bin=$1 jobs=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" -q \
    "$bin" run "$jobs" -o "$WORK/out.jsonl" --overwrite -q --threads 1 -c 64 \
    --per-host-concurrency "$PHC" "$@" > /dev/null
  local n; n=$(wc -l < "$jobs")
  [ "$(grep -c '"ok":true' "$WORK/out.jsonl")" -eq "$n" ] || { echo "failures in $jobs" >&2; exit 1; }
  awk '/^summary:/ { print $2 }' "$WORK/cg.out"
}

printf '%-10s %-7s %14s %14s\n' build scheme "per request" "start-up (M)"
for which in this baseline; do
  BIN=target/release/corral
  if [ "$which" = baseline ]; then
    [ -n "$BASE_BIN" ] || continue
    BIN=$BASE_BIN
  fi
  for scheme in http https; do
    # Only the https runs skip the check of nginx's self-signed certificate (as oha
    # --insecure): an http-only run's start-up is what a user's is.
    extra=(); [ "$scheme" = https ] && extra=(--insecure)
    i1=$(count "$BIN" "$WORK/$scheme-$N1.jsonl" "${extra[@]}")
    i2=$(count "$BIN" "$WORK/$scheme-$N2.jsonl" "${extra[@]}")
    python3 - "$which" "$scheme" "$i1" "$i2" "$N1" "$N2" <<'PY'
import sys
which, scheme, i1, i2, n1, n2 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
per = (i2 - i1) / (n2 - n1)
print(f"{which:<10} {scheme:<7} {per:14,.0f} {(i1 - n1 * per) / 1e6:14.1f}")
PY
  done
done
