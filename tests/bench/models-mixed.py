#!/usr/bin/python3
"""Two models under mixed load against one model alone, in one run: the
throughput (images/s) of a model repository serving one B0, and of one
serving two B0s (different weights, the same cost per image) with the
clients split between them. The two configurations alternate, round after
round, and the medians and their ratio are printed; a ratio near 1.0 means
that sharing the CPUs between models (the one CPU gate of every model's
forward passes) costs nothing.

Usage: tests/bench/models-mixed.py [--effnetd PATH] [--effnet PATH] [--rounds 3]
                                   [--seconds 15] [--clients 8] [--batch 8]
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
    ap.add_argument("--clients", type=int, default=8)
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
        results = {"one": [], "two": []}
        for r in range(a.rounds):
            for conf, repo, paths in (("one", one, ["/v1/models/m1/classify"]),
                                      ("two", two, ["/v1/models/m1/classify", "/v1/models/m2/classify"])):
                d = dm.Daemon(a.effnetd, None, work, "--model-repository", repo, "--max-batch", a.batch,
                              "--access-log=false", name=f"{conf}-{r}")
                try:
                    load(d, paths, image, 2, a.clients)   # warm
                    ips, errors = load(d, paths, image, a.seconds, a.clients)
                finally:
                    d.stop()
                results[conf].append(ips)
                print(f"round {r + 1} {conf} model(s): {ips:.1f} images/s" + (f", errors {errors[:5]}" if errors else ""),
                      flush=True)
        m1, m2 = statistics.median(results["one"]), statistics.median(results["two"])
        paired = [b / a for a, b in zip(results["one"], results["two"])]
        print("per-round ratios (two / one, each round's pair run back to back): " +
              ", ".join(f"{x:.2f}" for x in paired) + f"; their median {statistics.median(paired):.3f}")
        print(f"median: one model {m1:.1f} images/s, two models mixed {m2:.1f} images/s, ratio {m2 / m1:.3f} "
              f"({a.rounds} rounds of {a.seconds:.0f} s, {a.clients} clients, max-batch {a.batch}, "
              f"{os.cpu_count()} CPUs seen)")


if __name__ == "__main__":
    main()
