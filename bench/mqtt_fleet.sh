#!/usr/bin/env bash
# MQTT fleet benchmark (issue #7), in one invocation so the two brokers are
# compared on the same machine at the same moment:
#
#   (a) the broker embedded in `ota serve`;
#   (b) a Mosquitto this script starts on a port of its own, joined by
#       `ota serve` with OTA_MQTT_URL (shared subscriptions).
#
# For each: `ota serve` on a fresh SQLite data dir; N simulated MQTT vehicles
# (`ota simulate --protocol mqtt --receive-only`) connect and subscribe to
# their actions topic; once all are connected, a campaign matching all of
# them is launched (one wave, a rate that does not bind); every vehicle
# notes when the retained document with its action arrived. Reported:
# vehicles connected and how long connecting took, how many were notified
# within 10 s of the launch and of their action's staging, p50/p99/max of
# both latencies, peak RSS of the server and of Mosquitto.
#
#   bench/mqtt_fleet.sh [N]     (default 20000, or less where the open-files
#                               limit is lower; results in bench/out/mqtt_fleet-*)
#
# Environment: MQTT_FLEET_CONNECT_RATE (vehicles/s over all simulator
# processes; default 0, all at once), MQTT_FLEET_PER_SIM (vehicles per
# simulator process, default 10000: a process holds one socket per vehicle
# and the open-files limit is per process), MQTT_FLEET_VARIANTS
# ("embedded mosquitto"), MQTT_FLEET_LOCK (the lock taken while a broker is
# measured, /tmp/ota-bench.lock: other benchmarks take it too).
source "$(dirname "$0")/lib.sh"
# A broker holds one descriptor per vehicle. `ota serve` raises its limit
# on open files to the hard limit and keeps 512 of them for everything else
# (the database, files) plus the HTTP listener's connection cap, which this
# script sets to 64 (only the CLI speaks HTTP here), so its embedded broker
# takes at most the hard limit less 576 vehicles and refuses the others ("server
# unavailable"; they retry). Where that is below 20,000 (the hard limit is
# 20,000 on the project's standard box, and only a privileged process may
# raise it), the default fleet is the largest that fits, and the script
# says so.
FILES=$(ulimit -Hn)
DEFAULT_N=20000
if [ "$FILES" != unlimited ] && [ "$FILES" -lt $((DEFAULT_N + 576)) ]; then
  DEFAULT_N=$(( (FILES - 576) / 100 * 100 ))
  echo "note: a process may hold at most $FILES open files here (ulimit -Hn): $DEFAULT_N vehicles by default" >&2
fi
N=${1:-$DEFAULT_N}
if [ "$FILES" != unlimited ] && [ "$N" -gt $((FILES - 512)) ]; then
  echo "note: the embedded broker will refuse $((N - FILES + 512)) of the $N vehicles (open files: $FILES, 512 kept for the rest of the server)" >&2
fi
RATE=${MQTT_FLEET_CONNECT_RATE:-0}
PER_SIM=${MQTT_FLEET_PER_SIM:-10000}
VARIANTS=${MQTT_FLEET_VARIANTS:-embedded mosquitto}
HTTP_PORT=17080 GRPC_PORT=17051 EMBEDDED_PORT=17883 MOSQUITTO_PORT=17884
# The vehicles reach the broker on four loopback addresses, a quarter on
# each. On one address the kernel's ephemeral-port search for connect()
# slows to a crawl past ~14,000 connections to the same address and port
# (it tries the even ports of 32768-60999 first and checks every one in
# use): that is the load generator's limit, not the broker's.
ADDRS="127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4"
urls() { local a out=""; for a in $ADDRS; do out+="${out:+,}mqtt://$a:$1"; done; echo "$out"; }
PREFIX="$OUT/mqtt_fleet"
command -v mosquitto >/dev/null || { echo "mosquitto is missing: apt-get install mosquitto" >&2; exit 1; }
for p in $HTTP_PORT $GRPC_PORT $EMBEDDED_PORT $MOSQUITTO_PORT; do
  if ss -ltnH "sport = :$p" | grep -q .; then echo "port $p is taken" >&2; exit 1; fi
done
build
# Every process started from here (server, Mosquitto, simulators) may hold
# as many sockets as the hard limit allows.
ulimit -n "$(ulimit -Hn)"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; open files per process: $(ulimit -n)"
echo "workload: $N MQTT vehicles in $(( (N + PER_SIM - 1) / PER_SIM )) simulator processes, connecting at ${RATE}/s (0 = at once); one campaign over all of them"

