#!/usr/bin/env python3
"""Fleet setup for bench/ddi_poll.sh, over each server's own HTTP APIs.

    ddi_poll_setup.py swu VERSION OUT.swu
        a SWUpdate image (cpio "newc" with sw-description first) of 1 MiB
        that goosebit accepts as software VERSION for the default board
    ddi_poll_setup.py ota-credentials URL ADMIN_TOKEN N OUTDIR
        issues a credential per vehicle and has each vehicle upload its DDI
        config data (as SWUpdate does when the poll asks for it)
    ddi_poll_setup.py ota-requests URL N OUTDIR
        polls every vehicle once (no answer may still ask for config data)
        and writes the wrk request files ota-poll.tsv and ota-deploy.tsv
        for the vehicles whose answer has a deploymentBase link
    ddi_poll_setup.py goosebit URL N OUTDIR SWU OTA_POLL_TSV
        the same for goosebit: initial user, software upload, a rollout on
        the default feed, all N devices each with its own token (strict
        device auth), config data, a check poll of a sample, and
        goosebit-poll.tsv and goosebit-deploy.tsv for the controllers in
        OTA_POLL_TSV

Controller ids are the VINs of bench/gen_fleet.py (WVWZZZE1Z + 8 digits),
the same for both servers. Standard library only."""
import http.client
import json
import os
import random
import secrets
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

THREADS = 8
TENANT = "DEFAULT"  # goosebit's default tenant; ours takes it in any case
CONFIG = {"mode": "merge", "data": {"hw_boardname": "default", "hw_revision": "default", "sw_version": "2.2.0"}}


def vins(n):
    return [f"WVWZZZE1Z{i:08d}" for i in range(n)]


