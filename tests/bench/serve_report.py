#!/usr/bin/python3
"""Markdown report of a tests/bench/serve-peers.sh run from its JSON lines.

    serve_report.py RESULTS.jsonl

Lines: one "meta", "bench" lines (effnet bench --json objects), "load" lines
(one per server and concurrency: wrk's counts and latency percentiles, and
for effnetd the batches, batched images, forward seconds and process CPU
seconds between /metrics before the level and after its requests finished,
window_s apart), one "end".
"""

import json
import sys

BAR_ENGINE = 0.90      # effnetd end to end >= 90% of effnet bench at its best batch
BAR_THROUGHPUT = 2.0   # >= 2x the Python server's images/s at concurrency 16
BAR_P99 = 0.5          # <= 0.5x its p99 at concurrency 16
BAR_P50_MS = 10.0      # p50 at concurrency 1 within 10 ms of the engine's batch-1 time
RATIO_CONCURRENCY = 16


def load(path):
    meta, end, bench, rows = {}, {}, [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            kind = d.get("kind")
            if kind == "meta":
                meta = d
            elif kind == "end":
                end = d
            elif kind == "bench":
                bench.append(d["data"])
            elif kind == "load":
                rows.append(d)
    return meta, end, bench, rows


def stats(r):
    w = r["wrk"]
    ok = w["requests"] - w["err_status"]
    secs = w["duration_us"] / 1e6
    errors = w["err_status"] + w["err_timeout"] + w["err_connect"] + w["err_read"] + w["err_write"]
    done = w["requests"] > 0
    return dict(ips=ok / secs if secs > 0 else 0.0, p50=w["lat_p50_us"] / 1e3 if done else None,
                p99=w["lat_p99_us"] / 1e3 if done else None,
                requests=w["requests"], errors=errors, secs=secs,
                batch=(r["batch_images"] / r["batches"]) if r.get("batches") else None,
                busy=(r["forward_s"] / r.get("window_s", secs)) if r.get("batches") else None,
                cpu_ms=(1e3 * r["cpu_s"] / r["batch_images"]) if r.get("cpu_s") and r.get("batch_images") else None,
                cores=(r["cpu_s"] / r["window_s"]) if r.get("cpu_s") and r.get("window_s") else None)


def ms(v):
    return "-" if v is None else f"{v:.1f}"


def verdict(ok):
    return "meets" if ok else "misses"


def report(path):
    meta, end, bench, rows = load(path)
    out = []
    p = out.append
    p(f"### effnetd vs FastAPI + PyTorch: V2-S @384, {meta.get('precision', '?')}, "
      f"{meta.get('threads', '?')} threads")
    p("")
    p(f"{meta.get('date', '')}; {meta.get('cpu', '?')}, {meta.get('cpus', '?')} CPUs; load average "
      f"{meta.get('load_start', '?')} at start, {end.get('load_end', '?')} at end; image "
      f"{meta.get('image', '?')} ({meta.get('image_bytes', '?')} bytes); wrk {meta.get('wrk', '?')} "
      f"(1 thread, on the same CPUs); torch {meta.get('torch', '?')}; effnetd --max-batch "
      f"{meta.get('max_batch', '?')} {meta.get('effnetd_args', '')}"
      + (f"; OMP_WAIT_POLICY={meta['omp_wait_policy']}" if meta.get("omp_wait_policy") else "")
      + (f"; GOMP_SPINCOUNT={meta['gomp_spincount']}" if meta.get("gomp_spincount") else "")
      + (f"; FastAPI server in {meta['python_precision']}" if meta.get("python_precision", "fp32") != "fp32" else ""))
    p("")
    best = None
    b1 = None
    if bench:
        p("Engine alone (`effnet bench`, same weights, precision and OpenMP wait policy):")
        p("")
        p("| batch | images/s | ms/batch |")
        p("|---:|---:|---:|")
        for b in sorted(bench, key=lambda b: b["batch"]):
            p(f"| {b['batch']} | {b['images_per_s']:.2f} | {b['ms_per_batch']:.1f} |")
            if best is None or b["images_per_s"] > best["images_per_s"]:
                best = b
            if b["batch"] == 1:
                b1 = b
        p("")
    p("| server | concurrency | s | requests | images/s | p50 ms | p99 ms | mean batch | engine busy | CPU ms/image | CPUs used | errors | load |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    by = {}
    for r in rows:
        s = stats(r)
        by[(r["server"], r["concurrency"])] = s
        p(f"| {r['server']} | {r['concurrency']} | {s['secs']:.0f} | {s['requests']} | {s['ips']:.2f} | "
          f"{ms(s['p50'])} | {ms(s['p99'])} | {'-' if s['batch'] is None else format(s['batch'], '.2f')} | "
          f"{'-' if s['busy'] is None else format(100 * s['busy'], '.0f') + '%'} | {ms(s['cpu_ms'])} | {'-' if s['cores'] is None else format(s['cores'], '.2f')} | {s['errors']} | {r.get('load', '')} |")
    p("")
    p("| bar | value | target | |")
    p("|---|---:|---:|---|")
    eff = [s for (n, _), s in by.items() if n == "effnetd"]
    if eff and best:
        top = max(s["ips"] for s in eff)
        ratio = top / best["images_per_s"]
        p(f"| effnetd best images/s / effnet bench at its best batch ({best['batch']}) | {ratio:.2f} "
          f"({top:.2f} / {best['images_per_s']:.2f}) | >= {BAR_ENGINE:.2f} | {verdict(ratio >= BAR_ENGINE)} |")
    e16, f16 = by.get(("effnetd", RATIO_CONCURRENCY)), by.get(("fastapi", RATIO_CONCURRENCY))
    if e16 and f16 and f16["ips"] > 0 and e16["p99"] and f16["p99"]:
        r = e16["ips"] / f16["ips"]
        p(f"| images/s effnetd / FastAPI at concurrency {RATIO_CONCURRENCY} | {r:.2f} | >= {BAR_THROUGHPUT:.1f} "
          f"| {verdict(r >= BAR_THROUGHPUT)} |")
        r = e16["p99"] / f16["p99"]
        p(f"| p99 effnetd / FastAPI at concurrency {RATIO_CONCURRENCY} | {r:.2f} | <= {BAR_P99:.1f} "
          f"| {verdict(r <= BAR_P99)} |")
    e1 = by.get(("effnetd", 1))
    if e1 and b1 and e1["p50"] is not None:
        d = e1["p50"] - b1["ms_per_batch"]
        p(f"| effnetd p50 at concurrency 1 - engine batch-1 ms | {d:+.1f} ms ({e1['p50']:.1f} - "
          f"{b1['ms_per_batch']:.1f}) | <= {BAR_P50_MS:.0f} ms | {verdict(d <= BAR_P50_MS)} |")
    p("")
    p("mean batch, engine busy (forward time / wall time), CPU ms/image and CPUs used (process CPU time / "
      "wall time) come from effnetd's /metrics before and after each level; CPUs used well under the "
      "threads given means other processes took the CPUs, and the ratios above say little.")
    p("")
    p(f"Raw results: `{path}`.")
    return "\n".join(out)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    print(report(sys.argv[1]))


if __name__ == "__main__":
    main()
