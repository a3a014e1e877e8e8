#!/usr/bin/env bash
# The whole test suite, from a fresh clone: makes sure PostgreSQL, Redis and
# Mosquitto are running (starting them, or installing them with apt-get when
# they are missing), installs SWUpdate, Chromium with its WebDriver,
# Prometheus' promtool, cargo-nextest and the infra/ npm packages when
# needed, then runs the infra type check and tests, promtool on the
# Prometheus config and alert rules of dashboards/ (their syntax and their
# unit tests), the lint gates (rustfmt, clippy) and every Rust test in the
# workspace.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p ota-auth     # extra arguments go to cargo nextest run
#
# Tests that need a service fail loudly when it is missing; they never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target dir shared by every clone on this machine, so CI reuses builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ota-target}"
export OTA_TEST_DATABASE_URL="${OTA_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export OTA_TEST_REDIS_URL="${OTA_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export OTA_TEST_MQTT_URL="${OTA_TEST_MQTT_URL:-mqtt://127.0.0.1:1883}"

log() { printf '[test.sh] %s\n' "$*" >&2; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then sudo_if_needed apt-get update -qq; apt_updated=1; fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  log "$2 did not come up on port $1"; return 1
}

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
    local conf; conf=$(ls -d /etc/postgresql/*/main | head -1)
    # Tests connect as postgres over TCP without a password.
    sudo_if_needed sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
  fi
  log "starting PostgreSQL"
  local version; version=$(ls /etc/postgresql | head -1)
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL
}

ensure_redis() {
  if port_open 6379; then return; fi
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  mkdir -p /tmp/ota-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/ota-redis --logfile /tmp/ota-redis/redis.log
  wait_port 6379 Redis
}

ensure_mosquitto() {
  if port_open 1883; then return; fi
  command -v mosquitto >/dev/null || { log "installing Mosquitto"; apt_install mosquitto; }
  log "starting Mosquitto"
  if [ -f /etc/mosquitto/mosquitto.conf ]; then
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    mosquitto -d -p 1883
  fi
  wait_port 1883 Mosquitto
}

ensure_node() {
  command -v npm >/dev/null && return
  log "installing Node.js"
  apt_install nodejs npm
}

# The real device client of services/ota/tests/swupdate.rs, and the openssl
# it signs its update with.
ensure_device_clients() {
  command -v swupdate >/dev/null && command -v openssl >/dev/null && return
  log "installing swupdate and openssl"
  apt_install swupdate openssl
}

# The headless browser the dashboard's page tests drive
# (services/ota/tests/dashboard.rs).
ensure_browser() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && return
  log "installing chromium and chromium-driver"
  apt_install chromium chromium-driver
}

# promtool checks dashboards/prometheus.yml and alerts.yml, and runs the
# alert rules' unit tests (dashboards/alerts_test.yml).
ensure_promtool() {
  command -v promtool >/dev/null && return
  log "installing prometheus (promtool)"
  apt_install prometheus
}

ensure_lint_tools() {
  cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 && return
  log "installing rustfmt and clippy"
  rustup component add rustfmt clippy
}

ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
}

ensure_postgres
ensure_redis
ensure_mosquitto
ensure_node
ensure_device_clients
ensure_browser
ensure_promtool
ensure_lint_tools
ensure_nextest

log "infra: npm ci, tsc --noEmit, npm test"
(cd infra && npm ci --no-audit --no-fund --loglevel=error && npm run --silent typecheck && npm test --silent)

log "dashboards: promtool check config, check rules, test rules"
promtool check config dashboards/prometheus.yml
promtool check rules dashboards/alerts.yml
promtool test rules dashboards/alerts_test.yml

# Lint gates: a red lint is a red CI. Clippy builds check metadata only,
# which the test build below reuses little of, but it is what catches
# what rustc lets through.
log "lint: cargo fmt --check"
cargo fmt --all -- --check
log "lint: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo nextest (target dir $CARGO_TARGET_DIR)"
cargo nextest run --workspace --no-fail-fast --locked "$@"
