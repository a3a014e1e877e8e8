#!/usr/bin/env python3
"""Notification latency of one campaign, for bench/mqtt_fleet.sh.

Joins what the simulated vehicles saw (`ota simulate --notifications FILE`,
one file per simulator process) with the campaign's launch time and, per
vehicle, the time its action was staged (the `updated_at` of the campaign
report's CSV: with `--receive-only` nobody reports, so the row still shows
the moment the rollout handed the action to staging).

  mqtt_fleet_stats.py CAMPAIGN_JSON REPORT_CSV EXPECTED NOTIFICATIONS...

Prints one JSON object.
"""
import csv
import json
import math
import sys
from datetime import datetime


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000.0


def quantiles(ms):
    if not ms:
        return None
    ms = sorted(ms)

    def q(p):
        return ms[min(len(ms), max(1, math.ceil(p * len(ms)))) - 1]

    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": ms[-1]}


def main():
    campaign = json.load(open(sys.argv[1]))
    expected = int(sys.argv[3])
    launched = ts(campaign["launched_at"])
    staged = {}
    states = {}
    with open(sys.argv[2], newline="") as f:
        for row in csv.DictReader(f):
            states[row["state"]] = states.get(row["state"], 0) + 1
            if row["updated_at"]:
                staged[row["vin"]] = ts(row["updated_at"])
    received = {}
    for path in sys.argv[4:]:
        with open(path) as f:
            for line in f:
                n = json.loads(line)
                if n["campaign_id"] != campaign["id"]:
                    continue
                at = ts(n["received_at"])
                received[n["vin"]] = min(at, received.get(n["vin"], at))
    from_launch = [at - launched for at in received.values()]
    from_staging = [at - staged[v] for v, at in received.items() if v in staged]
    staged_after = [t - launched for t in staged.values()]
    out = {
        "expected": expected,
        "actions": sum(states.values()),
        "states": states,
        "notified": len(received),
        "within_10s_of_launch": sum(1 for ms in from_launch if ms <= 10_000),
        "within_10s_of_staging": sum(1 for ms in from_staging if ms <= 10_000),
        "from_launch_ms": quantiles(from_launch),
        "from_staging_ms": quantiles(from_staging),
        "staged_after_launch_ms": {"first": min(staged_after), "last": max(staged_after)}
        if staged_after
        else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
