#!/usr/bin/python3
"""gRPC against REST /v2 and against the engine, on loopback, same machine,
same weights, same tensors:

  1. throughput: FP32 requests of one preprocessed image each (gRPC
     ModelInfer with raw_input_contents; REST /v2 infer with binary tensor
     data), CONCURRENCY in flight, against `effnet bench`'s best batched
     rate;
  2. overhead per request: one request at a time (concurrency 1) of a
     single image, the median latency of each protocol (the batcher's
     max-delay is 0 for this part) and their difference in the same round
     (the engine's time is in both, and cancels out); and the transport
     alone: the median round trip of a health call (ServerLive against
     GET /v2/health/live), one at a time on a kept connection.

The kinds take turns within each round so that the numbers of one ratio are
measured close in time; the report gives each round and the medians over
the rounds. Both clients are Python (Debian's grpcio, http.client) on the
same 2 CPUs as the server, so they cost alike. A benchmark run by hand,
not a test: it never fails on a slow result.

  /usr/bin/python3 tests/bench/grpc-bench.py [--variant b0] [--seconds 20] [--rounds 3] [--concurrency 8]
"""

import argparse
import http.client
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import numpy as np  # noqa: E402
import grpcclient as gc  # noqa: E402

SIZES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "s": 384}


def start_daemon(args, weights, workdir, extra):
    log = open(os.path.join(workdir, "effnetd.log"), "wb")
    cmd = [args.effnetd, "--weights", weights, "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
           "--threads", str(args.threads), "--max-images", "8", "--access-log=false"] + extra
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = open(log.name, "rb").read().decode(errors="replace")
        h = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
        g = re.search(r"GRPCInferenceService\) listening on http://127\.0\.0\.1:(\d+)", text)
        if h and g:
            return p, int(h.group(1)), int(g.group(1))
        if p.poll() is not None:
            sys.exit(f"effnetd exited:\n{text}")
        time.sleep(0.1)
    sys.exit("effnetd did not start")


def stop(p):
    p.terminate()
    p.wait(120)


def engine_bench(args, weights):
    out = subprocess.run([args.effnet, "bench", "--weights", weights, "--batch", "1,2,4,8", "--threads",
                          str(args.threads), "--json"], check=True, capture_output=True, text=True, timeout=1200).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    best = max(rows, key=lambda r: r["images_per_s"])
    b1 = next(r for r in rows if r["batch"] == 1)
    return best["images_per_s"], best["batch"], b1["ms_per_batch"]


def rest_body(x):
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return head + raw, len(head)


def rest_load(port, model, x, seconds, concurrency):
    """(images/s, latencies ms) of REST /v2 FP32 binary at concurrency."""
    body, hl = rest_body(x)
    path = f"/v2/models/{model}/infer"
    lat, lock, errors = [], threading.Lock(), [0]
    end = time.monotonic() + seconds

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while time.monotonic() < end:
            t0 = time.monotonic()
            c.request("POST", path, body, {"inference-header-content-length": str(hl)})
            r = c.getresponse()
            r.read()
            with lock:
                if r.status == 200:
                    lat.append((time.monotonic() - t0) * 1e3)
                else:
                    errors[0] += 1
        c.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(lat) / (time.monotonic() - t0), lat, errors[0]


def grpc_load(pb, stub, model, x, seconds, concurrency):
    """(images/s, latencies ms) of gRPC ModelInfer FP32 raw at concurrency."""
    req = gc.infer_request(pb, model, "FP32", x)
    lat, lock, errors = [], threading.Lock(), [0]
    end = time.monotonic() + seconds
    done = threading.Semaphore(0)

    def launch():
        t0 = time.monotonic()
        f = stub.ModelInfer.future(req, timeout=300)

        def cb(fut):
            ok = fut.exception() is None
            with lock:
                if ok:
                    lat.append((time.monotonic() - t0) * 1e3)
                else:
                    errors[0] += 1
            if time.monotonic() < end:
                launch()
            else:
                done.release()
        f.add_done_callback(cb)

    t0 = time.monotonic()
    for _ in range(concurrency):
        launch()
    for _ in range(concurrency):
        done.acquire()
    return len(lat) / (time.monotonic() - t0), lat, errors[0]


