#!/usr/bin/env bash
# Import N vehicles (NDJSON, 3 ECUs each) through the CLI into a running
# `ota serve`, on PostgreSQL and on SQLite. Reports wall time, vehicles/s and
# the server's peak RSS; the reference is PostgreSQL's own COPY of the same
# file into a one-column table, timed in the same run.
#
#   bench/import.sh [N]        (default 1000000)
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
build
FLEET="$OUT/fleet-$N.ndjson"
[ -s "$FLEET" ] || python3 "$ROOT/bench/gen_fleet.py" "$N" >"$FLEET"
echo "fleet: $N vehicles, $(du -h "$FLEET" | cut -f1)"

# Reference: raw COPY of the same bytes (no parsing, no merging, no indexes).
ref_url=$(fresh_pg_db ref)
psql -q "$ref_url" -c "CREATE TABLE raw (line text)"
t0=$(date +%s.%N)
psql -q "$ref_url" -c "\\copy raw FROM '$FLEET' WITH (FORMAT text, DELIMITER E'\\x01')"
t1=$(date +%s.%N)
ref=$(echo "$t1 - $t0" | bc)
printf 'reference: psql \\copy of the file: %.1f s\n' "$ref"

run() {
  local label=$1 url=$2 dir
  dir=$(mktemp -d)
  start_server "$dir" "$url"
  local t0 t1
  t0=$(date +%s.%N)
  OTA_SERVER=http://127.0.0.1:18080 OTA_DATA_DIR="$dir" "$OTA" vehicles import "$FLEET" --source manufacturing --output json >"$OUT/import-$label.json"
  t1=$(date +%s.%N)
  local rss secs
  rss=$(peak_rss_mib "$SERVER_PID")
  secs=$(echo "$t1 - $t0" | bc)
  stop_server
  printf '%-9s %.1f s  %8.0f vehicles/s  peak server RSS %s MiB  (%.1fx the COPY reference)  %s\n' \
    "$label" "$secs" "$(echo "$N / $secs" | bc -l)" "$rss" "$(echo "$secs / $ref" | bc -l)" "$(tr -d '\n ' <"$OUT/import-$label.json" | cut -c1-80)"
  rm -rf "$dir"
}

run postgres "$(fresh_pg_db import)"
run sqlite "sqlite://$(mktemp -d)/ota.db"
