#!/usr/bin/python3
"""PyTorch eager throughput of torchvision EfficientNetV2, weights loaded
from a safetensors file with torchvision names. Prints one JSON object per
line and batch size: batch, images_per_s, ms_per_batch (medians), ...
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model import VARIANTS, build_model, read_safetensors, smooth_images  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--safetensors", required=True)
    ap.add_argument("--variant", default="s", choices=VARIANTS)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = build_model(args.variant)
    sd = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(args.safetensors).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"torch_bench: weight names differ from torchvision: "
                 f"missing {missing[:5]} unexpected {unexpected[:5]}")
    model.eval()
    del sd
    load_ms = (time.perf_counter() - t0) * 1e3

    onednn = ""
    for line in torch.__config__.show().splitlines():
        if "MKL-DNN" in line or "oneDNN" in line:
            onednn = line.strip(" -")
    gen = torch.Generator().manual_seed(args.seed)
    for b in (int(s) for s in args.batch.split(",")):
        x = smooth_images(torch, b, args.size, gen)
        times = []
        with torch.inference_mode():
            for i in range(args.warmup + args.runs):
                t = time.perf_counter()
                y = model(x)
                dt = (time.perf_counter() - t) * 1e3
                if i >= args.warmup:
                    times.append(dt)
        assert tuple(y.shape)[0] == b
        med = statistics.median(times)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({
            "runtime": "pytorch", "version": torch.__version__, "onednn": onednn,
            "batch": b, "threads": args.threads, "runs": args.runs,
            "images_per_s": round(b * 1e3 / med, 3),
            "ms_per_batch": round(med, 3),
            "min_ms": round(min(times), 3), "max_ms": round(max(times), 3),
            "load_ms": round(load_ms, 1), "peak_rss_mb": round(rss_mb, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
