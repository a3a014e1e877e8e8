#!/usr/bin/env bash
# A large launch and the reconciles around it (issue 19, item 4): the test
# services/ota-staging/tests/launch_reconcile.rs on a larger fleet, in a
# release build. On SQLite (in-process bus and store, one worker) and on
# PostgreSQL with Redis (two relays, two staging workers), it launches a
# campaign over N vehicles with the real background targeting, rollout
# loop, outbox relay and staging workers, runs reconciles back to back
# while the launch goes on and once after it settled, and fails when any
# of them repaired a document. Prints the times and what each reconcile
# repaired.
#
#   bench/launch_reconcile.sh [N]      (default 1000000)
#
# Needs PostgreSQL and Redis as the tests do (OTA_TEST_DATABASE_URL,
# OTA_TEST_REDIS_URL; Redis database 15 is emptied).
#
# Last run (2 cores): at 200,000 both pass (settled in 41 s on PostgreSQL,
# 58 s on SQLite, nothing repaired). At 1,000,000 PostgreSQL passes (224 s,
# 739 reconciles during the launch, nothing repaired); SQLite does not
# settle: once the first wave (5 %) is out, every rollout tick's release
# and its "waiting" UPDATE each scan the million pending actions for 2-4 s
# under the writer lock, and the targeting scan's inserts, queued behind
# them, had not finished after 18 minutes.
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; fleet: $N vehicles"
cd "$ROOT"
OTA_LAUNCH_RECONCILE_FLEET="$N" cargo test --release -p ota-staging --test launch_reconcile \
  -- --nocapture --test-threads=1 2>&1 | tee "$OUT/launch_reconcile-$N.log" \
  | grep -E 'vehicles imported|panicked|test result'
