#!/usr/bin/python3
"""int8 part of the engine-peers report: effnet int8 against effnet fp32 and
ONNX Runtime fp32, each ratio the median over rounds of the ratio measured
within one round (the runs behind it are minutes apart at most).

Usage: int8_report.py RESULTS_DIR [CAP...]
"""
import json
import os
import statistics
import sys


def rounds(path):
    """{batch: [images/s of each round, in order]}."""
    out = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8", errors="replace"):
            if line.startswith("{"):
                o = json.loads(line)
                out.setdefault(int(o["batch"]), []).append(o["images_per_s"])
    return out


def main():
    res, caps = sys.argv[1], sys.argv[2:]
    ort = rounds(os.path.join(res, "ort.jsonl"))
    print("\n### int8 (median of paired ratios over rounds)\n")
    print("| class | batch | int8 img/s | fp32 img/s | ORT fp32 img/s | int8/fp32 | int8/ORT fp32 | rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for cap in [""] + caps:
        suffix = f"@{cap}" if cap else ""
        i8 = rounds(os.path.join(res, f"effnet-int8{suffix}.jsonl"))
        f32 = rounds(os.path.join(res, f"effnet-fp32{suffix}.jsonl"))
        for b in sorted(i8):
            n = min(len(i8[b]), len(f32.get(b, [])))
            if n == 0:
                continue
            r_fp32 = statistics.median(i8[b][k] / f32[b][k] for k in range(n))
            m = min(n, len(ort.get(b, [])))
            r_ort = f"{statistics.median(i8[b][k] / ort[b][k] for k in range(m)):.2f}" if m else "n/a"
            o = f"{statistics.median(ort[b]):.2f}" if b in ort else "n/a"
            print(f"| {cap or 'native'} | {b} | {statistics.median(i8[b]):.2f} | {statistics.median(f32[b]):.2f} | "
                  f"{o} | {r_fp32:.2f} | {r_ort} | {n} |")
    print("\nORT runs uncapped in every row; under a cap, int8/ORT compares a capped effnet with it.")


if __name__ == "__main__":
    main()
