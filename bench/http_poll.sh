#!/usr/bin/env bash
# HTTP vehicle poll benchmark against the real binary (issue: vehicle
# protocol adapters), with nginx as the ceiling in the same invocation:
#
#   1. `ota serve` on embedded defaults (SQLite, in-process staging and bus);
#   2. N vehicles imported (bench/gen_fleet.py) and a campaign for all of
#      them (one wave, no rate cap) launched, until staging holds N documents;
#   3. credentials issued for a sample of S vehicles, and each one's ETag read;
#   4. wrk (a second process, 1 thread) polls GET /v1/vehicles/{vin}/actions
#      as random vehicles of the sample, each with its own token:
#        200 mix: no If-None-Match, every answer is the document;
#        304 mix: 90 % send the current ETag (304), 10 % do not (200);
#      then nginx serves a static file of the median document's bytes to the
#      same requests (its own ETag in the 304 mix), at the same settings;
#   5. prints requests/s, p50, p99, ours/nginx, and the server's RSS.
#
#   bench/http_poll.sh [N]      (default 1000000; results in bench/out/)
#
# Environment: HTTP_POLL_SAMPLE (vehicles polled, default 20000),
# HTTP_POLL_CONNS (wrk connection counts, default "16 32 64"),
# HTTP_POLL_DURATION (per run, default 20s), HTTP_POLL_REUSE=1 (keep the
# data directory of an earlier run with the same N: skips import, staging
# and credentials; the server restages from its database on start).
#
# Variants, each a block of its own after the default one, with nginx run
# again in every block (the ratio compares within a block; HTTP_POLL_BLOCKS
# orders them, and may repeat them):
#   HTTP_POLL_BASELINE=/path/to/ota   the same data served by another build
#                                     (an A/B of two binaries in one run);
#                                     with HTTP_POLL_BASELINE_OWN_DATA=1 it
#                                     sets up a fleet of its own (a build
#                                     from before a schema change);
#   HTTP_POLL_OTLP=1                  tracing exported over OTLP/gRPC to
#                                     bench/otlp_sink.py, 10 % of traces
#                                     sampled (parentbased_traceidratio).
#
# The per-vehicle rate limit stays on, raised by configuration
# (OTA_ADAPTERS__VEHICLE_RATE_PER_S / OTA_ADAPTERS__VEHICLE_BURST): 20,000
# vehicles at 30,000 requests/s poll 1.5 times a second each, close to the
# default 2/s, and a 429 would measure the limiter's verdict instead of the
# poll. Every request still goes through the limiter's bucket.
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
SAMPLE=${HTTP_POLL_SAMPLE:-20000}
CONNS=${HTTP_POLL_CONNS:-"16 32 64"}
DURATION=${HTTP_POLL_DURATION:-20s}
for tool in wrk nginx curl flock; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install $tool" >&2; exit 1; }
done
build
FLEET="$OUT/fleet-$N.ndjson"
[ -s "$FLEET" ] || python3 "$ROOT/bench/gen_fleet.py" "$N" >"$FLEET"
DATA="$OUT/http_poll-data-$N"
NGX="$OUT/http_poll-nginx"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fleet: $N vehicles; polled sample: $SAMPLE vehicles; wrk -t1 -d$DURATION, connections: $CONNS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port); GRPC_PORT=$(free_port); MQTT_PORT=$(free_port); NGINX_PORT=$(free_port)
BASE="http://127.0.0.1:$HTTP_PORT"
: >"$OUT/http_poll-server.log"
SERVER_PID=""; NGINX_PID=""; SINK_PID=""
cleanup() {
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && { kill -QUIT "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
  [ -n "$SERVER_PID" ] && stop_server
}
trap cleanup EXIT

# Its own ports (other bench scripts use lib.sh's fixed 18080), the system
# Mosquitto keeps 1883. Reconcile is pushed out of the run: its walk over
# 1M documents would land in one measurement and not the others.
# start_ota [VAR=value ...]: with $BIN (default the release build) and
# these extra variables.
start_ota() {
  env -u OTA_DATABASE_URL -u OTA_REDIS_URL -u OTA_MQTT_URL -u OTEL_EXPORTER_OTLP_ENDPOINT \
    OTA_DATA_DIR="$DATA" OTA_HTTP_ADDR="127.0.0.1:$HTTP_PORT" OTA_GRPC_ADDR="127.0.0.1:$GRPC_PORT" \
    OTA_MQTT_LISTEN="127.0.0.1:$MQTT_PORT" OTA_LOG=warn \
    OTA_STAGING__RECONCILE_INTERVAL_S=3600 \
    OTA_ADAPTERS__VEHICLE_RATE_PER_S=1000000 OTA_ADAPTERS__VEHICLE_BURST=1000000 \
    "$@" "${BIN:-$OTA}" serve >>"$OUT/http_poll-server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 3000); do
    curl -fs "$BASE/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "server did not get ready; see $OUT/http_poll-server.log" >&2; return 1
}

ota() { OTA_SERVER="$BASE" OTA_DATA_DIR="$DATA" "${BIN:-$OTA}" "$@"; }
api() { curl -fsS -H "Authorization: Bearer $(cat "$DATA/admin.token")" "$@"; }
staged() { api "$BASE/api/v1/staging/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["staged_vehicles"], s["queue_depth"])'; }
secs_since() { echo "$(date +%s.%N) - $1" | bc; }

wait_staged() {
  local t0=$1 n q
  for _ in $(seq 1 1800); do
    read -r n q < <(staged)
    [ "$n" -ge "$N" ] && [ "$q" -eq 0 ] && { printf 'staged     %s vehicles, %.0f s after %s\n' "$n" "$(secs_since "$t0")" "$2"; return 0; }
    sleep 1
  done
  echo "staging stopped at $n of $N vehicles; see $OUT/http_poll-server.log" >&2; return 1
}

setup() {
  local t0 id approver
  rm -rf "$DATA"; mkdir -p "$DATA"
  start_ota
  echo; echo "== setup"
  t0=$(date +%s.%N)
  ota vehicles import "$FLEET" --source manufacturing --output json >"$OUT/http_poll-import.json"
  printf 'import     %s vehicles in %.1f s\n' "$N" "$(secs_since "$t0")"
  # One campaign over the whole fleet, one ECU, so every vehicle ends up
  # with one staged action. The version is above every version in the
  # fleet, so no vehicle counts as already done.
  approver=$(ota tokens create --role approver --principal bench-approver --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  local name=bench-bms
  ota packages add --name "$name" --version 9.0.0 --ecu BMS \
    --artifact "https://cdn.example.com/fw/$name-9.0.0.bin" --sha256 "$(printf '%s' "$name" | sha256sum | cut -d' ' -f1)" \
    --size 1048576 --output json >/dev/null
  cat >"$OUT/http_poll-campaign.yaml" <<YAML
name: http-poll-bench
target: 'true'
rules:
  - install: {package: $name, version: 9.0.0, ecu: BMS}
rollout:
  waves: [100]
  wave_soak: 0s
  advance: auto
  max_per_minute: 100000000
  action_timeout: never
priority: 10
YAML
  id=$(ota campaigns create -f "$OUT/http_poll-campaign.yaml" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  ota campaigns approve "$id" --token "$approver" --output json >/dev/null
  t0=$(date +%s.%N)
  ota campaigns launch "$id" --output json >/dev/null
  wait_staged "$t0" launch
  t0=$(date +%s.%N)
  python3 "$ROOT/bench/http_poll_sample.py" issue "$BASE" "$(cat "$DATA/admin.token")" "$N" "$SAMPLE" "$DATA/creds.txt"
  printf 'credentials %s issued in %.1f s\n' "$SAMPLE" "$(secs_since "$t0")"
  touch "$DATA/ready"
}

if [ "${HTTP_POLL_REUSE:-0}" = 1 ] && [ -e "$DATA/ready" ] && [ "$(wc -l <"$DATA/creds.txt")" -eq "$SAMPLE" ]; then
  echo; echo "== setup: reusing $DATA"
  t0=$(date +%s.%N)
  start_ota
  wait_staged "$t0" "server start (restaged from the database)"
else
  setup
fi

# Each sample vehicle polls once: its ETag, and the document nginx serves.
mkdir -p "$NGX/root" "$NGX/tmp"
DOC_BYTES=$(python3 "$ROOT/bench/http_poll_sample.py" etags "$BASE" "$DATA/creds.txt" "$DATA/sample.txt" "$NGX/root/doc.json")
echo "document   median $DOC_BYTES bytes (the file nginx serves)"

# nginx: 2 workers (auto = one per core, as the server's runtime has one
# thread per core), keep-alive without a request cap like ours, no access log.
cat >"$NGX/nginx.conf" <<CONF
worker_processes auto;
user root;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $NGX/tmp;
  proxy_temp_path $NGX/tmp;
  fastcgi_temp_path $NGX/tmp;
  uwsgi_temp_path $NGX/tmp;
  scgi_temp_path $NGX/tmp;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $NGX/root;
    location / {
      default_type application/json;
      add_header Cache-Control no-cache;
      rewrite ^ /doc.json break;
    }
  }
}
CONF
nginx -p "$NGX" -c "$NGX/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -fs -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done
NGINX_ETAG=$(curl -fsI "http://127.0.0.1:$NGINX_PORT/x" | awk -F': ' 'tolower($1) == "etag" {gsub(/[\r"]/, "", $2); print $2}')
awk -v e="$NGINX_ETAG" '{print $1, $2, e}' "$DATA/sample.txt" >"$NGX/sample.txt"

# The answers the mixes count on, checked once outside the measurement.
read -r vin token etag < <(head -1 "$DATA/sample.txt")
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
got="$(code -H "Authorization: Bearer $token" "$BASE/v1/vehicles/$vin/actions") $(code -H "Authorization: Bearer $token" -H "If-None-Match: \"$etag\"" "$BASE/v1/vehicles/$vin/actions") $(code -H "If-None-Match: \"$NGINX_ETAG\"" "http://127.0.0.1:$NGINX_PORT/v1/vehicles/$vin/actions")"
[ "$got" = "200 304 304" ] || { echo "expected 200 304 304 from ours, ours with ETag, nginx with ETag; got $got" >&2; exit 1; }

# The first polls queue every sample vehicle's delivery for the campaign
# manager; measure after that backlog is written, not during it.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
settle() {
  for _ in $(seq 1 60); do
    c0=$(cpu_ticks "$SERVER_PID"); sleep 2; c1=$(cpu_ticks "$SERVER_PID")
    [ $(( (c1 - c0) * 100 / $(getconf CLK_TCK) / 2 )) -lt 10 ] && break
  done
}
settle

RSS_STAGED=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status")
c0=$(cpu_ticks "$SERVER_PID"); sleep 5; c1=$(cpu_ticks "$SERVER_PID")
echo "server     idle CPU before the runs: $(( (c1 - c0) * 100 / $(getconf CLK_TCK) / 5 )) % of a core; RSS $RSS_STAGED MiB with $N staged"

# run LABEL URL SAMPLE_FILE SHARE_304 CONNS -> one summary line, raw output kept.
RESULTS="$OUT/http_poll-results.txt"; : >"$RESULTS"
# The lock keeps other benchmarks out, not builds: a compiler on the 2
# cores would halve any figure. Wait for it (up to 15 min), then say what
# else ran.
building() { ps -eo comm= | grep -qxE 'rustc|cc|cc1|ld'; }
quiet() {
  for _ in $(seq 1 180); do
    building || return 0
    sleep 5
  done
  echo "  (a build kept running; measuring anyway)" >&2
}
run() {
  local label=$1 url=$2 file=$3 share=$4 c=$5 raw="$OUT/http_poll-wrk-${1//\//-}-c$5.txt"
  quiet
  wrk -t1 -c"$c" -d"$DURATION" --latency -s "$ROOT/bench/http_poll.lua" "$url" -- "$file" "$share" >"$raw"
  awk -v label="$label" -v c="$c" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ {r = $2} / 50%/ {p50 = ms($2)} / 99%/ {p99 = ms($2)}
    /Non-2xx/ {bad = $NF} /Socket errors/ {err = $0}
    END {printf "%-12s c=%-4s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx/3xx %d%s\n", label, c, r, p50, p99, bad, (err ? "  " err : "")}' "$raw" | tee -a "$RESULTS"
  ! building || echo "  (a build ran during this measurement)" | tee -a "$RESULTS"
}

# block NAME: ours and nginx, both mixes, at every connection count.
block() {
  echo; echo "== $1: GET /v1/vehicles/{vin}/actions (wrk -t1, $DURATION per run; waiting for /tmp/ota-bench.lock)"
  exec 9>/tmp/ota-bench.lock
  flock 9
  for c in $CONNS; do
    run "$1/ours-200" "$BASE" "$DATA/sample.txt" 0 "$c"
    run "$1/nginx-200" "http://127.0.0.1:$NGINX_PORT" "$NGX/sample.txt" 0 "$c"
    run "$1/ours-304" "$BASE" "$DATA/sample.txt" 0.9 "$c"
    run "$1/nginx-304" "http://127.0.0.1:$NGINX_PORT" "$NGX/sample.txt" 0.9 "$c"
  done
  flock -u 9
}

# restart NAME [VAR=value ...]: the server again on the same data, as
# $BIN with these variables, staged and idle before its block.
restart() {
  local name=$1 t0; shift
  stop_server
  t0=$(date +%s.%N)
  start_ota "$@"
  wait_staged "$t0" "the restart for $name"
  settle
}

MAIN_DATA=$DATA
# serve_as NAME: the server of that block (restarted unless it runs already).
RUNNING=current
serve_as() {
  [ "$1" = "$RUNNING" ] && return 0
  DATA=$MAIN_DATA
  case $1 in
    current) BIN=$OTA restart current ;;
    baseline)
      [ -n "${HTTP_POLL_BASELINE:-}" ] || { echo "HTTP_POLL_BASELINE is not set" >&2; exit 1; }
      if [ "${HTTP_POLL_BASELINE_OWN_DATA:-0}" = 1 ]; then
        # A build whose database schema differs: its own fleet, set up by
        # its own CLI, polled as its own sample.
        stop_server
        DATA="$MAIN_DATA-baseline"
        if [ -e "$DATA/ready" ] && [ "$(wc -l <"$DATA/creds.txt")" -eq "$SAMPLE" ]; then
          BIN=$HTTP_POLL_BASELINE restart baseline
        else
          BIN=$HTTP_POLL_BASELINE setup
          settle
        fi
        python3 "$ROOT/bench/http_poll_sample.py" etags "$BASE" "$DATA/creds.txt" "$DATA/sample.txt" "$OUT/http_poll-baseline-doc.json" >/dev/null
      else
        BIN=$HTTP_POLL_BASELINE restart baseline
      fi ;;
    otlp10)
      if [ -z "$SINK_PID" ]; then
        python3 -c 'import grpc' 2>/dev/null || pip install -q grpcio
        SINK_PORT=$(free_port)
        python3 "$ROOT/bench/otlp_sink.py" "$SINK_PORT" "$OUT/http_poll-otlp-count.txt" &
        SINK_PID=$!
      fi
      BIN=$OTA restart otlp10 OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" \
        OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 ;;
    *) echo "unknown block $1 (current, baseline, otlp10)" >&2; exit 1 ;;
  esac
  RUNNING=$1
}

