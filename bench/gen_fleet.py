#!/usr/bin/env python3
"""Writes a synthetic fleet as NDJSON: N vehicles with 3 ECUs each.

    bench/gen_fleet.py 1000000 > fleet.ndjson

Deterministic for a given N, so runs are comparable. VINs are
WVWZZZE1Z + 8 digits (valid ISO 3779 characters)."""
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
rng = random.Random(42)
models = [("ID.3", "MEB"), ("ID.4", "MEB"), ("ID.7", "MEB"), ("Golf", "MQB"), ("Passat", "MQB"), ("Q4", "MEB")]
gateways = ["hcp3", "icas1", "icas3"]
regions = [("EU", ["DE", "FR", "IT", "ES", "NL"]), ("NA", ["US", "CA"]), ("CN", ["CN"])]
out = sys.stdout
for i in range(n):
    model, platform = models[rng.randrange(len(models))]
    region, countries = regions[rng.randrange(len(regions))]
    rec = {
        "vin": f"WVWZZZE1Z{i:08d}",
        "model": model,
        "model_year": 2019 + rng.randrange(7),
        "platform": platform,
        "gateway": gateways[rng.randrange(3)],
        "protocol": "mqtt" if rng.random() < 0.6 else "http",
        "region": region,
        "country": countries[rng.randrange(len(countries))],
        "tags": ["test-fleet"] if rng.random() < 0.01 else [],
        "ecus": {
            "BMS": {"hw": f"H{rng.randrange(1, 4)}", "sw": f"2.{rng.randrange(4)}.{rng.randrange(10)}"},
            "HU": {"hw": "MIB3", "sw": f"5.{rng.randrange(3)}.0"},
            "GW": {"hw": "G1", "sw": f"1.{rng.randrange(5)}.2"},
        },
    }
    out.write(json.dumps(rec, separators=(",", ":")))
    out.write("\n")
