#!/usr/bin/env bash
# Dashboard page times against the real binary on PostgreSQL (issue: admin
# diagnostic dashboard), with GET /healthz as the reference in the same run:
#
#   1. `ota serve` on a fresh PostgreSQL database (in-process staging);
#   2. N vehicles imported (bench/gen_fleet.py), one campaign over all of
#      them launched, until staging holds N documents;
#   3. a sample of S vehicles report over the HTTP vehicle API: most
#      succeed, some fail with one of three reasons, some reject;
#   4. a browser session (POST /ui/login), then each page R times with
#      curl, one after the other: the campaign list, the campaign page,
#      a failed vehicle's page, the health page, a failure group's CSV,
#      and /healthz;
#   5. prints median and p95 server time per page and its ratio to
#      /healthz's median.
#
#   bench/dashboard_pages.sh [N]     (default 1000000; results in bench/out/)
#
# Environment: PAGES_SAMPLE (reporting vehicles, default 5000),
# PAGES_ROUNDS (requests per page, default 30), PAGES_REUSE=1 (keep the
# database and data directory of an earlier run with the same N: skips the
# import, the launch and the reports).
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
SAMPLE=${PAGES_SAMPLE:-5000}
ROUNDS=${PAGES_ROUNDS:-30}
for tool in curl psql python3; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
build
FLEET="$OUT/fleet-$N.ndjson"
[ -s "$FLEET" ] || python3 "$ROOT/bench/gen_fleet.py" "$N" >"$FLEET"
DATA="$OUT/dashboard-data-$N"
REUSE=${PAGES_REUSE:-0}
[ "$REUSE" = 1 ] && [ ! -s "$DATA/failed.txt" ] && { echo "nothing to reuse in $DATA" >&2; exit 1; }
if [ "$REUSE" = 1 ]; then
  DB_URL="$PG_BASE/ota_bench_dashboard_$N"
else
  rm -rf "$DATA"; mkdir -p "$DATA"
  DB_URL=$(fresh_pg_db "dashboard_$N")
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "fleet: $N vehicles in PostgreSQL; reporting sample: $SAMPLE; $ROUNDS requests per page"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port); GRPC_PORT=$(free_port); MQTT_PORT=$(free_port)
BASE="http://127.0.0.1:$HTTP_PORT"
env -u OTA_REDIS_URL -u OTA_MQTT_URL \
  OTA_DATA_DIR="$DATA" OTA_DATABASE_URL="$DB_URL" OTA_HTTP_ADDR="127.0.0.1:$HTTP_PORT" \
  OTA_GRPC_ADDR="127.0.0.1:$GRPC_PORT" OTA_MQTT_LISTEN="127.0.0.1:$MQTT_PORT" OTA_LOG=warn \
  OTA_STAGING__RECONCILE_INTERVAL_S=3600 \
  OTA_ADAPTERS__VEHICLE_RATE_PER_S=1000000 OTA_ADAPTERS__VEHICLE_BURST=1000000 \
  "$OTA" serve >"$OUT/dashboard-server.log" 2>&1 &
SERVER_PID=$!
trap stop_server EXIT
for _ in $(seq 1 3000); do
  curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; see $OUT/dashboard-server.log" >&2; exit 1; }
  sleep 0.2
done

ota() { OTA_SERVER="$BASE" OTA_DATA_DIR="$DATA" "$OTA" "$@"; }
ADMIN=$(cat "$DATA/admin.token")
api() { curl -fsS -H "Authorization: Bearer $ADMIN" "$@"; }
secs_since() { echo "$(date +%s.%N) - $1" | bc; }

