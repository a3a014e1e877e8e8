#!/usr/bin/env python3
"""Prints the results of bench/mqtt_fleet.sh, one column per broker.

  mqtt_fleet_summary.py bench/out/mqtt_fleet-embedded.json [bench/out/mqtt_fleet-mosquitto.json]
"""
import json
import sys


def ms(d, q):
    return "-" if not d else f"{d[q] / 1000:.2f} s"


def rows(r):
    n = r["vehicles"]
    launch, staging = r["from_launch_ms"], r["from_staging_ms"]
    staged = r["staged_after_launch_ms"]
    mosq = r["mosquitto_peak_rss_mib"]
    return [
        ("connected (subscribed)", f"{r['connected']:,} / {n:,}"),
        ("vehicles that gave up connecting", f"{r['gave_up']:,}"),
        ("failed connects retried", f"{r['reconnects']:,}"),
        ("connections at the broker (+1 adapter)", f"{r['broker_connections']:,}"),
        ("connect time, all of them", f"{r['connect_seconds']:.1f} s"),
        ("actions staged after launch", "-" if not staged else
            f"{staged['first'] / 1000:.2f} .. {staged['last'] / 1000:.2f} s"),
        ("notified", f"{r['notified']:,}"),
        ("notified within 10 s of launch", f"{r['within_10s_of_launch']:,}"),
        ("notified within 10 s of staging", f"{r['within_10s_of_staging']:,}"),
        ("latency from launch p50 / p99 / max",
            f"{ms(launch, 'p50')} / {ms(launch, 'p99')} / {ms(launch, 'max')}"),
        ("latency from staging p50 / p99 / max",
            f"{ms(staging, 'p50')} / {ms(staging, 'p99')} / {ms(staging, 'max')}"),
        ("server RSS connected / peak",
            f"{r['server_rss_connected_mib']} / {r['server_peak_rss_mib']} MiB"),
        ("Mosquitto RSS connected / peak", "-" if mosq is None else
            f"{r['mosquitto_rss_connected_mib']} / {mosq} MiB"),
        ("simulator errors", str(r["simulator_errors"])),
        ("load average at launch (1/5/15 min)", r["load_average_at_launch"]),
    ]


def main():
    results = [json.load(open(p)) for p in sys.argv[1:]]
    table = [rows(r) for r in results]
    header = ["", *(r["variant"] for r in results)]
    lines = [header] + [[table[0][i][0], *(t[i][1] for t in table)] for i in range(len(table[0]))]
    widths = [max(len(l[c]) for l in lines) for c in range(len(header))]
    for l in lines:
        print("  ".join(v.ljust(w) for v, w in zip(l, widths)).rstrip())


if __name__ == "__main__":
    main()