def health_p50(pb, stub, port, n=500):
    """Median ms of a health round trip: (gRPC ServerLive, REST GET /v2/health/live)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    g, r = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        stub.ServerLive(pb.ServerLiveRequest(), timeout=60)
        g.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        c.request("GET", "/v2/health/live")
        c.getresponse().read()
        r.append((time.perf_counter() - t0) * 1e3)
    c.close()
    return statistics.median(g), statistics.median(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="b0", choices=sorted(SIZES))
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--effnetd", default=os.path.join(ROOT, "build", "src", "daemon", "effnetd"))
    ap.add_argument("--effnet", default=os.path.join(ROOT, "build", "src", "cli", "effnet"))
    args = ap.parse_args()
    size = SIZES[args.variant]
    model = "efficientnetv2-" + args.variant
    with tempfile.TemporaryDirectory(prefix="effnetd-grpc-bench-") as workdir:
        weights = os.path.join(workdir, "w.safetensors")
        subprocess.run([args.effnet, "init-weights", "--variant", args.variant, "--scheme", "torchvision", "--seed",
                        "1", "-o", weights], check=True, capture_output=True, timeout=1200)
        x = np.random.RandomState(1).standard_normal((1, 3, size, size)).astype(np.float32)
        cpu = open("/proc/cpuinfo").read()
        cpu = re.search(r"model name\s*:\s*(.*)", cpu).group(1)
        print(f"### gRPC against REST /v2: {model} @{size} fp32, {args.threads} threads\n")
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu}; load average "
              f"{os.getloadavg()[0]:.1f} at start; {args.seconds:g} s per kind, {args.rounds} rounds, "
              f"concurrency {args.concurrency}\n")
        rows, ratios = [], {"grpc/rest": [], "grpc/engine": [], "rest/engine": [], "ovh_grpc": [], "ovh_rest": []}
        for rnd in range(1, args.rounds + 1):
            eng, eng_batch, b1_ms = engine_bench(args, weights)
            # Throughput: the batcher's defaults.
            p, hport, gport = start_daemon(args, weights, workdir, [])
            pb, stub = gc.load(workdir, gport)
            stub.ModelInfer(gc.infer_request(pb, model, "FP32", x), timeout=300)   # warm both paths
            rest_load(hport, model, x, 1, 1)
            g_ips, g_lat, g_err = grpc_load(pb, stub, model, x, args.seconds, args.concurrency)
            r_ips, r_lat, r_err = rest_load(hport, model, x, args.seconds, args.concurrency)
            stop(p)
            # Overhead: one request at a time, no batching delay.
            p, hport, gport = start_daemon(args, weights, workdir, ["--max-delay-ms", "0"])
            pb, stub = gc.load(workdir, gport)
            stub.ModelInfer(gc.infer_request(pb, model, "FP32", x), timeout=300)
            rest_load(hport, model, x, 1, 1)
            _, g1, _ = grpc_load(pb, stub, model, x, args.seconds / 2, 1)
            _, r1, _ = rest_load(hport, model, x, args.seconds / 2, 1)
            hg, hr = health_p50(pb, stub, hport)
            stop(p)
            g50, r50 = statistics.median(g_lat), statistics.median(r_lat)
            g1m, r1m = statistics.median(g1), statistics.median(r1)
            rows.append((rnd, eng, eng_batch, b1_ms, g_ips, g50, g_err, r_ips, r50, r_err, g1m, r1m, hg, hr))
            ratios.setdefault("health_grpc", []).append(hg)
            ratios.setdefault("health_rest", []).append(hr)
            ratios["grpc/rest"].append(g_ips / r_ips)
            ratios["grpc/engine"].append(g_ips / eng)
            ratios["rest/engine"].append(r_ips / eng)
            ratios["ovh_grpc"].append(g1m)
            ratios["ovh_rest"].append(r1m)
            ratios.setdefault("ovh_diff", []).append(g1m - r1m)
        print("| round | effnet bench best (batch) | batch-1 ms | gRPC images/s | p50 ms | errors | REST /v2 images/s | "
              "p50 ms | errors | gRPC / REST | gRPC / engine | 1-at-a-time p50 ms gRPC | REST | health p50 ms gRPC | REST |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (rnd, eng, eb, b1, gi, g50, ge, ri, r50, re_, g1m, r1m, hg, hr) in rows:
            print(f"| {rnd} | {eng:.2f} ({eb}) | {b1:.1f} | {gi:.2f} | {g50:.1f} | {ge} | {ri:.2f} | {r50:.1f} | {re_} | "
                  f"{gi / ri:.3f} | {gi / eng:.3f} | {g1m:.1f} | {r1m:.1f} | {hg:.3f} | {hr:.3f} |")
        med = {k: statistics.median(v) for k, v in ratios.items()}
        print(f"\nMedians over the rounds: gRPC / REST images/s {med['grpc/rest']:.3f}; gRPC / engine "
              f"{med['grpc/engine']:.3f}; REST / engine {med['rest/engine']:.3f}; one request at a time, p50 "
              f"gRPC {med['ovh_grpc']:.1f} ms, REST {med['ovh_rest']:.1f} ms, gRPC - REST in the same round "
              f"{med['ovh_diff']:+.1f} ms; health round trip gRPC {med['health_grpc']:.3f} ms, REST "
              f"{med['health_rest']:.3f} ms. Load average {os.getloadavg()[0]:.1f} at end.")


if __name__ == "__main__":
    main()
