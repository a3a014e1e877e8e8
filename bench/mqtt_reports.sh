#!/usr/bin/env bash
# MQTT report throughput of one `ota serve` (the mqtt-adapter role's work:
# QoS 1 reports recorded by the platform on PostgreSQL), in one invocation
# so the ratios compare runs on the same machine at the same moment:
#
#   reference  the load generator against a bare Mosquitto (no subscriber):
#              the ceiling of generator + broker on this machine;
#   embedded   `ota serve` with its embedded broker: each PUBACK is sent only
#              after the report is recorded, so acked/s is recorded/s;
#   external   `ota serve` behind a Mosquitto (shared subscription): the
#              broker acks at once; the adapter's rate is read from its
#              ota_mqtt_reports_total counter, from the load's start until
#              it has drained.
#
# Each of the two runs status reports ("downloading" with progress, the bulk
# of a wave's traffic; every vehicle first reads its action from its
# retained document) and inventory reports that change an attribute (each
# one restages the vehicle).
#
#   bench/mqtt_reports.sh [VEHICLES] [SECONDS]   (default 1000 vehicles, 15 s)
source "$(dirname "$0")/lib.sh"
VEHICLES=${1:-1000}
SECONDS_LOAD=${2:-15}
HTTP=127.0.0.1:19180
BROKER_PORT=19184
EMBEDDED_PORT=19183
command -v mosquitto >/dev/null || { echo "mosquitto is missing: apt-get install mosquitto" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true
build
(cd "$ROOT" && cargo build --release -p ota-mqtt-adapter --example report_load --locked -q)
LOAD="$CARGO_TARGET_DIR/release/examples/report_load"
FLEET="$OUT/mqtt-reports-fleet.ndjson"
python3 "$ROOT/bench/gen_fleet.py" "$VEHICLES" >"$FLEET"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $VEHICLES vehicles, QoS 1, 10 in flight each, ${SECONDS_LOAD} s a run"

# The adapter's session must hold what it has not consumed yet: Mosquitto's
# defaults (1000 queued, 20 in flight) drop reports it already acknowledged
# to the vehicles as soon as the adapter falls behind.
MOSQ_CONF="$OUT/mqtt-reports-mosquitto.conf"
cat >"$MOSQ_CONF" <<EOF
listener $BROKER_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 1000
persistence false
EOF
MOSQ_PID=
start_mosquitto() {
  mosquitto -c "$MOSQ_CONF" >"$OUT/mqtt-reports-mosquitto.log" 2>&1 &
  MOSQ_PID=$!
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "mosquitto did not start" >&2; return 1
}
stop_mosquitto() { kill "$MOSQ_PID" 2>/dev/null || true; wait "$MOSQ_PID" 2>/dev/null || true; }

# serve LABEL [extra env...]: fresh data dir and PostgreSQL database, the
# fleet imported, a campaign launched for all of it, credentials issued.
serve() {
  local label=$1; shift
  local dir="$OUT/mqtt-reports-$label"
  rm -rf "$dir"
  env OTA_DATA_DIR="$dir" OTA_DATABASE_URL="$(fresh_pg_db "mqtt_$label" 2>/dev/null)" OTA_HTTP_ADDR=$HTTP \
    OTA_GRPC_ADDR=127.0.0.1:19151 OTA_MQTT_LISTEN=127.0.0.1:$EMBEDDED_PORT OTA_LOG=warn \
    OTA_ADAPTERS__REPORT_RATE_PER_S=1000000 OTA_ADAPTERS__REPORT_BURST=1000000 "$@" \
    "$OTA" serve >"$OUT/mqtt-reports-$label.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do curl -fs "http://$HTTP/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  export OTA_SERVER="http://$HTTP" OTA_TOKEN
  OTA_TOKEN=$(cat "$dir/admin.token")
  "$OTA" vehicles import "$FLEET" --output json >/dev/null
  python3 - "$FLEET" "$OTA_SERVER" "$OTA_TOKEN" "$OUT/mqtt-reports-credentials.txt" <<'EOF'
import json, sys, time, urllib.request
fleet, server, admin, creds = sys.argv[1:]
def call(method, path, body=None, token=admin, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server + path, data=data, method=method,
                                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
vins = [json.loads(l)["vin"] for l in open(fleet)]
call("POST", "/api/v1/packages", {"name": "bench-fw", "version": "9.0.0", "ecu": "BMS",
     "artifacts": [{"url": "https://cdn.example/bench.bin", "sha256": "b" * 64, "size": 7}]})
spec = "name: mqtt-reports\ntarget: 'true'\nrules:\n  - install: {package: bench-fw, version: 9.0.0, ecu: BMS}\nrollout:\n  max_per_minute: 1000000\n"
cid = call("POST", "/api/v1/campaigns", raw=spec.encode())["id"]
approver = call("POST", "/api/v1/tokens", {"principal": "bench-approver", "role": "approver"})["token"]
call("POST", f"/api/v1/campaigns/{cid}:approve", {}, token=approver)
call("POST", f"/api/v1/campaigns/{cid}:launch", {})
for _ in range(300):
    if call("GET", "/api/v1/staging/stats").get("staged_vehicles", 0) >= len(vins):
        break
    time.sleep(0.1)
with open(creds, "w") as f:
    for vin in vins:
        f.write(f"{vin} {call('POST', f'/api/v1/vehicles/{vin}/credentials')['token']}\n")
EOF
}

reports_total() {
  curl -fs "http://$HTTP/metrics" | awk -v k="$1" '$0 ~ "^ota_mqtt_reports_total\\{.*kind=\"" k "\"" {s += $NF} END {printf "%d", s}'
}

rate_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["per_second"])'; }
declare -A RESULT

# embedded KIND: the generator's acked/s is the recorded rate.
embedded() {
  local kind=$1 before after out
  before=$(reports_total "$kind")
  out=$(flock /tmp/ota-bench.lock "$LOAD" --url "mqtt://127.0.0.1:$EMBEDDED_PORT" --vehicles "$VEHICLES" \
        --seconds "$SECONDS_LOAD" --kind "$kind" --credentials "$OUT/mqtt-reports-credentials.txt" 2>/dev/null)
  after=$(reports_total "$kind")
  echo "$kind: $out; the adapter counted $((after - before)) recorded"
  RESULT[embedded_$kind]=$(echo "$out" | rate_of)
}

# external KIND: recorded reports over the time from the load's start until
# the counter stops moving.
external() {
  local kind=$1 before after t0 t1 last now out
  before=$(reports_total "$kind")
  exec 9>/tmp/ota-bench.lock; flock 9
  t0=$(date +%s.%N)
  out=$("$LOAD" --url "mqtt://127.0.0.1:$BROKER_PORT" --vehicles "$VEHICLES" --seconds "$SECONDS_LOAD" --kind "$kind" 2>/dev/null)
  last=-1
  while :; do
    now=$(reports_total "$kind")
    [ "$now" = "$last" ] && break
    last=$now; t1=$(date +%s.%N); sleep 0.5
  done
  flock -u 9
  after=$(reports_total "$kind")
  # The generator waits 2 s before publishing.
  local elapsed; elapsed=$(echo "$t1 - $t0 - 2" | bc -l)
  local rate; rate=$(echo "($after - $before) / $elapsed" | bc)
  echo "$kind: broker acked $out; the adapter recorded $((after - before)) in $(printf %.1f "$elapsed") s = $rate/s"
  RESULT[external_$kind]=$rate
}

start_mosquitto
echo; echo "== reference: bare Mosquitto"
ref=$(flock /tmp/ota-bench.lock "$LOAD" --url "mqtt://127.0.0.1:$BROKER_PORT" --vehicles "$VEHICLES" --seconds "$SECONDS_LOAD" 2>/dev/null)
echo "$ref"
RESULT[reference]=$(echo "$ref" | rate_of)

echo; echo "== embedded broker (PUBACK after recording)"
serve embedded
embedded status
embedded inventory
emb_rss=$(peak_rss_mib "$SERVER_PID")
stop_server
echo "peak RSS ${emb_rss} MiB"

echo; echo "== external Mosquitto (shared subscription; the adapter acks after recording)"
serve external OTA_MQTT_URL="mqtt://127.0.0.1:$BROKER_PORT"
external status
external inventory
ext_rss=$(peak_rss_mib "$SERVER_PID")
mosq_rss=$(peak_rss_mib "$MOSQ_PID")
stop_server
stop_mosquitto
echo "peak RSS ${ext_rss} MiB, Mosquitto ${mosq_rss} MiB"

echo; echo "== summary (recorded reports per second; ratio to the bare broker)"
ref=${RESULT[reference]}
printf '%-34s %8.0f/s\n' "reference: bare Mosquitto acks" "$ref"
for k in embedded_status embedded_inventory external_status external_inventory; do
  printf '%-34s %8.0f/s  %.3f x\n' "$k" "${RESULT[$k]}" "$(echo "${RESULT[$k]} / $ref" | bc -l)"
done
