#!/usr/bin/env bash
# hawkBit DDI poll benchmark (issue #7), ours beside goosebit from PyPI, in
# one invocation so the ratio compares runs on the same machine at the same
# moment:
#
#   1. `ota serve` on embedded defaults (SQLite, in-process staging) with a
#      fleet of N vehicles (bench/gen_fleet.py), a hosted 1 MiB package and
#      a launched campaign for every vehicle whose BMS is older than 2.3.1
#      (78 % of the fleet): one staged deployment each. Every vehicle gets
#      its own credential and uploads its DDI config data once, as SWUpdate
#      does. The targeted vehicles are the ones polled.
#   2. goosebit (PyPI, in a venv under bench/out) on its default SQLite
#      database, with strict device auth and the same N controller ids,
#      each with its own token, a 1 MiB .swu and a rollout on the default
#      feed, so its poll also answers with a deploymentBase link. The same
#      controllers are polled.
#   3. wrk (1 thread) with bench/ddi_poll.lua: GET /DEFAULT/controller/v1/{id}
#      for random controllers, `Authorization: TargetToken ...`; then the
#      same on the deploymentBase link. Same script, same settings for both;
#      a 3 s warm-up before each measured run. All measured runs hold
#      /tmp/ota-bench.lock.
#
#   bench/ddi_poll.sh [N]       (default 10000; results in bench/out/)
#   DDI_BENCH_CONNS="4 16"  DDI_BENCH_DURATION=20s  GOOSEBIT_VERSION=0.2.12
source "$(dirname "$0")/lib.sh"
N=${1:-10000}
CONNS=${DDI_BENCH_CONNS:-"4 16"}
DURATION=${DDI_BENCH_DURATION:-20s}
GOOSEBIT_VERSION=${GOOSEBIT_VERSION:-0.2.12}
# Not lib.sh's 18080/18051: another benchmark may hold those meanwhile.
HTTP_PORT=28080 GRPC_PORT=28051 MQTT_PORT=28883 GB_PORT=28090
OTA_URL=http://127.0.0.1:$HTTP_PORT GB_URL=http://127.0.0.1:$GB_PORT
SETUP="$ROOT/bench/ddi_poll_setup.py"
WORK="$OUT/ddi_poll"
GB_VENV="$OUT/goosebit-venv"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
for p in $HTTP_PORT $GRPC_PORT $MQTT_PORT $GB_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p is taken" >&2; exit 1; fi
done
timeout 1800 bash -c "$(declare -f build); ROOT='$ROOT' build"
if [ "$("$GB_VENV/bin/pip" show goosebit 2>/dev/null | awk '/^Version:/ {print $2}')" != "$GOOSEBIT_VERSION" ]; then
  python3 -m venv "$GB_VENV"
  timeout 600 "$GB_VENV/bin/pip" install -q "goosebit==$GOOSEBIT_VERSION"
fi
FLEET="$OUT/fleet-$N.ndjson"
[ -s "$FLEET" ] || python3 "$ROOT/bench/gen_fleet.py" "$N" >"$FLEET"
rm -rf "$WORK" && mkdir -p "$WORK"

