#!/usr/bin/python3
"""Converts a torchvision EfficientNetV2 checkpoint (.pth, a pickled state
dict such as efficientnet_v2_s-dd5fe13b.pth) into a .safetensors file with
torchvision names that effnet and effnetd load directly.

    /usr/bin/python3 tools/pth2safetensors.py efficientnet_v2_s-dd5fe13b.pth v2s.safetensors

Needs Debian's python3-torch. Tensors are written as float32 (or kept as
float16/bfloat16 with --keep-dtype); num_batches_tracked is dropped.
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def load_state_dict(path):
    obj = torch.load(path, map_location="cpu")
    # Training checkpoints wrap the weights: {"model": ...} or {"state_dict": ...}.
    for key in ("model_ema", "model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        sys.exit(f"{path}: not a state dict")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 \
            else t.contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt", "source": "torchvision"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pth")
    ap.add_argument("output")
    ap.add_argument("--keep-dtype", action="store_true",
                    help="keep float16/bfloat16 tensors as they are")
    args = ap.parse_args()
    sd = load_state_dict(args.pth)
    out = {}
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            continue
        if not torch.is_floating_point(t):
            sys.exit(f"{args.pth}: tensor {name} has dtype {t.dtype}")
        if not args.keep_dtype or t.dtype not in DTYPES:
            t = t.to(torch.float32)
        out[name] = t
    if "features.0.0.weight" not in out:
        sys.exit(f"{args.pth}: no features.0.0.weight: not a torchvision EfficientNet")
    write_safetensors(args.output, out)
    print(f"wrote {len(out)} tensors to {args.output}")


if __name__ == "__main__":
    main()
