# Sourced by the benchmarks that measure against nginx (Debian's nginx-light, installed when
# missing): `nginx_start WORK` writes a self-signed certificate for 127.0.0.1 and starts one
# nginx worker on loopback answering 64 bytes on three free ports — NGINX_HTTP (plain),
# NGINX_H1 (HTTPS, HTTP/1.1) and NGINX_H2 (HTTPS, HTTP/2) — its pid in WORK/nginx.pid (the
# caller's trap kills it).
nginx_start() {
  local work=$1 sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if ! command -v nginx > /dev/null && [ ! -x /usr/sbin/nginx ]; then
    $sudo sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light" > /dev/null 2>&1
  fi
  local nginx; nginx=$(command -v nginx || echo /usr/sbin/nginx)
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1" -keyout "$work/key.pem" -out "$work/cert.pem" 2> /dev/null
  local free='import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  NGINX_HTTP=$(python3 -c "$free"); NGINX_H1=$(python3 -c "$free"); NGINX_H2=$(python3 -c "$free")
  mkdir -p "$work/tmp"
  local body='"................................................................"'
  cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  keepalive_requests 1000000;
  ssl_certificate $work/cert.pem;
  ssl_certificate_key $work/key.pem;
  ssl_session_cache shared:SSL:10m;
  server { listen 127.0.0.1:$NGINX_HTTP; location / { return 200 $body; } }
  server { listen 127.0.0.1:$NGINX_H1 ssl; location / { return 200 $body; } }
  server { listen 127.0.0.1:$NGINX_H2 ssl http2; location / { return 200 $body; } }
}
CONF
  "$nginx" -c "$work/nginx.conf" -e "$work/error.log"
  for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
}
