#!/usr/bin/python3
"""What /v2 JSON bodies built to be costly do to the daemon: peak RSS growth,
time to the answer, /healthz latency meanwhile; for this build and, with
--peer, another effnetd binary (an older build) in the same run.

Usage: tests/bench/v2-json-attack.py [--effnetd PATH] [--peer PATH] [--rounds N]
           [--size-mib 48] [--max-body-total-mib 200]

Each round starts a fresh daemon (seeded B0 weights, v2-max-body-bytes just
over the body, the given max-body-total), posts two bodies of one shape at
once and probes /healthz every 50 ms until both are answered. Shapes: the
input's data as `[],` `{},` or `0,` repeated, and `[],` repeated in the
request's parameters. The report (markdown) prints the median over the
rounds of each number, and the ratio of the peer's peak RSS growth to ours.
The shapes cost jansson's tree about 46, 78 and 22 bytes per byte of text.
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import daemon as dm  # noqa: E402

MiB = 1 << 20
MODEL = "efficientnetv2-b0"
SHAPES = (("[],", "data"), ("{},", "data"), ("0,", "data"), ("[],", "parameters"))


def body_of(shape, where, size):
    filler = (shape * (size // len(shape)))[:-1].encode()
    if where == "data":
        return b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,224,224],"data":[' + filler + b"]}]}"
    head = json.dumps({"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}).encode()
    return b'{"inputs":[' + head + b'],"parameters":{"x":[' + filler + b"]}}"


def post(port, body, out):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        c.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        out.append((r.status, time.monotonic() - t0))
    except Exception as e:  # noqa: BLE001 - reported
        out.append((type(e).__name__, time.monotonic() - t0))


def one_round(exe, weights, workdir, body, total):
    d = dm.Daemon(exe, weights, workdir, "--v2-max-body-bytes", len(body) + MiB, "--max-body-total", total,
                  "--deadline-ms", 600000, "--access-log=false", name="attack")
    try:
        before = dm.status_kb(d.proc.pid, "VmHWM")
        out, probes = [], []
        threads = [threading.Thread(target=post, args=(d.port, body, out)) for _ in range(2)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            t0 = time.monotonic()
            try:
                status = dm.get_status(d.port, "/healthz", timeout=30)
            except Exception:  # noqa: BLE001 - counted as a failed probe
                status = 0
            probes.append((status, time.monotonic() - t0))
            time.sleep(0.05)
        for t in threads:
            t.join()
        grown = (dm.status_kb(d.proc.pid, "VmHWM") - before) / 1024
        return {"grown": grown, "answer_s": max(s for _, s in out), "statuses": sorted(str(st) for st, _ in out),
                "probe_max": max((s for _, s in probes), default=0), "probe_p50": statistics.median(
                    [s for _, s in probes]) if probes else 0, "probes_failed": sum(1 for st, _ in probes if st != 200)}
    finally:
        d.stop()


def main():
    ap = argparse.ArgumentParser()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    ap.add_argument("--effnetd", default=os.path.join(root, "build", "src", "daemon", "effnetd"))
    ap.add_argument("--effnet", default=os.path.join(root, "build", "src", "cli", "effnet"))
    ap.add_argument("--peer", help="another effnetd binary to measure in the same run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=48)
    ap.add_argument("--max-body-total-mib", type=int, default=200)
    a = ap.parse_args()
    builds = [("this build", a.effnetd)] + ([("peer", a.peer)] if a.peer else [])
    with tempfile.TemporaryDirectory(prefix="effnetd-v2-attack-") as workdir:
        weights = os.path.join(workdir, "b0.safetensors")
        subprocess.run([a.effnet, "init-weights", "--variant", "b0", "--seed", "1", "-o", weights], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"two concurrent {a.size_mib} MiB bodies per round, max-body-total {a.max_body_total_mib} MiB, "
              f"{a.rounds} rounds, medians; CPU: {cpu_model()}; load before: {os.getloadavg()[0]:.2f}\n")
        print("| shape | build | peak RSS growth (MiB) | answers | slowest answer (s) | /healthz p50 / max (ms) |"
              " failed probes | RSS growth vs this build |")
        print("|---|---|---|---|---|---|---|---|")
        for shape, where in SHAPES:
            body = body_of(shape, where, a.size_mib * MiB)
            res = {}
            for r in range(a.rounds):
                for name, exe in builds:   # taking turns, so both see the same machine
                    res.setdefault(name, []).append(one_round(exe, weights, workdir, body,
                                                              a.max_body_total_mib * MiB))
            ours = statistics.median(x["grown"] for x in res["this build"])
            for name, _ in builds:
                rs = res[name]
                grown = statistics.median(x["grown"] for x in rs)
                ratio = f"{grown / ours:.1f}x" if ours > 0 else "-"
                print(f"| `{shape}` in {where} | {name} | {grown:.0f} | {' '.join(rs[-1]['statuses'])} | "
                      f"{statistics.median(x['answer_s'] for x in rs):.2f} | "
                      f"{1000 * statistics.median(x['probe_p50'] for x in rs):.0f} / "
                      f"{1000 * statistics.median(x['probe_max'] for x in rs):.0f} | "
                      f"{sum(x['probes_failed'] for x in rs)} | {ratio} |", flush=True)
        print(f"\nload after: {os.getloadavg()[0]:.2f}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    main()
