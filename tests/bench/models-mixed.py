#!/usr/bin/python3
"""Two models under mixed load against one model alone, in one run: the
throughput (images/s) of a model repository serving two B0s (different
weights, the same cost per image) with the clients split between them,
against one serving one B0 with the same workers x threads as the two
together (one-2w: 2 workers, each half the CPUs, as each of the two
models gets from the CPU budget), and one B0 with the daemon's defaults
(one: 1 worker x every CPU). The configurations alternate, round after
round; each round's ratios and their medians are printed. A ratio near
1.0 against one-2w means that sharing the CPUs between models costs
nothing. For each run it also prints the images per forward pass and the
share of the time the workers spent in passes (from /metrics): a share
well below 100% means the CPUs waited for work.

Usage: tests/bench/models-mixed.py [--effnetd PATH] [--effnet PATH] [--rounds 3]
                                   [--seconds 15] [--clients 32] [--batch 8]
Nothing here passes or fails: the numbers go in docs/benchmarks.md.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import daemon as dm  # noqa: E402


def load(d, paths, image, seconds, clients):
    """images/s over seconds of clients posting image, client i to paths[i % len(paths)]."""
    counts = [0] * clients
    errors = []
    stop = time.monotonic() + seconds

    def client(i):
        c = d.conn(120)
        while time.monotonic() < stop:
            c.request("POST", paths[i % len(paths)], body=image, headers={"Content-Type": "image/jpeg"})
            r = c.getresponse()
            r.read()
            if r.status == 200:
                counts[i] += 1
            else:
                errors.append(r.status)
        c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0), errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--effnetd", default=os.path.join(ROOT, "build", "src", "daemon", "effnetd"))
    ap.add_argument("--effnet", default=os.path.join(ROOT, "build", "src", "cli", "effnet"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    photos = dm.sample_photos()
    image = dm.read(photos["grace_hopper.jpg"]) if "grace_hopper.jpg" in photos else None
    if image is None:
        print("SKIP: no sample photo")
        sys.exit(77)
    with tempfile.TemporaryDirectory(prefix="effnetd-mixed-") as work:
        one, two = os.path.join(work, "one"), os.path.join(work, "two")
        for seed, name in ((1, "m1"), (2, "m2")):
            path = os.path.join(two, name, "1", "model.safetensors")
            os.makedirs(os.path.dirname(path))
            subprocess.run([a.effnet, "init-weights", "--variant", "b0", "--seed", str(seed), "-o", path],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.makedirs(os.path.join(one, "m1"))
        shutil.copytree(os.path.join(two, "m1", "1"), os.path.join(one, "m1", "1"))
        configs = (("one", one, ["/v1/models/m1/classify"], []),
                   ("one-2w", one, ["/v1/models/m1/classify"], ["--workers", 2]),
                   ("two", two, ["/v1/models/m1/classify", "/v1/models/m2/classify"], []))
        results = {conf: [] for conf, _, _, _ in configs}
        for r in range(a.rounds):
            for conf, repo, paths, extra in configs:
                d = dm.Daemon(a.effnetd, None, work, "--model-repository", repo, "--max-batch", a.batch,
                              "--access-log=false", *extra, name=f"{conf}-{r}")
                try:
                    load(d, paths, image, 2, a.clients)   # warm
                    m0, t0 = d.metrics(), time.monotonic()
                    ips, errors = load(d, paths, image, a.seconds, a.clients)
                    m1, t1 = d.metrics(), time.monotonic()
                    listed = dm.parse_json(d.request("GET", "/v1/models")[2])["models"]
                finally:
                    d.stop()
                results[conf].append(ips)
                passes, busy, threads = 0, 0.0, 0
                for key, v in m1.items():
                    if key.startswith("effnetd_model_batches_total{"):
                        passes += v - m0.get(key, 0)
                    elif key.startswith("effnetd_model_inference_seconds_total{"):
                        busy += v - m0.get(key, 0)
                    elif key.startswith("effnetd_model_threads{"):
                        threads += v
                # Where the CPUs went: the share of the time the workers
                # spent in forward passes, over every worker.
                workers = sum(m["batching"]["workers"] for m in listed)
                print(f"round {r + 1} {conf}: {ips:.1f} images/s, {ips * (t1 - t0) / max(passes, 1):.2f} images "
                      f"per pass, workers in passes {busy / (t1 - t0) / workers:.0%} of the time, "
                      f"{threads:.0f} threads" + (f", errors {errors[:5]}" if errors else ""), flush=True)
        med = {conf: statistics.median(v) for conf, v in results.items()}
        for base in ("one-2w", "one"):
            paired = [t / o for o, t in zip(results[base], results["two"])]
            print(f"two / {base}, per round: " + ", ".join(f"{x:.2f}" for x in paired) +
                  f"; median {statistics.median(paired):.3f}")
        print("medians: " + ", ".join(f"{conf} {v:.1f} images/s" for conf, v in med.items()) +
              f" ({a.rounds} rounds of {a.seconds:.0f} s, {a.clients} clients, max-batch {a.batch}, "
              f"{os.cpu_count()} CPUs seen)")

if __name__ == "__main__":
    main()
