# Shared by the bench scripts: build, start and stop the real binary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ota-target}"
OTA="$CARGO_TARGET_DIR/release/ota"
OUT="$ROOT/bench/out"
mkdir -p "$OUT"
PG_ADMIN="${OTA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"

build() { (cd "$ROOT" && cargo build --release -p ota --locked -q); }

# start_server DATA_DIR DATABASE_URL -> sets SERVER_PID; HTTP on 127.0.0.1:18080
start_server() {
  OTA_DATA_DIR="$1" OTA_DATABASE_URL="$2" OTA_HTTP_ADDR=127.0.0.1:18080 OTA_GRPC_ADDR=127.0.0.1:18051 \
    OTA_LOG=warn "$OTA" serve >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs http://127.0.0.1:18080/healthz >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start; see $OUT/server.log" >&2; return 1
}

stop_server() { kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

# Peak resident set of a live process, in MiB.
peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

fresh_pg_db() {
  local name="ota_bench_$1"
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name"
  echo "$PG_BASE/$name"
}