SERVER_PID="" MOSQUITTO_PID="" SIM_PIDS=()
cleanup() {
  for p in "${SIM_PIDS[@]}" $SERVER_PID $MOSQUITTO_PID; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

wait_port() {
  for _ in $(seq 1 100); do
    ss -ltnH "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}

start_mosquitto() {
  cat >"$PREFIX-mosquitto.conf" <<CONF
# Written by bench/mqtt_fleet.sh. Anonymous access: the vehicles' username
# and token are not checked here (the embedded broker checks them).
$(for a in $ADDRS; do echo "listener $MOSQUITTO_PORT $a"; done)
allow_anonymous true
persistence false
max_keepalive 600
sys_interval 1
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages false
CONF
  mosquitto -c "$PREFIX-mosquitto.conf" 2>"$PREFIX-mosquitto.log" 9>&- &
  MOSQUITTO_PID=$!
  wait_port $MOSQUITTO_PORT
}

# start_ota LABEL DATA_DIR -> SERVER_PID
start_ota() {
  local env=(OTA_DATA_DIR="$2" OTA_HTTP_ADDR=127.0.0.1:$HTTP_PORT OTA_GRPC_ADDR=127.0.0.1:$GRPC_PORT OTA_LOG=warn OTA_HTTP__MAX_CONNECTIONS=64)
  if [ "$1" = mosquitto ]; then
    env+=(OTA_MQTT_URL=mqtt://127.0.0.1:$MOSQUITTO_PORT)
  else
    # All addresses: the vehicles come to four loopback addresses (see
    # ADDRS). The broker still wants a vehicle token for every connection.
    env+=(OTA_MQTT_LISTEN=0.0.0.0:$EMBEDDED_PORT)
  fi
  env "${env[@]}" "$OTA" serve >"$PREFIX-$1-server.log" 2>&1 9>&- &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs http://127.0.0.1:$HTTP_PORT/healthz >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start; see $PREFIX-$1-server.log" >&2; return 1
}

ota_cli() { OTA_SERVER=http://127.0.0.1:$HTTP_PORT OTA_DATA_DIR="$DATA_DIR" "$OTA" "$@"; }

# Established connections on the broker's port, the adapter's own included
# (asking the broker itself would take one more connection, which a broker
# at its open-files limit cannot accept).
broker_connections() {
  local port=$EMBEDDED_PORT
  [ "$1" = mosquitto ] && port=$MOSQUITTO_PORT
  ss -tnH state established "( sport = :$port )" | wc -l
}

run_variant() {
  local label=$1 url sims=() i first count
  DATA_DIR=$(mktemp -d)
  rm -f "$PREFIX-$label"-sim*
  if [ "$label" = mosquitto ]; then
    start_mosquitto
    url=$(urls $MOSQUITTO_PORT)
  else
    url=$(urls $EMBEDDED_PORT)
  fi
  start_ota "$label" "$DATA_DIR"
  head -c 4096 /dev/urandom >"$DATA_DIR/bms-2.3.1.bin"
  ota_cli packages add --name bms-fw --version 2.3.1 --ecu BMS --file "$DATA_DIR/bms-2.3.1.bin" --output json >/dev/null
  cat >"$PREFIX-campaign.yaml" <<'YAML'
# bench/mqtt_fleet.sh: every simulated vehicle, one wave, a rate that does
# not bind (100,000 actions/s).
name: mqtt-fleet-bench
target: '"simulated" in vehicle.tags && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0'
rules:
  - install: {package: bms-fw, version: 2.3.1, ecu: BMS}
rollout:
  waves: [100]
  wave_soak: 0s
  max_per_minute: 6000000
YAML

  # The simulators import their vehicles, issue their credentials, then
  # connect (paced) and wait for actions.
  local procs=$(( (N + PER_SIM - 1) / PER_SIM ))
  local rate=$(( RATE / procs ))
  SIM_PIDS=()
  for ((i = 0; i < procs; i++)); do
    first=$(( i * PER_SIM )); count=$(( N - first < PER_SIM ? N - first : PER_SIM ))
    ota_cli simulate --protocol mqtt --mqtt-url "$url" --vehicles "$count" --first "$first" \
      --receive-only --connect-rate "$rate" --until-idle 30s --duration 15m --output json \
      --ready-file "$PREFIX-$label-sim$i.ready" --notifications "$PREFIX-$label-sim$i.ndjson" \
      >"$PREFIX-$label-sim$i.json" 2>"$PREFIX-$label-sim$i.err" 9>&- &
    SIM_PIDS+=($!)
    sims+=("$PREFIX-$label-sim$i")
  done
  local id approver
  id=$(ota_cli campaigns create -f "$PREFIX-campaign.yaml" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  approver=$(ota_cli tokens create --role approver --principal ann --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  ota_cli campaigns approve "$id" --token "$approver" --output json >/dev/null

  local deadline=$((SECONDS + 900)) s ready
  while :; do
    ready=0
    for s in "${sims[@]}"; do [ -s "$s.ready" ] && ready=$((ready + 1)); done
    [ "$ready" = "$procs" ] && break
    for p in "${SIM_PIDS[@]}"; do
      if ! kill -0 "$p" 2>/dev/null; then echo "$label: a simulator stopped before its fleet was connected; see ${sims[*]/%/.err}" >&2; return 1; fi
    done
    if [ $SECONDS -ge $deadline ]; then echo "$label: the fleet did not connect within 15 min" >&2; return 1; fi
    sleep 0.5
  done
  sleep 2   # the last SUBACKs are in; let the broker settle
  local conns rss_connected mrss_connected="" load
  conns=$(broker_connections "$label")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  rss_connected=$(rss_mib "$SERVER_PID")
  [ -n "$MOSQUITTO_PID" ] && mrss_connected=$(rss_mib "$MOSQUITTO_PID")

  ota_cli campaigns launch "$id" --output json >/dev/null
  for p in "${SIM_PIDS[@]}"; do wait "$p" || true; done
  SIM_PIDS=()
  ota_cli campaigns get "$id" --output json >"$PREFIX-$label-campaign.json"
  ota_cli campaigns report "$id" --format csv >"$PREFIX-$label-report.csv"
  local stats peak mpeak=""
  stats=$(python3 "$ROOT/bench/mqtt_fleet_stats.py" "$PREFIX-$label-campaign.json" "$PREFIX-$label-report.csv" "$N" "${sims[@]/%/.ndjson}")
  peak=$(peak_rss_mib "$SERVER_PID")
  [ -n "$MOSQUITTO_PID" ] && mpeak=$(peak_rss_mib "$MOSQUITTO_PID")
  python3 - "$label" "$N" "$conns" "$rss_connected" "$peak" "${mrss_connected:--}" "${mpeak:--}" "$stats" "$load" "${sims[@]}" >"$PREFIX-$label.json" <<'PY'
import json, sys
from datetime import datetime
label, n, conns, rss_conn, peak, mrss_conn, mpeak, stats, load = sys.argv[1:10]
sims = sys.argv[10:]
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
ready = [json.load(open(s + ".ready")) for s in sims]
summaries = [json.load(open(s + ".json")) for s in sims]
out = {
    "variant": label, "vehicles": int(n),
    "connected": sum(r["connected"] for r in ready),
    "gave_up": sum(r["stopped"] for r in ready),
    "reconnects": sum(s["reconnects"] for s in summaries),
    "broker_connections": int(conns),
    "load_average_at_launch": load,
    # First connect attempt of any simulator to the last SUBACK of all.
    "connect_seconds": max(ts(r["ready_at"]) for r in ready) - min(ts(r["started_at"]) for r in ready),
    "simulator_errors": sum(s["errors"] for s in summaries),
    "server_rss_connected_mib": int(rss_conn), "server_peak_rss_mib": int(peak),
    "mosquitto_rss_connected_mib": None if mrss_conn == "-" else int(mrss_conn),
    "mosquitto_peak_rss_mib": None if mpeak == "-" else int(mpeak),
    **json.loads(stats),
}
print(json.dumps(out, indent=1))
PY
  kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  if [ -n "$MOSQUITTO_PID" ]; then kill -TERM "$MOSQUITTO_PID"; wait "$MOSQUITTO_PID" 2>/dev/null || true; MOSQUITTO_PID=""; fi
  rm -rf "$DATA_DIR"
}

for v in $VARIANTS; do
  echo; echo "== $v: waiting for the benchmark lock"
  exec 9>"${MQTT_FLEET_LOCK:-/tmp/ota-bench.lock}"
  flock 9
  echo "== $v"
  run_variant "$v"
  flock -u 9
  exec 9>&-
  python3 "$ROOT/bench/mqtt_fleet_summary.py" "$PREFIX-$v.json"
done

echo; echo "== summary"
python3 "$ROOT/bench/mqtt_fleet_summary.py" $(for v in $VARIANTS; do echo "$PREFIX-$v.json"; done)