# HTTP_POLL_BLOCKS: the blocks in order, e.g. "current baseline current
# baseline" for an A/B that alternates; by default the variants asked for.
BLOCKS=${HTTP_POLL_BLOCKS:-current${HTTP_POLL_BASELINE:+ baseline}$([ "${HTTP_POLL_OTLP:-0}" = 1 ] && echo " otlp10")}
round=0
for b in $BLOCKS; do
  round=$((round + 1))
  serve_as "$b"
  block "$b.$round"
done
if [ -n "$SINK_PID" ]; then
  read -r exports bytes <"$OUT/http_poll-otlp-count.txt" || true
  echo "otlp sink  ${exports:-0} exports, ${bytes:-0} bytes of spans received"
fi

echo; echo "== summary: ours / nginx at the same connection count, in the same block"
awk '{rps[$1 " " $2] = $3; p50[$1 " " $2] = $6; p99[$1 " " $2] = $9}
  $1 ~ /\/ours-/ {order[++n] = $1 " " $2}
  END {for (i = 1; i <= n; i++) {split(order[i], o, " "); ng = o[1]; sub(/\/ours-/, "/nginx-", ng); ng = ng " " o[2];
    printf "%-16s %-6s ours %7.0f req/s p50 %5.2f p99 %5.2f ms | nginx %7.0f req/s p50 %5.2f p99 %5.2f ms | ratio %.2f\n",
      o[1], o[2], rps[order[i]], p50[order[i]], p99[order[i]], rps[ng], p50[ng], p99[ng], rps[order[i]] / rps[ng]}}' "$RESULTS"
echo "server RSS: $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status") MiB after the runs, $RSS_STAGED MiB before them, peak $(peak_rss_mib "$SERVER_PID") MiB (import and staging included)"
echo "server log: $(grep -c 'WARN\|ERROR' "$OUT/http_poll-server.log" || true) warning or error lines ($OUT/http_poll-server.log)"
