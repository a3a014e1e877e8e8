#!/usr/bin/env python3
"""The vehicles bench/http_poll.sh polls as: a sample of the staged fleet.

    http_poll_sample.py issue BASE ADMIN_TOKEN N SAMPLE OUT
        issues a credential for SAMPLE random VINs among the N of
        bench/gen_fleet.py (seeded, so runs poll the same vehicles), 32 at a
        time over the management API; writes "VIN TOKEN" lines to OUT.
    http_poll_sample.py etags BASE CREDS OUT DOC
        fetches each vehicle's document once with its own token; writes
        "VIN TOKEN ETAG" lines to OUT and a document of the median size to
        DOC (the static file nginx serves as the reference). Prints the
        median size. Fails unless every vehicle has a staged action.

Standard library only, one keep-alive connection per worker thread."""
import http.client
import json
import random
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

WORKERS = 32
local = threading.local()


def conn(base):
    c = getattr(local, "conn", None)
    if c is None:
        u = urlsplit(base)
        c = local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    return c


def call(base, method, path, token, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    for attempt in range(3):
        try:
            c = conn(base)
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        except (http.client.HTTPException, OSError):
            local.conn = None
            if attempt == 2:
                raise


def issue(base, admin, n, sample, out):
    vins = [f"WVWZZZE1Z{i:08d}" for i in random.Random(7).sample(range(n), sample)]

    def one(vin):
        status, _, body = call(base, "POST", f"/api/v1/vehicles/{vin}/credentials", admin, b"{}")
        if status != 201 and status != 200:
            raise SystemExit(f"issuing the credential of {vin}: HTTP {status}: {body[:200]!r}")
        return vin, json.loads(body)["token"]

    with ThreadPoolExecutor(WORKERS) as pool, open(out, "w") as f:
        for vin, token in pool.map(one, vins):
            f.write(f"{vin} {token}\n")


def etags(base, creds, out, doc):
    pairs = [line.split() for line in open(creds)]

    def one(pair):
        vin, token = pair
        status, headers, body = call(base, "GET", f"/v1/vehicles/{vin}/actions", token)
        if status != 200:
            raise SystemExit(f"polling {vin}: HTTP {status}: {body[:200]!r}")
        if not json.loads(body)["actions"]:
            raise SystemExit(f"{vin} has no staged action: is the campaign staged?")
        etag = {k.lower(): v for k, v in headers.items()}["etag"].strip('"')
        return vin, token, etag, body

    with ThreadPoolExecutor(WORKERS) as pool:
        polled = list(pool.map(one, pairs))
    with open(out, "w") as f:
        for vin, token, etag, _ in polled:
            f.write(f"{vin} {token} {etag}\n")
    median = int(statistics.median_low(len(b) for *_, b in polled))
    with open(doc, "wb") as f:
        f.write(next(b for *_, b in polled if len(b) == median))
    print(median)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "issue":
        issue(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif cmd == "etags":
        etags(*args)
    else:
        raise SystemExit(__doc__)