OTA_PID= GB_PID=
cleanup() {
  for pid in $OTA_PID $GB_PID; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_up() { # URL LOG
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "server at $1 did not start; see $2" >&2; return 1
}

# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg); fleet: $N vehicles"

# --- ours -------------------------------------------------------------------
echo "== setting up ota serve (SQLite, in-process staging) on $OTA_URL"
OTA_DIR="$WORK/ota-data"
mkdir -p "$OTA_DIR"
(
  cd "$WORK" # no ./ota.toml from the caller's directory
  OTA_DATA_DIR="$OTA_DIR" OTA_HTTP_ADDR=127.0.0.1:$HTTP_PORT OTA_GRPC_ADDR=127.0.0.1:$GRPC_PORT \
    OTA_MQTT_LISTEN=127.0.0.1:$MQTT_PORT OTA_LOG=warn \
    OTA_ADAPTERS__VEHICLE_RATE_PER_S=1000000 OTA_ADAPTERS__VEHICLE_BURST=1000000 \
    exec "$OTA" serve
) >"$WORK/ota.log" 2>&1 &
OTA_PID=$!
wait_up "$OTA_URL/healthz" "$WORK/ota.log"
export OTA_SERVER=$OTA_URL OTA_DATA_DIR=$OTA_DIR
"$OTA" vehicles import "$FLEET" --source manufacturing --output json >"$WORK/import.json"
head -c 1048576 /dev/urandom >"$WORK/bms-2.3.1.bin"
"$OTA" packages add --name bms-fw --version 2.3.1 --ecu BMS --file "$WORK/bms-2.3.1.bin" >/dev/null
timeout 900 python3 "$SETUP" ota-credentials "$OTA_URL" "$(cat "$OTA_DIR/admin.token")" "$N" "$WORK"
# Not every vehicle: on SQLite a campaign matching nearly all of a 2000-
# vehicle scan page fails its targeting (2000 rows x 17 columns is above
# SQLite's 32766 parameters; see docs/benchmarks.md). No timeout: the
# actions stay open while the benchmark polls.
TARGET='version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
cat >"$WORK/campaign.yaml" <<YAML
name: ddi-poll-bench
target: '$TARGET'
rules:
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [100]
  max_per_minute: 10000000
  action_timeout: never
YAML
matched=$("$OTA" rules preview --output json "$TARGET" | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')
id=$("$OTA" campaigns create -f "$WORK/campaign.yaml" --output json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
approver=$("$OTA" tokens create --role approver --principal ddi-bench-approver 2>/dev/null)
"$OTA" --token "$approver" campaigns approve "$id" >/dev/null
"$OTA" campaigns launch "$id" >/dev/null
staged=0
for _ in $(seq 1 600); do
  staged=$("$OTA" staging stats --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["staged_vehicles"])')
  [ "$staged" -ge "$matched" ] && break
  sleep 0.5
done
[ "$staged" -ge "$matched" ] || { echo "only $staged of $matched vehicles staged after 5 min; see $WORK/ota.log" >&2; exit 1; }
echo "  campaign $id launched, $staged vehicles staged ($matched matched)"
timeout 900 python3 "$SETUP" ota-requests "$OTA_URL" "$N" "$WORK"

# --- goosebit ---------------------------------------------------------------
echo "== setting up goosebit $GOOSEBIT_VERSION (uvicorn, 1 worker, SQLite) on $GB_URL"
GB_DIR="$WORK/goosebit"
GB_SITE=$("$GB_VENV/bin/python" -c 'import importlib.util as u, os; print(os.path.dirname(u.find_spec("goosebit").origin))')
mkdir -p "$GB_DIR/artifacts"
# goosebit reads ./goosebit.yaml. Its defaults, except: the database and
# artifacts live here rather than in site-packages, device tokens are
# required (as ours), and logs are at warning level (as ours: OTA_LOG=warn)
# instead of a line per poll.
cat >"$GB_DIR/goosebit.yaml" <<YAML
port: $GB_PORT
db_uri: sqlite:///$GB_DIR/db.sqlite3
artifacts_dir: $GB_DIR/artifacts
device_auth:
  enable: true
  mode: strict
logging:
  version: 1
  formatters: {simple: {format: "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}}
  handlers: {console: {class: logging.StreamHandler, formatter: simple, level: DEBUG}}
  root: {level: WARNING, handlers: [console]}
YAML
# Its migrations, as its image runs them (aerich upgrade).
printf '[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\nlocation = "%s/db/migrations"\nsrc_folder = "./."\n' \
  "$GB_SITE" >"$GB_DIR/pyproject.toml"
(cd "$GB_DIR" && timeout 300 "$GB_VENV/bin/aerich" upgrade >"$GB_DIR/aerich.log" 2>&1)
# Its image runs one uvicorn worker (gunicorn --workers 1 with
# UvicornWorker; several workers are not supported); this is the same
# worker without gunicorn around it.
(
  cd "$GB_DIR"
  exec "$GB_VENV/bin/uvicorn" --host 127.0.0.1 --port "$GB_PORT" --no-access-log --log-level warning goosebit:app
) >"$WORK/goosebit.log" 2>&1 &
GB_PID=$!
wait_up "$GB_URL/login" "$WORK/goosebit.log"
"$GB_VENV/bin/python" "$SETUP" swu 2.3.1 "$GB_DIR/bms-2.3.1.swu"
timeout 1200 "$GB_VENV/bin/python" "$SETUP" goosebit "$GB_URL" "$N" "$WORK" "$GB_DIR/bms-2.3.1.swu" "$WORK/ota-poll.tsv"

# --- measurement ------------------------------------------------------------
# wrk's figures in ms: "812.00us", "1.20ms", "2.01s".
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.3f", n }'; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
measure() { # LABEL URL PID REQUESTS_FILE CONNS RESOURCE
  local label=$1 url=$2 pid=$3 reqs=$4 c=$5 what=$6 out cpu0 cpu1 secs rps p50 p99 bad
  wrk -t1 -c"$c" -d3s -s "$ROOT/bench/ddi_poll.lua" "$url" -- "$reqs" >/dev/null
  cpu0=$(cpu_s "$pid")
  out=$(wrk -t1 -c"$c" -d"$DURATION" --latency -s "$ROOT/bench/ddi_poll.lua" "$url" -- "$reqs")
  cpu1=$(cpu_s "$pid")
  echo "$out" >"$WORK/wrk-$what-$label-c$c.txt"
  secs=$(echo "$out" | awk '/requests in/ {sub(/s,$/, "", $4); print $4}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  bad=$(echo "$out" | awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\n' "$what" "$c" "$label" "$rps" "$p50" "$p99" "$bad" \
    "$(echo "($cpu1 - $cpu0) / ${secs:-1}" | bc -l)" >>"$RESULTS"
  printf '  %-6s c=%-3s %-9s %9.0f req/s  p50 %8.3f ms  p99 %8.3f ms  errors %s\n' "$what" "$c" "$label" "$rps" "$p50" "$p99" "$bad"
}

echo "== measuring (wrk -t1, $DURATION per run, waiting for /tmp/ota-bench.lock)"
exec 9>/tmp/ota-bench.lock
flock -w 3600 9 # other benchmarks on this machine take turns
echo "  lock held; load $(cut -d' ' -f1-3 /proc/loadavg)"
for what in poll deploy; do
  for c in $CONNS; do
    measure ota "$OTA_URL" "$OTA_PID" "$WORK/ota-$what.tsv" "$c" "$what"
    measure goosebit "$GB_URL" "$GB_PID" "$WORK/goosebit-$what.tsv" "$c" "$what"
  done
done
flock -u 9
exec 9>&-

echo
echo "== summary (ratio: ours / goosebit for req/s, goosebit / ours for latency)"
printf '%-7s %-4s %-9s %10s %10s %10s %7s %10s\n' resource conn server "req/s" "p50 ms" "p99 ms" errors "cpu cores"
awk -F'\t' '{
  printf "%-7s %-4s %-9s %10.0f %10.3f %10.3f %7d %10.2f\n", ($1 == "poll" ? "poll" : "deploy"), $2, $3, $4, $5, $6, $7, $8
  if ($3 == "ota") { r = $4; p50 = $5; p99 = $6 }
  else printf "%-7s %-4s %-9s %9.1fx %9.1fx %9.1fx\n", "", "", "ratio", r / $4, $5 / p50, $6 / p99
}' "$RESULTS"
echo "(wrk output in $WORK/wrk-*.txt; server logs in $WORK/*.log)"
