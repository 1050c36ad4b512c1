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
# marginal cost; start-up = I(N1) - N1 x per request. One thread (--threads 1), -c 64.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-1000}
N2=${N2:-6000}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
command -v valgrind > /dev/null || $SUDO sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind" > /dev/null
if ! command -v nginx > /dev/null && [ ! -x /usr/sbin/nginx ]; then
  $SUDO sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light" > /dev/null 2>&1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
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

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2> /dev/null
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
HP=$(free_port); HS=$(free_port)
mkdir -p "$WORK/tmp"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
  uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
  keepalive_requests 1000000;
  ssl_certificate $WORK/cert.pem;
  ssl_certificate_key $WORK/key.pem;
  server { listen 127.0.0.1:$HP;
           location / { return 200 "................................................................"; } }
  server { listen 127.0.0.1:$HS ssl;
           location / { return 200 "................................................................"; } }
}
CONF
"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/error.log"
for _ in $(seq 50); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.1; done

for n in "$N1" "$N2"; do
  for i in $(seq "$n"); do echo "{\"url\":\"http://127.0.0.1:$HP/x?i=$i\"}"; done > "$WORK/http-$n.jsonl"
  for i in $(seq "$n"); do echo "{\"url\":\"https://127.0.0.1:$HS/x?i=$i\"}"; done > "$WORK/https-$n.jsonl"
done

# Instructions of one run of BIN over JOBS (all threads), from callgrind's totals.
count() { # BIN JOBS
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" -q \
    "$1" run "$2" -o "$WORK/out.jsonl" --overwrite -q --threads 1 -c 64 --insecure > /dev/null
  local n; n=$(wc -l < "$2")
  [ "$(grep -c '"ok":true' "$WORK/out.jsonl")" -eq "$n" ] || { echo "failures in $2" >&2; exit 1; }
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
    i1=$(count "$BIN" "$WORK/$scheme-$N1.jsonl")
    i2=$(count "$BIN" "$WORK/$scheme-$N2.jsonl")
    python3 - "$which" "$scheme" "$i1" "$i2" "$N1" "$N2" <<'PY'
import sys
which, scheme, i1, i2, n1, n2 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
per = (i2 - i1) / (n2 - n1)
print(f"{which:<10} {scheme:<7} {per:14,.0f} {(i1 - n1 * per) / 1e6:14.1f}")
PY
  done
done
