#!/usr/bin/python3
"""Attacks on effnetd's memory, each against a fresh daemon: the peak growth
of its resident memory (VmHWM, reset to the current size just before the
attack) next to the budget it should stay under, and /healthz latency
(median) idle and during the attack. Run by memory-attacks.sh; prints a
markdown table.

  memory_attacks.py EFFNETD WEIGHTS [--budget 512M] [--shapes a,b,...]
                    [--compare OTHER_EFFNETD]

The budget is given as EFFNETD_MAX_BODY_TOTAL, which every version reads
(the former name of memory-budget), so --compare runs the same attacks
against another build in the same run.
"""
import argparse
import http.client
import os
import platform
import re
import socket
import struct
import statistics
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "integration"))
import daemon as dm  # noqa: E402
import grpcclient as gc  # noqa: E402
import test_memory as tm  # noqa: E402
from test_decode import png  # noqa: E402

MB = 1 << 20


def size_arg(v):
    units = {"k": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(v[:-1]) * units[v[-1]] if v[-1] in units else int(v)


def healthz_median(port, n=15):
    ms = []
    for _ in range(n):
        t0 = time.monotonic()
        dm.get_status(port, "/healthz", "127.0.0.250")
        ms.append((time.monotonic() - t0) * 1000)
    return statistics.median(ms)


def shape_unread(d, ctx):
    socks = tm.attack_tensors(d, ctx["photo"])
    m = d.metrics()
    for s in socks:
        s.close()
    refused = m.get('effnetd_memory_refused_total{limit="budget"}', float("nan"))
    overloaded = m.get('effnetd_http_errors_total{code="overloaded"}', 0)
    return f"{overloaded:.0f} of 24 answered 503 ({refused:.0f} by the budget)"


def shape_slow_pngs(d, ctx):
    results = tm.attack_slow_images(d, ctx["tiny"], ctx["flat"], clients=ctx["png_clients"])
    return "statuses " + ", ".join(f"{s}x{results.count(s)}" for s in sorted(set(results), key=str))


def model_name(d):
    _, _, body = d.request("GET", "/v1/models")
    j = dm.parse_json(body)
    return (j.get("models") or [j])[0]["variant"]


def shape_uploads(d, ctx):
    """One address holds slow /v2 uploads (90% sent of 5 of v2-max-body-bytes
    and one of 5/16 of it: 96 MiB and 30 MiB by default, enough to fill a
    budget of 512 MiB without shares); then another address asks for a
    classification."""
    held = []
    path = f"/v2/models/{model_name(d)}/infer"
    big = ctx["v2max"]
    for size in [big] * 5 + [big * 5 // 16]:
        s = socket.create_connection(("127.0.0.1", d.port), timeout=120)
        try:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {size}\r\n\r\n".encode() + b" " * (size * 9 // 10))
        except OSError:
            pass
        held.append(s)
    time.sleep(1.0)
    charged = d.metrics().get("effnetd_memory_charged_bytes", float("nan"))
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60, source_address=("127.0.0.2", 0))
    c.request("POST", "/v1/classify", body=ctx["photo"], headers={"Content-Type": "image/jpeg"})
    r = c.getresponse()
    r.read()
    c.close()
    for s in held:
        s.close()
    return f"6 uploads held by 127.0.0.1 ({charged / MB:.0f} MiB charged); 127.0.0.2's classify: {r.status}"


def shape_v2_json(d, ctx):
    """Two addresses each send a /v2 JSON body of [[],[],...] at once."""
    n = ctx["json_mb"] * MB // 3
    path = f"/v2/models/{model_name(d)}/infer"
    body = (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,2,2],"data":[' + b"[]," * (n - 1) +
            b"[]]}]}")
    out = []

    def one(i):
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=600, source_address=(tm.source(i), 0))
        try:
            c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            out.append(r.status)
        except (OSError, http.client.HTTPException) as e:
            out.append(type(e).__name__)
        finally:
            c.close()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return f"2 x {len(body) / MB:.0f} MiB: statuses {sorted(out, key=str)}"


