#!/usr/bin/env python3
"""Status reports for bench/dashboard_pages.sh: every vehicle of CREDS
("VIN TOKEN" lines) reads its staged action and reports it finished over
the HTTP vehicle API: 80 % succeeded, 15 % failed with one of three
reasons, 5 % rejected. Prints the VINs that failed.

    dashboard_reports.py BASE CREDS

Standard library only, one keep-alive connection per worker thread."""
import http.client
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

WORKERS = 16
REASONS = ["E42 checksum mismatch", "E17 download timed out", "battery too low"]
local = threading.local()
base = sys.argv[1]


def conn():
    c = getattr(local, "conn", None)
    if c is None:
        u = urlsplit(base)
        c = local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    return c


def call(method, path, token, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    c = conn()
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None


def report(i, vin, token):
    doc = call("GET", f"/v1/vehicles/{vin}/actions", token)
    action = doc["actions"][0]["action_id"]
    k = i % 20
    if k < 16:
        state, message = "succeeded", ""
    elif k < 19:
        state, message = "failed", REASONS[i % 3]
    else:
        state, message = "rejected", "driver declined"
    call("POST", f"/v1/vehicles/{vin}/actions/{action}/status", token,
         {"state": state, "progress": 100, "seq": 1, "message": message})
    return vin if state == "failed" else None


with open(sys.argv[2]) as f:
    creds = [line.split() for line in f if line.strip()]
with ThreadPoolExecutor(WORKERS) as pool:
    failed = [v for v in pool.map(lambda a: report(a[0], *a[1]), enumerate(creds)) if v]
print("\n".join(failed))
