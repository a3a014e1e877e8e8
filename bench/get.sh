#!/usr/bin/env bash
# GET /api/v1/vehicles/{vin} over HTTP with wrk (a second process), random
# VINs out of N imported vehicles, on PostgreSQL (default) or SQLite.
# Reference in the same run: wrk against /healthz of the same server (no
# database, no auth): the ceiling of the HTTP stack on this machine.
#
#   bench/get.sh [N] [postgres|sqlite]   (default 1000000 postgres)
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
BACKEND=${2:-postgres}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
build
FLEET="$OUT/fleet-$N.ndjson"
[ -s "$FLEET" ] || python3 "$ROOT/bench/gen_fleet.py" "$N" >"$FLEET"
dir=$(mktemp -d)
case $BACKEND in
  postgres) url=$(fresh_pg_db get) ;;
  sqlite) url="sqlite://$dir/ota.db" ;;
esac
start_server "$dir" "$url"
trap stop_server EXIT
OTA_SERVER=http://127.0.0.1:18080 OTA_DATA_DIR="$dir" "$OTA" vehicles import "$FLEET" --output json >/dev/null
TOKEN=$(cat "$dir/admin.token")
cat >"$OUT/get.lua" <<LUA
math.randomseed(7)
request = function()
  return wrk.format("GET", string.format("/api/v1/vehicles/WVWZZZE1Z%08d", math.random(0, $N - 1)), {["Authorization"] = "Bearer $TOKEN"})
end
LUA
echo "== reference: /healthz"
wrk -t1 -c16 -d15s --latency http://127.0.0.1:18080/healthz | grep -E "Requests/sec|50%|99%"
echo "== GET /api/v1/vehicles/{vin} ($N vehicles, $BACKEND)"
wrk -t1 -c16 -d30s --latency -s "$OUT/get.lua" http://127.0.0.1:18080 | grep -E "Requests/sec|50%|99%|Non-2xx"