def shape_grpc_uploads(d, ctx):
    """gRPC: 192 connections x 4 streams from one address, each announcing
    a ModelInfer message of v2-max-body-bytes and sending 1 MiB of it (the
    stream window), then stalling: 768 MiB asked for."""
    port = int(re.search(r"GRPCInferenceService\) listening on http://127\.0\.0\.1:(\d+)", d.log_text()).group(1))
    first = b"\x00" + struct.pack(">I", ctx["v2max"]) + b"\x5a" * (16384 - 5)
    body = b"\x5a" * 16384
    conns, cut = [], 0
    for _ in range(192):
        try:
            h = gc.RawH2(port)
            conns.append(h)
            h.start()
            # Its SETTINGS acknowledged: the 1 MiB stream window applies.
            h.frames_until(lambda f: f and f[0] == gc.SETTINGS and not f[1] & gc.ACK, limit=10)
            for sid in (1, 3, 5, 7):
                h.headers(sid, gc.grpc_headers("/inference.GRPCInferenceService/ModelInfer"))
                h.send(gc.frame(gc.DATA, 0, sid, first) + gc.frame(gc.DATA, 0, sid, body) * 63)
        except OSError:
            cut += 1       # the server closed a connection the budget could not hold
    time.sleep(1.0)
    m = d.metrics()
    charged = m.get("effnetd_memory_charged_bytes", float("nan"))
    refused = m.get('effnetd_memory_refused_total{limit="client_share"}', 0) + \
        m.get('effnetd_memory_refused_total{limit="budget"}', 0)
    for h in conns:
        h.close()
    return f"{charged / MB:.0f} MiB charged while held, {refused:.0f} charges refused, {cut} connections cut"


SHAPES = {
    "unread-answers": ("24 clients x 16 JPEGs, top_k=1000, never read", shape_unread),
    "slow-pngs": ("multipart: a tiny JPEG then 31 flat PNGs, many clients", shape_slow_pngs),
    "uploads-one-address": ("slow /v2 uploads (v2-max-body-bytes) from one address", shape_uploads),
    "v2-json-empty-arrays": ("/v2 JSON [[],[],...] from two addresses", shape_v2_json),
    "grpc-stalled-uploads": ("gRPC: 192 connections x 4 streams, 1 MiB of a v2-max-body-bytes message each, stalled",
                             shape_grpc_uploads, ("--grpc-listen", "127.0.0.1:0", "--max-connections", 256,
                                                  "--grpc-max-streams", 4)),
}


def run(effnetd, weights, workdir, name, shape, budget, ctx):
    env = dict(tm.env_for_rss(), EFFNETD_MAX_BODY_TOTAL=str(budget), EFFNETD_V2_MAX_BODY_BYTES=str(ctx["v2max"]))
    d = dm.Daemon(effnetd, weights, workdir, "--access-log=false", "--max-request-pixels", 10 ** 10,
                  "--deadline-ms", 600000, *(SHAPES[shape][2:3] or [()])[0], name=name, env=env)
    try:
        d.classify(ctx["photo"])
        idle = healthz_median(d.port)
        peak = tm.Peak(d.proc.pid)
        probe = tm.Prober(d.port)
        t0 = time.monotonic()
        outcome = SHAPES[shape][1](d, ctx)
        took = time.monotonic() - t0
        got, during = probe.finish()
        grown = peak.growth_mb()
        failed = sum(1 for g in got if g != 200)
        return grown, idle, during, failed, len(got), took, outcome
    finally:
        d.stop(timeout=600)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("effnetd")
    ap.add_argument("weights")
    ap.add_argument("--budget", default="512M")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--compare", help="another effnetd build to run the same attacks against")
    ap.add_argument("--png-clients", type=int, default=72)
    ap.add_argument("--json-mb", type=int, default=16)
    a = ap.parse_args()
    budget = size_arg(a.budget)
    ctx = {"photo": dm.read(dm.sample_photos()["grace_hopper.jpg"]), "tiny": tm.tiny_jpeg(),
           "flat": png(1000, 1000), "png_clients": a.png_clients, "json_mb": a.json_mb,
           "v2max": min(96 * MB, budget * 3 // 16)}
    builds = [("this build", a.effnetd)] + ([("compared", a.compare)] if a.compare else [])
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"# Memory attacks\n\nCPU: {cpu} ({os.cpu_count()} CPUs), {platform.release()}; weights "
          f"{os.path.basename(a.weights)}; budget (memory-budget) {budget / MB:.0f} MiB, client share its default "
          f"(half)\n")
    print("| shape | build | peak RSS growth | budget | growth / budget | /healthz median idle | during | "
          "failed probes | took | outcome |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="effnetd-memattack-") as workdir:
        for shape in a.shapes.split(","):
            for label, exe in builds:
                grown, idle, during, failed, probes, took, outcome = run(exe, a.weights, workdir, shape, shape,
                                                                         budget, ctx)
                print(f"| {SHAPES[shape][0]} | {label} | {grown:.0f} MiB | {budget / MB:.0f} MiB | "
                      f"{grown * MB / budget:.2f} | {idle:.1f} ms | {during:.1f} ms | {failed}/{probes} | "
                      f"{took:.0f} s | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
