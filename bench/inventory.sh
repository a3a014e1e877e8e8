#!/usr/bin/env bash
# Inventory benchmarks against the real binary, in one invocation so the
# ratios compare runs on the same machine at the same moment:
#
#   1. import N vehicles (NDJSON, 3 ECUs each) through `ota vehicles import`
#      into PostgreSQL and into SQLite: wall time, vehicles/s, peak server RSS;
#      reference: psql \copy of the same file into a one-column table;
#   2. GET /api/v1/vehicles/{vin} over HTTP with wrk (a second process) on
#      random VINs of the N: requests/s, p50, p99; reference: wrk on /healthz
#      of the same server (no database, no auth);
#   3. `ota rules preview` of a realistic target over the N vehicles on
#      PostgreSQL: wall time, best of 3.
#
#   bench/inventory.sh [N]     (default 1000000; results in bench/out/)
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
build
FLEET="$OUT/fleet-$N.ndjson"
[ -s "$FLEET" ] || python3 "$ROOT/bench/gen_fleet.py" "$N" >"$FLEET"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; fleet: $N vehicles, $(du -h "$FLEET" | cut -f1)"

ref_url=$(fresh_pg_db ref)
psql -q "$ref_url" -c "CREATE TABLE raw (line text)"
t0=$(date +%s.%N)
psql -q "$ref_url" -c "\\copy raw FROM '$FLEET' WITH (FORMAT text, DELIMITER E'\\x01')"
ref=$(echo "$(date +%s.%N) - $t0" | bc)
printf '\n== import\nreference  psql \\copy of the file: %.1f s\n' "$ref"

import() {
  local label=$1 dir=$2 t0 secs rss
  t0=$(date +%s.%N)
  OTA_SERVER=http://127.0.0.1:18080 OTA_DATA_DIR="$dir" "$OTA" vehicles import "$FLEET" \
    --source manufacturing --output json >"$OUT/import-$label.json"
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  rss=$(peak_rss_mib "$SERVER_PID")
  printf '%-10s %.1f s  %7.0f vehicles/s  peak server RSS %s MiB  %.1fx the reference  %s\n' \
    "$label" "$secs" "$(echo "$N / $secs" | bc -l)" "$rss" "$(echo "$secs / $ref" | bc -l)" \
    "$(tr -d '\n ' <"$OUT/import-$label.json" | cut -c1-70)"
}

get_bench() {
  local label=$1 dir=$2 token
  token=$(cat "$dir/admin.token")
  cat >"$OUT/get.lua" <<LUA
math.randomseed(7)
request = function()
  return wrk.format("GET", string.format("/api/v1/vehicles/WVWZZZE1Z%08d", math.random(0, $N - 1)), {["Authorization"] = "Bearer $token"})
end
LUA
  # Latency at moderate load (4 connections) and at saturation (16): on 2
  # cores wrk competes with the server, so saturation measures queueing.
  for c in 4 16; do
    printf '%-10s c=%-3s' "healthz" "$c"
    wrk -t1 -c"$c" -d10s --latency http://127.0.0.1:18080/healthz | awk '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} END {printf "%8.0f req/s  p50 %s  p99 %s   (reference)\n", r, p50, p99}'
    printf '%-10s c=%-3s' "$label" "$c"
    wrk -t1 -c"$c" -d20s --latency -s "$OUT/get.lua" http://127.0.0.1:18080 | awk '/Requests\/sec/ {r=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {printf "%8.0f req/s  p50 %s  p99 %s  non-2xx %s\n", r, p50, p99, bad+0}'
  done
}

preview_bench() {
  local dir=$1 best=999999 t0 secs
  for _ in 1 2 3; do
    t0=$(date +%s.%N)
    OTA_SERVER=http://127.0.0.1:18080 OTA_DATA_DIR="$dir" "$OTA" rules preview --output json \
      'vehicle.region == "EU" && version_cmp(vehicle.ecus.BMS.sw, "2.3.1") < 0 && !("test-fleet" in vehicle.tags)' >"$OUT/preview.json"
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    best=$(echo "if ($secs < $best) $secs else $best" | bc)
  done
  printf 'preview    %.1f s (best of 3)  %s\n' "$best" "$(python3 -c "import json;p=json.load(open('$OUT/preview.json'));print(f\"scanned {p['scanned']} matched {p['matched']} errors {p['errors']}\")")"
}

pg_dir=$(mktemp -d)
start_server "$pg_dir" "$(fresh_pg_db import)"
import postgres "$pg_dir"
echo; echo "== get by VIN over HTTP (1 wrk thread)"
get_bench postgres "$pg_dir"
echo; echo "== rule preview over the inventory (PostgreSQL)"
preview_bench "$pg_dir"
stop_server

sq_dir=$(mktemp -d)
start_server "$sq_dir" "sqlite://$sq_dir/ota.db"
echo; echo "== import"
import sqlite "$sq_dir"
echo; echo "== get by VIN over HTTP"
get_bench sqlite "$sq_dir"
stop_server
rm -rf "$pg_dir" "$sq_dir"
