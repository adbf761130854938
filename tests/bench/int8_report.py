#!/usr/bin/python3
"""int8 part of the engine-peers report: effnet int8 against effnet fp32,
ONNX Runtime fp32 and ONNX Runtime int8, each ratio the median over rounds
of the ratio measured within one round (the runs behind it are minutes apart
at most); then how far each int8 moves its own fp32 logits on the photos,
and which kernels ONNX Runtime ran for its int8 model.

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


def ratio(a, b, b_key):
    """Median over rounds of a[k] / b[k] for batch b_key, or n/a."""
    m = min(len(a), len(b.get(b_key, [])))
    return f"{statistics.median(a[k] / b[b_key][k] for k in range(m)):.2f}" if m else "n/a"


def compare(ref, q):
    """As effnet calibrate's self-check: top-1 agreement, top-5 overlap, max
    and rms logit difference in standard deviations of the reference."""
    import numpy as np
    ref = ref.astype(np.float64)
    d = np.abs(q.astype(np.float64) - ref)
    std = ref.std() or 1.0
    top5 = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(ref, q)]
    return (float(np.mean(ref.argmax(1) == q.argmax(1))), float(np.mean(top5)), d.max() / std,
            float(np.sqrt((d ** 2).mean())) / std)


def accuracy(res):
    path = os.path.join(res, "ort-int8-check.json")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    import numpy as np
    check = json.loads(open(path, encoding="utf-8").read().splitlines()[-1])
    cal = json.load(open(os.path.join(res, "int8.calibration.json"), encoding="utf-8"))
    n_int8 = sum(1 for x in cal["layers"] if x["int8"])
    k = check["kernels"]
    fused = k.get("QLinearConv", 0)
    print(f"\nONNX Runtime ran its int8 model with {fused} QLinearConv for the calibration's {n_int8} int8 convs"
          f" ({'all fused' if fused == n_int8 else 'NOT all fused: the ORT int8 column is not an int8 run'}), "
          f"{k.get('Conv', 0)} fp32 Conv (stem, depthwise, squeeze-excite); all kernels: "
          + ", ".join(f"{op} {c}" for op, c in sorted(k.items(), key=lambda t: -t[1])) + ".")
    logits = {name: np.load(os.path.join(res, f"{name}-logits.npy"))
              for name in ("effnet-fp32", "effnet-int8", "ort-fp32", "ort-int8")}
    n = len(logits["ort-fp32"])
    held = n - cal["images"]
    print(f"\n### int8 against fp32 on the {n} photos (the last {held} held out of the calibration)\n")
    print("| engine | against | images | top-1 agreement | top-5 overlap | max logit diff | rms logit diff |")
    print("|---|---|---|---|---|---|---|")
    for a, b in (("effnet int8", "effnet fp32"), ("ORT int8", "ORT fp32"), ("ORT fp32", "effnet fp32")):
        ka, kb = a.lower().replace(" ", "-"), b.lower().replace(" ", "-")
        for label, sl in ((f"all {n}", slice(None)), (f"held-out {held}", slice(n - held, None))):
            t1, t5, mx, rms = compare(logits[kb][sl], logits[ka][sl])
            print(f"| {a} | {b} | {label} | {t1:.3f} | {t5:.3f} | {mx:.3f} | {rms:.4f} |")
    print("\nDifferences in standard deviations of the reference's logits; effnet's held-out row is its "
          "calibration self-check.")


def main():
    res, caps = sys.argv[1], sys.argv[2:]
    ort = rounds(os.path.join(res, "ort.jsonl"))
    ort8 = rounds(os.path.join(res, "ort-int8.jsonl"))
    print("\n### int8 (median of paired ratios over rounds)\n")
    print("| class | batch | int8 img/s | fp32 img/s | ORT fp32 img/s | ORT int8 img/s | int8/fp32 | "
          "int8/ORT fp32 | int8/ORT int8 | rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cap in [""] + caps:
        suffix = f"@{cap}" if cap else ""
        i8 = rounds(os.path.join(res, f"effnet-int8{suffix}.jsonl"))
        f32 = rounds(os.path.join(res, f"effnet-fp32{suffix}.jsonl"))
        for b in sorted(i8):
            n = min(len(i8[b]), len(f32.get(b, [])))
            if n == 0:
                continue
            r_fp32 = statistics.median(i8[b][k] / f32[b][k] for k in range(n))
            o = f"{statistics.median(ort[b]):.2f}" if b in ort else "n/a"
            o8 = f"{statistics.median(ort8[b]):.2f}" if b in ort8 else "n/a"
            print(f"| {cap or 'native'} | {b} | {statistics.median(i8[b]):.2f} | {statistics.median(f32[b]):.2f} | "
                  f"{o} | {o8} | {r_fp32:.2f} | {ratio(i8[b], ort, b)} | {ratio(i8[b], ort8, b)} | {n} |")
    print("\nORT runs uncapped in every row; under a cap, int8/ORT compares a capped effnet with it.")
    accuracy(res)


if __name__ == "__main__":
    main()