if [ "$REUSE" != 1 ]; then
echo; echo "== setup"
t0=$(date +%s.%N)
ota vehicles import "$FLEET" --source manufacturing --output json >/dev/null
printf 'import     %s vehicles in %.1f s\n' "$N" "$(secs_since "$t0")"
approver=$(ota tokens create --role approver --principal bench-approver --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
ota packages add --name bench-bms --version 9.0.0 --ecu BMS \
  --artifact "https://cdn.example.com/fw/bench-bms-9.0.0.bin" --sha256 "$(printf bench | sha256sum | cut -d' ' -f1)" \
  --size 1048576 --output json >/dev/null
cat >"$OUT/dashboard-campaign.yaml" <<YAML
name: dashboard-bench
target: 'true'
rules:
  - install: {package: bench-bms, version: 9.0.0, ecu: BMS}
rollout:
  waves: [1, 10, 100]
  wave_soak: 0s
  advance: auto
  max_per_minute: 100000000
  action_timeout: never
  max_retries: 2
  failure_threshold: {percent: 90, min_finished: 1000000, action: pause}
YAML
ID=$(ota campaigns create -f "$OUT/dashboard-campaign.yaml" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
ota campaigns approve "$ID" --token "$approver" --output json >/dev/null
t0=$(date +%s.%N)
ota campaigns launch "$ID" --output json >/dev/null
for _ in $(seq 1 3600); do
  read -r n q < <(api "$BASE/api/v1/staging/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["staged_vehicles"], s["queue_depth"])')
  [ "$n" -ge "$N" ] && [ "$q" -eq 0 ] && break
  sleep 1
done
printf 'staged     %s vehicles, %.0f s after launch\n' "$n" "$(secs_since "$t0")"

t0=$(date +%s.%N)
python3 "$ROOT/bench/http_poll_sample.py" issue "$BASE" "$ADMIN" "$N" "$SAMPLE" "$DATA/creds.txt"
python3 "$ROOT/bench/dashboard_reports.py" "$BASE" "$DATA/creds.txt" >"$DATA/failed.txt"
printf 'reports    %s vehicles reported in %.1f s\n' "$SAMPLE" "$(secs_since "$t0")"
fi
ID=$(api "$BASE/api/v1/campaigns" | python3 -c 'import json,sys; print(next(c["id"] for c in json.load(sys.stdin)["campaigns"] if c["name"] == "dashboard-bench"))')
FAILED_VIN=$(head -1 "$DATA/failed.txt")

# A browser session, as a person logs in.
JAR="$DATA/cookies"
curl -fsS -o /dev/null -c "$JAR" --data-urlencode "token=$ADMIN" "$BASE/ui/login"

# Wait for the campaign manager to settle (delivery and report batches).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq 1 60); do
  c0=$(cpu_ticks "$SERVER_PID"); sleep 2; c1=$(cpu_ticks "$SERVER_PID")
  [ $(( (c1 - c0) * 100 / $(getconf CLK_TCK) / 2 )) -lt 10 ] && break
done

# times URL -> R lines of time_total in ms; fails on anything but 200.
times() {
  for _ in $(seq 1 "$ROUNDS"); do
    curl -s -b "$JAR" -o /dev/null -w '%{http_code} %{time_total}\n' "$1"
  done | awk -v url="$1" '$1 != 200 {print "HTTP " $1 " from " url > "/dev/stderr"; exit 1} {printf "%.3f\n", $2 * 1000}'
}
stats() { sort -n | awk '{v[NR] = $1} END {printf "%.2f %.2f\n", v[int((NR + 1) / 2)], v[int(NR * 0.95 + 0.5)]}'; }

echo; echo "== pages ($ROUNDS requests each, after one warm-up)"
RESULTS="$OUT/dashboard-results.txt"; : >"$RESULTS"
measure() {
  local label=$1 url=$2
  curl -s -b "$JAR" -o /dev/null "$url"
  read -r p50 p95 < <(times "$url" | stats)
  echo "$label $p50 $p95" >>"$RESULTS"
}
measure healthz "$BASE/healthz"
measure campaigns "$BASE/ui/campaigns"
measure campaign "$BASE/ui/campaigns/$ID"
measure vehicle "$BASE/ui/vehicles/$FAILED_VIN"
measure health "$BASE/ui/health"
measure group-csv "$BASE/ui/campaigns/$ID/failures.csv?reason=E42%20checksum%20mismatch"
measure healthz-again "$BASE/healthz"
awk 'NR == 1 {ref = $2} {printf "%-14s p50 %8.2f ms  p95 %8.2f ms  p50/healthz %7.1f\n", $1, $2, $3, $2 / ref}' "$RESULTS"
echo "server RSS: $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$SERVER_PID/status") MiB; log: $(grep -c 'WARN\|ERROR' "$OUT/dashboard-server.log" || true) warning or error lines"