class Http:
    """One keep-alive connection per thread."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        return c

    def __call__(self, method, path, body=None, headers=None, expect=(200,)):
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        for attempt in (1, 2):
            c = self.conn()
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.c = None
                if attempt == 2:
                    raise
        if r.status not in expect:
            raise SystemExit(f"{method} {path}: HTTP {r.status}: {data[:300]!r}")
        return json.loads(data) if data and r.getheader("Content-Type", "").startswith("application/json") else data


def run_all(f, items, what):
    with ThreadPoolExecutor(THREADS) as ex:
        out = list(ex.map(f, items))
    print(f"  {what}: {len(out)}", file=sys.stderr)
    return out


def write_tsv(path, rows):
    with open(path, "w") as f:
        for p, auth in rows:
            f.write(f"{p}\t{auth}\n")


def ddi_path(vin):
    return f"/{TENANT}/controller/v1/{vin}"


def check_poll(answer, vin, who, required=True):
    """The deploymentBase link of a poll answer, split; None when there is
    none and none is required."""
    links = answer.get("_links") or {}
    if "configData" in links or (required and "deploymentBase" not in links):
        raise SystemExit(f"{who}: poll of {vin} has no deployment or still asks for config data: {answer}")
    return urllib.parse.urlsplit(links["deploymentBase"]["href"]) if "deploymentBase" in links else None


def ota_credentials(url, admin, n, outdir):
    api = Http(url)
    bearer = {"Authorization": f"Bearer {admin}"}

    def issue(vin):
        return api("POST", f"/api/v1/vehicles/{vin}/credentials", headers=bearer, expect=(200, 201))["token"]

    tokens = run_all(issue, vins(n), "credentials issued")
    with open(os.path.join(outdir, "ota-tokens.tsv"), "w") as f:
        for v, t in zip(vins(n), tokens):
            f.write(f"{v}\t{t}\n")

    def config(vt):
        v, t = vt
        api("PUT", ddi_path(v) + "/configData", CONFIG, {"Authorization": f"TargetToken {t}"})

    run_all(config, list(zip(vins(n), tokens)), "configData uploaded")


def ota_requests(url, n, outdir):
    api = Http(url)
    with open(os.path.join(outdir, "ota-tokens.tsv")) as f:
        tokens = dict(line.rstrip("\n").split("\t") for line in f)

    def poll(v):
        auth = f"TargetToken {tokens[v]}"
        href = check_poll(api("GET", ddi_path(v), headers={"Authorization": auth}), v, "ota", False)
        return href and ((ddi_path(v), auth), (href.path + ("?" + href.query if href.query else ""), auth))

    rows = [r for r in run_all(poll, vins(n), "polls checked") if r]
    print(f"  controllers with a deployment: {len(rows)} (the rest are not targeted)", file=sys.stderr)
    if len(rows) < n // 2:
        raise SystemExit(f"ota: only {len(rows)} of {n} controllers have a deployment")
    write_tsv(os.path.join(outdir, "ota-poll.tsv"), [p for p, _ in rows])
    write_tsv(os.path.join(outdir, "ota-deploy.tsv"), [d for _, d in rows])


def multipart(field, filename, data):
    boundary = secrets.token_hex(16)
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def goosebit(url, n, outdir, swu, polled):
    api = Http(url)
    form = urllib.parse.urlencode({"username": "admin@example.com", "password": secrets.token_hex(12)})
    login = api("POST", "/setup", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    with open(swu, "rb") as f:
        body, h = multipart("file", os.path.basename(swu), f.read())
    sw = api("PUT", "/api/v1/software", body, {**bearer, **h})["id"]
    api("PUT", "/api/v1/rollouts", {"name": "bench", "feed": "default", "software_id": sw}, bearer)
    print(f"  software {sw} uploaded, rollout on feed default", file=sys.stderr)

    # goosebit keeps auth_token in a 32-character column.
    tokens = {v: secrets.token_hex(16) for v in vins(n)}

    def register(v):
        api("PUT", "/api/v1/devices", {"devices": [v], "auth_token": tokens[v]}, bearer)

    run_all(register, vins(n), "devices registered with their own token")

    def config(v):
        api("PUT", ddi_path(v) + "/configData", CONFIG, {"Authorization": f"TargetToken {tokens[v]}"})

    run_all(config, vins(n), "configData uploaded")

    # Every device has the same link (the software id is the action id);
    # a sample shows it, at goosebit's pace of about 100 requests/s.
    def deploy(v):
        return f"{ddi_path(v)}/deploymentBase/{sw}"

    def poll(v):
        answer = api("GET", ddi_path(v), headers={"Authorization": f"TargetToken {tokens[v]}"})
        if check_poll(answer, v, "goosebit").path != deploy(v):
            raise SystemExit(f"goosebit: unexpected deploymentBase link for {v}: {answer}")

    # The controllers ours polls (those its campaign targets), so both
    # servers answer for the same ids.
    with open(polled) as f:
        ids = [line.split("\t")[0].rsplit("/", 1)[1] for line in f]
    run_all(poll, random.Random(7).sample(ids, min(len(ids), 500)), "polls checked (deploymentBase link present)")
    write_tsv(os.path.join(outdir, "goosebit-poll.tsv"), [(ddi_path(v), f"TargetToken {tokens[v]}") for v in ids])
    write_tsv(os.path.join(outdir, "goosebit-deploy.tsv"), [(deploy(v), f"TargetToken {tokens[v]}") for v in ids])


def cpio_entry(name, data):
    name_b = name.encode() + b"\0"
    fields = [0, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
    hdr = b"070701" + b"".join(f"{x:08x}".encode() for x in fields)
    pad = lambda n: b"\0" * (-n % 4)
    return hdr + name_b + pad(len(hdr) + len(name_b)) + data + pad(len(data))


def swu(version, out):
    desc = f'software = {{ version = "{version}"; hardware-compatibility: [ "default" ]; images: ( {{ filename = "rootfs.img"; device = "/dev/mmcblk0p2"; }} ); }};\n'
    payload = bytes((i * 7919) % 251 for i in range(1 << 20))
    with open(out, "wb") as f:
        f.write(cpio_entry("sw-description", desc.encode()))
        f.write(cpio_entry("rootfs.img", payload))
        f.write(cpio_entry("TRAILER!!!", b""))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "swu":
        swu(*args)
    elif cmd == "ota-credentials":
        ota_credentials(args[0], args[1], int(args[2]), args[3])
    elif cmd == "ota-requests":
        ota_requests(args[0], int(args[1]), args[2])
    elif cmd == "goosebit":
        goosebit(args[0], int(args[1]), args[2], args[3], args[4])
    else:
        raise SystemExit(__doc__)
